//! Runs the per-request contenders for a fixed number of requests, so that
//! `valgrind --tool=callgrind` can count the instructions each one executes
//! per request: a figure that, unlike nanoseconds on a shared 2-core machine,
//! is the same on every run. `benches/icount.sh` drives it and prints the
//! table; run by hand:
//!
//! ```text
//! icount <contender name> <requests> [clone|reused|oneshot]
//! icount --list
//! MODE=reused icount --time <contender name>...   # quick interleaved ns/request vs bare
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
    if args.first().map(String::as_str) == Some("--time") {
        quick_time(&fx, &args[1..]);
        return;
    }
    let (Some(name), Some(iters)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: icount <contender name> <requests> [clone|reused|oneshot] | icount --list"
        );
        std::process::exit(2);
    };
    let iters: u64 = iters.parse().expect("requests: a number");
    let mode = match args.get(2).map(String::as_str) {
        None | Some("clone") => Mode::ClonePerRequest,
        Some("reused") => Mode::Reused,
        Some("oneshot") => Mode::Oneshot,
        Some(other) => {
            eprintln!("mode must be clone, reused or oneshot, not {other:?}");
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

/// A quick look while developing (the real tables come from the criterion
/// benches): the named contenders and `bare`, cloned per request (or
/// reused with `MODE=reused`), in
/// interleaved rounds; prints the median ns per request and the difference.
fn quick_time(fx: &Fixtures, names: &[String]) {
    let mode = match std::env::var("MODE").as_deref() {
        Ok("reused") => Mode::Reused,
        Ok("oneshot") => Mode::Oneshot,
        _ => Mode::ClonePerRequest,
    };
    let mut cs: Vec<_> = service_contenders(fx, mode)
        .into_iter()
        .filter(|c| c.name == "bare" || names.contains(&c.name))
        .collect();
    let rounds = 21;
    let iters = 200_000u64;
    let mut samples = vec![Vec::new(); cs.len()];
    for c in cs.iter_mut() {
        c.run(iters / 10);
    }
    for r in 0..rounds {
        let n = cs.len();
        for k in 0..n {
            let i = (r + k) % n;
            let d = cs[i].run(iters);
            samples[i].push(d.as_nanos() as f64 / iters as f64);
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let meds: Vec<f64> = samples.iter_mut().map(med).collect();
    let bare = cs
        .iter()
        .position(|c| c.name == "bare")
        .map(|i| meds[i])
        .unwrap_or(f64::NAN);
    for (c, m) in cs.iter().zip(meds) {
        println!("{:<32} {:>7.1} ns  {:>+7.1}", c.name, m, m - bare);
    }
}
