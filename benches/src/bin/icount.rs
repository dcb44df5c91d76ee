//! Runs the per-request contenders for a fixed number of requests, so that
//! `valgrind --tool=callgrind` can count the instructions each one executes
//! per request: a figure that, unlike nanoseconds on a shared 2-core machine,
//! is the same on every run. `benches/icount.sh` drives it and prints the
//! table; run by hand:
//!
//! ```text
//! icount <contender name> <requests> [clone|reused]
//! icount --list
//! ```

use tower_graceful_benches::{service_contenders, Fixtures, Mode};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let fx = Fixtures::new();
    if args.first().map(String::as_str) == Some("--list") {
        for c in service_contenders(&fx, Mode::ClonePerRequest) {
            println!("{}", c.name);
        }
        return;
    }
    let (Some(name), Some(iters)) = (args.first(), args.get(1)) else {
        eprintln!("usage: icount <contender name> <requests> [clone|reused] | icount --list");
        std::process::exit(2);
    };
    let iters: u64 = iters.parse().expect("requests: a number");
    let mode = match args.get(2).map(String::as_str) {
        None | Some("clone") => Mode::ClonePerRequest,
        Some("reused") => Mode::Reused,
        Some(other) => {
            eprintln!("mode must be clone or reused, not {other:?}");
            std::process::exit(2);
        }
    };
    let mut cs = service_contenders(&fx, mode);
    let Some(c) = cs.iter_mut().find(|c| c.name == *name) else {
        eprintln!("no contender named {name:?}; try --list");
        std::process::exit(2);
    };
    // Warm up outside the counted region: thread-local setup, first-touch.
    c.run(1000);
    let d = c.run(iters);
    std::hint::black_box(d);
}
