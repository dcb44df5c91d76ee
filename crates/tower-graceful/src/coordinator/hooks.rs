//! Cleanup hooks: registered in order, run one at a time after the drain,
//! each within its own timeout and all within the cleanup time; an error, a
//! panic or a hang in one is reported and never stops the others or the
//! exit.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tracing::Instrument;

use crate::core::sync::{lock, Mutex};
use crate::report::{HookOutcome, HookReport};

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;
type HookFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type HookFn = Box<dyn FnOnce() -> HookFuture + Send>;

pub(super) struct Hook {
    name: Cow<'static, str>,
    timeout: Option<Duration>,
    run: HookFn,
}

/// The cleanup hooks: registered, queued, taken one at a time by the driver,
/// reported.
#[derive(Default)]
pub(super) struct Hooks {
    /// Set when cleanup begins: later registrations are refused.
    closed: bool,
    /// Not run yet, in registration order.
    queue: std::collections::VecDeque<Hook>,
    /// The hook a driver has taken and not yet reported: its name, when it
    /// started and its timeout. A driver that finds one here took over from
    /// a driver that died while the hook ran (see `Inner::driver_alive`):
    /// the hook's task was spawned on the dead driver's runtime and was
    /// cancelled with it, so it is reported as [`HookOutcome::Abandoned`]
    /// and not run again (its closure is spent, and it may have done part
    /// of its work).
    running: Option<(Cow<'static, str>, Instant, Duration)>,
    /// What became of each hook taken so far, in the order they were taken.
    done: Vec<HookReport>,
}

/// Queues a hook, unless cleanup has begun.
pub(super) fn add<F, Fut, E>(
    hooks: &Mutex<Hooks>,
    name: Cow<'static, str>,
    timeout: Option<Duration>,
    hook: F,
) -> Result<(), HookRegistrationError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    let mut hooks = lock(hooks);
    if hooks.closed {
        return Err(HookRegistrationError { name });
    }
    hooks.queue.push_back(Hook {
        name,
        timeout,
        run: Box::new(move || Box::pin(async move { hook().await.map_err(Into::into) })),
    });
    Ok(())
}

/// Runs the hooks still queued, one at a time, each within its timeout
/// (`hook_timeout` unless it has its own) and all before `end`, and returns
/// the report of every hook taken so far (by this driver or a dead one).
pub(super) async fn run(
    hooks_lock: &Mutex<Hooks>,
    hook_timeout: Duration,
    end: Instant,
) -> Vec<HookReport> {
    loop {
        let (hook, timeout, started) = {
            let mut hooks = lock(hooks_lock);
            hooks.closed = true;
            if let Some((name, started, timeout)) = hooks.running.take() {
                tracing::warn!(
                    target: "tower_graceful",
                    hook = %name,
                    "hook abandoned: the runtime that ran it shut down, and with it the hook; not run again"
                );
                hooks.done.push(HookReport {
                    name,
                    outcome: HookOutcome::Abandoned,
                    elapsed: Instant::now().saturating_duration_since(started),
                    timeout,
                });
            }
            let Some(hook) = hooks.queue.pop_front() else {
                return hooks.done.clone();
            };
            let left = end.saturating_duration_since(Instant::now());
            let timeout = hook.timeout.unwrap_or(hook_timeout).min(left);
            if timeout.is_zero() {
                tracing::warn!(target: "tower_graceful", hook = %hook.name, "hook skipped: cleanup time used up");
                hooks.done.push(HookReport {
                    name: hook.name,
                    outcome: HookOutcome::Skipped,
                    elapsed: Duration::ZERO,
                    timeout,
                });
                continue;
            }
            // Taken and marked running in one step: a driver that dies
            // from here on leaves the hook for the next one to report.
            let started = Instant::now();
            hooks.running = Some((hook.name.clone(), started, timeout));
            (hook, timeout, started)
        };
        let outcome = run_hook(hook.run, timeout).await;
        let elapsed = started.elapsed();
        match &outcome {
            HookOutcome::Completed => {
                tracing::info!(target: "tower_graceful", hook = %hook.name, ?elapsed, "hook completed")
            }
            other => {
                tracing::warn!(target: "tower_graceful", hook = %hook.name, ?elapsed, outcome = ?other, "hook did not complete")
            }
        }
        let mut hooks = lock(hooks_lock);
        hooks.running = None;
        hooks.done.push(HookReport {
            name: hook.name,
            outcome,
            elapsed,
            timeout,
        });
    }
}

async fn run_hook(run: HookFn, timeout: Duration) -> HookOutcome {
    // Spawned, so a panic (even one raised before the first await) is
    // caught by the task and reported, and a hang can be aborted.
    // In the shutdown's span, so the hook's own events nest under it.
    let mut task = tokio::spawn(async move { run().await }.instrument(tracing::Span::current()));
    match tokio::time::timeout(timeout, &mut task).await {
        Ok(Ok(Ok(()))) => HookOutcome::Completed,
        Ok(Ok(Err(e))) => HookOutcome::Failed(e.to_string()),
        Ok(Err(join)) if join.is_panic() => HookOutcome::Panicked(panic_message(join.into_panic())),
        Ok(Err(_)) => HookOutcome::Failed("hook task was cancelled".to_owned()),
        Err(_) => {
            task.abort();
            HookOutcome::TimedOut
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "non-string panic payload".to_owned(),
        },
    }
}

/// A hook was registered after cleanup had begun; it will not run.
#[derive(Debug)]
pub struct HookRegistrationError {
    name: Cow<'static, str>,
}

impl fmt::Display for HookRegistrationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cleanup hook {:?} was registered after cleanup began and will not run: \
             register hooks before shutdown is triggered",
            self.name
        )
    }
}

impl std::error::Error for HookRegistrationError {}
