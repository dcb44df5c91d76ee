//! Heap allocations per request per contender, counted by a `#[global_allocator]`
//! wrapper around the system allocator: tower-level contenders (service reused
//! and cloned per request), the rejection path, and axum `Router` contenders
//! with and without the `ShutdownSignal` extractor. Prints Markdown tables.
//!
//! `CARGO_TARGET_DIR=/work/target-c cargo bench -p tower-graceful-benches --bench allocs`
//!
//! `BENCH_ALLOC_TRACE=<substring>` also prints, for one request of every
//! contender whose name contains it, where each allocation comes from
//! (function names of a backtrace, allocator frames skipped).
#![allow(unsafe_code)] // the counting allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tower_graceful_benches::{
    axum_contenders, rejection_contenders, service_contenders, Contender, Fixtures, Mode,
};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static TRACE: Cell<bool> = const { Cell::new(false) };
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

/// Prints where this allocation comes from, if tracing is on for this thread.
fn trace(size: usize) {
    if !TRACE.with(Cell::get) || IN_TRACE.with(Cell::get) {
        return;
    }
    IN_TRACE.with(|t| t.set(true));
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let frames: Vec<&str> = bt
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("at "))
        .map(|l| l.split_once(": ").map_or(l, |(_, f)| f))
        .filter(|f| {
            ![
                "std::",
                "<std::",
                "allocs::",
                "__rustc::",
                "alloc::",
                "<alloc::",
                "core::",
                "<core::",
                "hashbrown::raw::",
            ]
            .iter()
            .any(|p| f.starts_with(p))
                && !f.contains("GlobalAlloc")
        })
        .take(4)
        .collect();
    eprintln!("    alloc {size:>5} B  <- {}", frames.join("  <- "));
    IN_TRACE.with(|t| t.set(false));
}

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        trace(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(layout.size() as u64, Relaxed);
        trace(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        BYTES.fetch_add(new_size as u64, Relaxed);
        trace(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const N: u64 = 10_000;

fn table(title: &str, mut cs: Vec<Contender>) {
    println!();
    println!("### {title}");
    println!();
    println!("| contender | allocs/req | bytes/req | allocs added vs bare |");
    println!("|---|---:|---:|---:|");
    let mut base = None;
    for c in cs.iter_mut() {
        c.run(1_000); // warm: slabs, thread-locals, lazy statics
        let a0 = ALLOCS.load(Relaxed);
        let b0 = BYTES.load(Relaxed);
        c.run(N);
        let a = (ALLOCS.load(Relaxed) - a0) as f64 / N as f64;
        let b = (BYTES.load(Relaxed) - b0) as f64 / N as f64;
        let base = *base.get_or_insert(a);
        println!("| {} | {a:.2} | {b:.0} | {:+.2} |", c.name, a - base);
        if let Ok(pat) = std::env::var("BENCH_ALLOC_TRACE") {
            if c.name.contains(&pat) {
                eprintln!("allocations of one request, {title}: {}", c.name);
                TRACE.with(|t| t.set(true));
                c.run(1);
                TRACE.with(|t| t.set(false));
            }
        }
    }
    println!();
}

fn main() {
    let fx = Fixtures::new();
    println!("(counted over {N} requests per contender after 1000 warm-up requests; reallocations count as allocations)");
    for mode in [Mode::Reused, Mode::ClonePerRequest] {
        table(
            &format!(
                "allocations per request, tower level, service {}",
                mode.label()
            ),
            service_contenders(&fx, mode),
        );
    }
    for (proto, grpc) in [("GET", false), ("gRPC", true)] {
        table(
            &format!("allocations per request, rejection path vs normal, {proto}, service reused"),
            rejection_contenders(&fx, Mode::Reused, grpc),
        );
    }
    table(
        "allocations per request, axum Router (cloned per request)",
        axum_contenders(&fx, Mode::ClonePerRequest),
    );
}
