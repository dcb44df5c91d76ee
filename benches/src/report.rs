//! Sample recording, interleaved re-measurement and the summary tables the
//! benches print (Markdown, ready for `BENCHMARKS.md`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::Contender;

static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Records one criterion sample (`iter_custom` call) as ns per iteration.
pub fn record(id: &str, iters: u64, elapsed: Duration) {
    let ns = elapsed.as_nanos() as f64 / iters.max(1) as f64;
    SAMPLES
        .lock()
        .unwrap()
        .entry(id.to_owned())
        .or_default()
        .push(ns);
}

/// Median ns/iter of the last `last` samples recorded for `id` (criterion
/// calls the routine during warm-up too; the measurement samples come last).
pub fn recorded_median(id: &str, last: usize) -> Option<f64> {
    let s = SAMPLES.lock().unwrap();
    let v = s.get(id)?;
    let tail = &v[v.len().saturating_sub(last)..];
    (!tail.is_empty()).then(|| median(tail))
}

/// Median of `v` (not empty).
pub fn median(v: &[f64]) -> f64 {
    percentile(v, 50.0)
}

/// Nearest-rank percentile `p` (0–100) of `v` (not empty).
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// An environment knob with a default.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether criterion was started by `cargo bench` (`--bench` on the command
/// line) rather than `cargo test --benches` (which only smoke-tests) or with
/// `--profile-time` (for a profiler: no summaries then).
pub fn is_bench_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a.starts_with("--profile-time"))
}

/// Measures every contender `rounds` times, rotating the order each round
/// (A B C, B C A, …), `iters` requests per measurement on this thread.
/// Returns the median ns per request of each contender. Interleaving spreads
/// the machine's background noise evenly over the contenders.
pub fn interleaved(cs: &mut [Contender], rounds: usize, iters: u64) -> Vec<f64> {
    let n = cs.len();
    let mut per = vec![Vec::with_capacity(rounds); n];
    for c in cs.iter_mut() {
        c.run(iters / 10 + 1); // warm
    }
    for r in 0..rounds {
        for k in 0..n {
            let i = (k + r) % n;
            let d = cs[i].run(iters);
            per[i].push(d.as_nanos() as f64 / iters as f64);
        }
    }
    per.iter().map(|v| median(v)).collect()
}

/// Runs rejected by [`Contender::run_threads_overlapping`] so far (threads
/// that did not overlap enough).
pub static REJECTED_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Runs accepted (or given up on) by [`Contender::run_threads_overlapping`].
pub static TAKEN_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The thread runner with overlap filtering (`BENCH_MIN_ON_CPU`, default 0.9;
/// `BENCH_MAX_TRIES`, default 8), counting rejected runs.
pub fn run_threads_filtered(c: &Contender, iters: u64, threads: usize) -> crate::Timing {
    use std::sync::atomic::Ordering::Relaxed;
    let min = env_or("BENCH_MIN_ON_CPU", 0.9f64);
    let tries = env_or("BENCH_MAX_TRIES", 8usize);
    let (t, rejected) = c.run_threads_overlapping(iters, threads, min, tries);
    REJECTED_RUNS.fetch_add(rejected, Relaxed);
    TAKEN_RUNS.fetch_add(1, Relaxed);
    t
}

/// Like [`interleaved`], with `threads` threads hammering each contender's
/// one shared service at once (runs where the threads did not overlap are
/// retried, see [`run_threads_filtered`]). Returns, per contender, the median
/// ns per request per thread in on-CPU time and in wall time.
pub fn interleaved_threads(
    cs: &[Contender],
    rounds: usize,
    iters: u64,
    threads: usize,
) -> Vec<(f64, f64)> {
    let n = cs.len();
    let mut cpu = vec![Vec::with_capacity(rounds); n];
    let mut wall = vec![Vec::with_capacity(rounds); n];
    for r in 0..rounds {
        for k in 0..n {
            let i = (k + r) % n;
            let t = run_threads_filtered(&cs[i], iters, threads);
            cpu[i].push(t.cpu.as_nanos() as f64 / iters as f64);
            wall[i].push(t.wall.as_nanos() as f64 / iters as f64);
        }
    }
    cpu.iter()
        .zip(&wall)
        .map(|(c, w)| (median(c), median(w)))
        .collect()
}

/// One row of a summary table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Contender.
    pub name: String,
    /// Numbers, one per column (NaN prints as `-`).
    pub values: Vec<f64>,
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "-".to_owned()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_added(v: f64, base: f64) -> String {
    if v.is_nan() || base.is_nan() {
        "-".to_owned()
    } else {
        format!("{:+.1}", v - base)
    }
}

/// Prints a Markdown table: for every numeric column its value and the value
/// added over the first row (the bare baseline), then, for the column
/// `ratio_col`, `× bare`.
pub fn print_table(title: &str, columns: &[&str], rows: &[Row], ratio_col: usize) {
    println!();
    println!("### {title}");
    println!();
    let mut head = String::from("| contender |");
    let mut rule = String::from("|---|");
    for c in columns {
        head.push_str(&format!(" {c} | added |"));
        rule.push_str("---:|---:|");
    }
    head.push_str(" × bare |");
    rule.push_str("---:|");
    println!("{head}");
    println!("{rule}");
    let base = &rows[0].values;
    for r in rows {
        let mut line = format!("| {} |", r.name);
        for (i, v) in r.values.iter().enumerate() {
            line.push_str(&format!(" {} | {} |", fmt_num(*v), fmt_added(*v, base[i])));
        }
        let ratio = r.values[ratio_col] / base[ratio_col];
        line.push_str(&format!(" {ratio:.2} |"));
        println!("{line}");
    }
    println!();
}
