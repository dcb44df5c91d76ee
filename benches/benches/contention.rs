//! Two threads hammering one shared stack: each thread runs N requests on its
//! own clone of the one shared service (so they share the coordinator, the
//! counter, the semaphore…), timed from a barrier; criterion's figure is ns per
//! request per thread, in the thread's on-CPU time (`CLOCK_THREAD_CPUTIME_ID`):
//! on a 2-core machine shared with other work, wall time mostly measures
//! preemption, while CPU time keeps what contention costs (cache-line
//! transfers and lock waits are spent on-CPU; a parked lock waiter is not, so
//! the wall column is printed too). A run counts only if every thread was
//! on-CPU for at least `BENCH_MIN_ON_CPU` (0.9) of its wall time, i.e. the two
//! threads really ran at the same time; other runs are retried (up to
//! `BENCH_MAX_TRIES`, 8). The same contenders also run on 1 thread (through
//! the same thread runner) and the summary prints the 2-thread / 1-thread
//! ratio.
//!
//! `CARGO_TARGET_DIR=/work/target-c cargo bench -p tower-graceful-benches --bench contention`

use std::time::Duration;

use criterion::Criterion;
use tower_graceful_benches::report::{self, env_or, Row};
use tower_graceful_benches::{service_contenders, Contender, Fixtures, Mode};

const SAMPLES: usize = 10;

fn main() {
    let mut crit = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(SAMPLES)
        .configure_from_args();
    let fx = Fixtures::new();
    let mut all: Vec<(Mode, Vec<Contender>)> = Vec::new();
    for mode in [Mode::Reused, Mode::ClonePerRequest] {
        let cs = service_contenders(&fx, mode);
        for threads in [1usize, 2] {
            let group = format!("contention/{}/{threads}t", mode.label());
            let mut g = crit.benchmark_group(&group);
            for c in cs.iter() {
                let id = format!("{group}/{}", c.name);
                g.bench_function(c.name.clone(), |b| {
                    b.iter_custom(|iters| {
                        let d = report::run_threads_filtered(c, iters, threads).cpu;
                        report::record(&id, iters, d);
                        d
                    })
                });
            }
            g.finish();
        }
        all.push((mode, cs));
    }
    crit.final_summary();
    if !report::is_bench_run() {
        return;
    }

    let rounds = env_or("BENCH_ROUNDS", 7usize);
    let iters = env_or("BENCH_ITERS", 100_000u64);
    for (mode, cs) in &all {
        let one = report::interleaved_threads(cs, rounds, iters, 1);
        let two = report::interleaved_threads(cs, rounds, iters, 2);
        let crit_med = |t: usize, name: &str| {
            report::recorded_median(&format!("contention/{}/{t}t/{name}", mode.label()), SAMPLES)
                .unwrap_or(f64::NAN)
        };
        let rows: Vec<Row> = cs
            .iter()
            .enumerate()
            .map(|(i, c)| Row {
                name: c.name.clone(),
                values: vec![
                    crit_med(1, &c.name),
                    crit_med(2, &c.name),
                    one[i].0,
                    two[i].0,
                    two[i].1,
                ],
            })
            .collect();
        report::print_table(
            &format!(
                "contention, service {}: ns per request per thread (on-CPU unless marked wall)",
                mode.label()
            ),
            &[
                "criterion 1t",
                "criterion 2t",
                &format!("interleaved 1t ({rounds}×{iters})"),
                "interleaved 2t",
                "interleaved 2t wall",
            ],
            &rows,
            3,
        );
        {
            use std::sync::atomic::Ordering::Relaxed;
            println!(
                "(runs kept only when every thread was on-CPU >= BENCH_MIN_ON_CPU (0.9) of the wall time; \
                 rejected so far: {} of {} kept)",
                report::REJECTED_RUNS.load(Relaxed),
                report::TAKEN_RUNS.load(Relaxed)
            );
            println!();
        }
        println!("2-thread / 1-thread ratio, on-CPU (interleaved medians; criterion medians):");
        println!();
        println!("| contender | 2t/1t interleaved | 2t/1t criterion |");
        println!("|---|---:|---:|");
        for r in &rows {
            println!(
                "| {} | {:.2} | {:.2} |",
                r.name,
                r.values[3] / r.values[2],
                r.values[1] / r.values[0]
            );
        }
        println!();
    }
}
