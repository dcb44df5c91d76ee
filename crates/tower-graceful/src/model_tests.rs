//! Model-based tests of the phase machine: proptest drives the real
//! coordinator and the real layers with random sequences of operations on
//! tokio's paused clock and checks every step against a small reference model
//! (in-flight count, phase, readiness, what a new request receives, whether
//! the drain waiter woke), and the final report against the model's counts.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Once;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use proptest::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tower::{service_fn, Layer, ServiceExt};

use crate::coordinator::*;
use crate::drain::*;
use crate::in_flight::*;
use crate::probe::*;
use crate::report::*;
use crate::signal::*;

#[derive(Clone, Debug)]
enum Op {
    Start { grpc: bool },
    Respond(usize),
    Panic(usize),
    DropFuture(usize),
    Chunk(usize),
    EndBody(usize),
    DropBody(usize),
    Acquire,
    Release(usize),
    Trigger,
    Force,
    Advance(u64),
    Gate(bool),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum HookKind {
    Ok,
    Err,
    Panic,
    Hang,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<bool>().prop_map(|grpc| Op::Start { grpc }),
        3 => any::<usize>().prop_map(Op::Respond),
        1 => any::<usize>().prop_map(Op::Panic),
        1 => any::<usize>().prop_map(Op::DropFuture),
        2 => any::<usize>().prop_map(Op::Chunk),
        2 => any::<usize>().prop_map(Op::EndBody),
        1 => any::<usize>().prop_map(Op::DropBody),
        1 => Just(Op::Acquire),
        1 => any::<usize>().prop_map(Op::Release),
        2 => Just(Op::Trigger),
        1 => Just(Op::Force),
        3 => prop_oneof![Just(30u64), Just(170), Just(700)].prop_map(Op::Advance),
        1 => any::<bool>().prop_map(Op::Gate),
    ]
}

fn hook_kind() -> impl Strategy<Value = HookKind> {
    prop_oneof![
        Just(HookKind::Ok),
        Just(HookKind::Err),
        Just(HookKind::Panic),
        Just(HookKind::Hang)
    ]
}

enum Cmd {
    Respond,
    Panic,
}

struct ChannelBody(mpsc::UnboundedReceiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Boxed, so that one model drives both the fused stack (`Coordinator::layer`)
/// and the three layers stacked by hand.
type Res = Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>>;

struct Pending {
    cmd: oneshot::Sender<Cmd>,
    task: JoinHandle<Result<Res, Infallible>>,
}

struct Streaming {
    tx: mpsc::UnboundedSender<Bytes>,
    body: Res,
}

#[derive(Default, Debug)]
struct Model {
    live: usize,
    triggered_at: Option<u64>,
    draining_at: Option<u64>,
    forced: bool,
    cut: bool,
    drained: bool,
    /// Draining began and the count reached zero at some point since: the
    /// counter refuses from then on (zero is terminal).
    counter_closed: bool,
    rejected: usize,
    served_while_draining: usize,
    completed_while_draining: usize,
    stragglers: Option<usize>,
    gate_ready: bool,
    /// When the report is written: end of drain + the hooks' time.
    done_at: Option<u64>,
    hook_ms: u64,
}

impl Model {
    /// Time-free transitions, applied after every step at time `now`.
    fn update(&mut self, now: u64, pre_drain_ms: u64) {
        if let (Some(t), None) = (self.triggered_at, self.draining_at) {
            if now >= t + pre_drain_ms {
                self.draining_at = Some(t + pre_drain_ms);
            }
        }
        if self.draining_at.is_some() && !self.cut && !self.drained && self.live == 0 {
            self.drained = true;
            self.done_at = Some(now + self.hook_ms);
        }
        if self.draining_at.is_some() && self.live == 0 {
            self.counter_closed = true;
        }
    }

    /// What a request arriving now gets while draining: the rejection once
    /// the counter closed, after a cut, or with less than `min_left_ms` left
    /// before the deadline; otherwise it is served (L4 clients could not
    /// have sent it elsewhere).
    fn turned_away(&self, now: u64, deadline_ms: u64, min_left_ms: u64) -> bool {
        let Some(d) = self.draining_at else {
            return false;
        };
        self.counter_closed || self.cut || (d + deadline_ms).saturating_sub(now) < min_left_ms
    }

    fn release(&mut self, now: u64, request: bool) {
        self.live -= 1;
        if request && self.draining_at.is_some() && self.done_at.is_none_or(|d| now < d) {
            self.completed_while_draining += 1;
        }
    }

    fn expect_phase_at_least(&self) -> Phase {
        if self.drained || self.cut {
            Phase::CleaningUp
        } else if self.draining_at.is_some() {
            Phase::Draining
        } else if self.triggered_at.is_some() {
            Phase::Triggered
        } else {
            Phase::Serving
        }
    }
}

async fn settle() {
    // Current-thread runtime, no I/O: a bounded number of yields lets every
    // woken task run to its next await point.
    for _ in 0..64 {
        tokio::task::yield_now().await;
    }
}

fn quiet_model_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .copied()
                .unwrap_or_default();
            if !msg.starts_with("model:") {
                prev(info);
            }
        }));
    });
}

async fn run_case(
    composed: bool,
    pre_drain_ms: u64,
    deadline_ms: u64,
    hooks: Vec<HookKind>,
    ops: Vec<Op>,
) {
    let min_left_ms = deadline_ms / 4;
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::from_millis(pre_drain_ms))
        .drain_deadline(Duration::from_millis(deadline_ms))
        .min_time_left(Duration::from_millis(min_left_ms))
        // The reuse grace has a test of its own; the model's counts are
        // exact without it.
        .reuse_grace(Duration::ZERO)
        .cleanup_timeout(Duration::from_secs(10))
        .hook_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    for (i, kind) in hooks.iter().copied().enumerate() {
        c.on_shutdown(format!("hook{i}"), move || async move {
            match kind {
                HookKind::Ok => Ok(()),
                HookKind::Err => Err(std::io::Error::other("model: hook error")),
                HookKind::Panic => panic!("model: hook panic"),
                HookKind::Hang => std::future::pending().await,
            }
        })
        .unwrap();
    }
    let gate = c.readiness().gate("model-gate");
    let fused = c.layer();
    let stacked = tower::ServiceBuilder::new()
        .layer(ProbeLayer::new(&c))
        .layer(DrainLayer::new(&c))
        .layer(InFlightLayer::new(&c));
    let mut m = Model {
        hook_ms: 1_000 * hooks.iter().filter(|k| **k == HookKind::Hang).count() as u64,
        ..Model::default()
    };
    let mut now = 0u64;
    let mut pending: Vec<Pending> = Vec::new();
    let mut streaming: Vec<Streaming> = Vec::new();
    let mut guards: Vec<TaskGuard> = Vec::new();

    for op in ops {
        match op {
            Op::Start { grpc } => {
                let (cmd_tx, cmd_rx) = oneshot::channel::<Cmd>();
                let mut cmd_rx = Some(cmd_rx);
                let handler = service_fn(move |_req: Request<()>| {
                    let rx = cmd_rx.take().expect("one call");
                    async move {
                        match rx.await {
                            Ok(Cmd::Respond) => {}
                            Ok(Cmd::Panic) => panic!("model: handler panic"),
                            Err(_) => std::future::pending().await,
                        }
                        Ok::<_, Infallible>(Response::new(ChannelBody(
                            STREAMS.with(|s| s.borrow_mut().pop().expect("stream prepared")),
                        )))
                    }
                });
                let mut req = Request::post("/model").body(()).unwrap();
                if grpc {
                    req.headers_mut()
                        .insert("content-type", "application/grpc".parse().unwrap());
                }
                let task = if composed {
                    let svc = stacked.service(handler);
                    tokio::spawn(async move {
                        let res = svc.oneshot(req).await?;
                        Ok(res.map(|b| b.boxed_unsync()))
                    })
                } else {
                    let svc = fused.layer(handler);
                    tokio::spawn(async move {
                        let res = svc.oneshot(req).await?;
                        Ok(res.map(|b| b.boxed_unsync()))
                    })
                };
                settle().await;
                if m.turned_away(now, deadline_ms, min_left_ms) {
                    assert!(task.is_finished(), "rejection is immediate");
                    let res = task.await.unwrap().unwrap();
                    if grpc {
                        assert_eq!(res.status(), StatusCode::OK);
                        assert_eq!(res.headers()["grpc-status"], "14");
                    } else {
                        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
                        assert!(res.headers().contains_key("retry-after"));
                    }
                    if m.done_at.is_none_or(|d| now < d) {
                        m.rejected += 1; // the report counts until it is written
                    }
                } else {
                    if m.draining_at.is_some() {
                        m.served_while_draining += 1;
                    }
                    m.live += 1;
                    pending.push(Pending { cmd: cmd_tx, task });
                }
            }
            Op::Respond(i) if !pending.is_empty() => {
                let p = pending.swap_remove(i % pending.len());
                let (tx, rx) = mpsc::unbounded_channel();
                STREAMS.with(|s| s.borrow_mut().push(rx));
                let _ = p.cmd.send(Cmd::Respond);
                settle().await;
                assert!(p.task.is_finished());
                let body = p.task.await.unwrap().unwrap();
                assert_eq!(
                    body.status(),
                    StatusCode::OK,
                    "accepted requests are served"
                );
                // The lame duck: never before the trigger, always once
                // draining (in between, a share that rises over the window).
                let close = body
                    .headers()
                    .get("connection")
                    .is_some_and(|v| v == "close");
                if m.triggered_at.is_none() {
                    assert!(!close, "no Connection: close before the trigger");
                } else if m.draining_at.is_some() {
                    assert!(
                        close,
                        "Connection: close on every HTTP/1.1 response while draining"
                    );
                }
                streaming.push(Streaming { tx, body });
            }
            Op::Panic(i) if !pending.is_empty() => {
                let p = pending.swap_remove(i % pending.len());
                let _ = p.cmd.send(Cmd::Panic);
                settle().await;
                assert!(p.task.await.unwrap_err().is_panic());
                m.release(now, true);
            }
            Op::DropFuture(i) if !pending.is_empty() => {
                let p = pending.swap_remove(i % pending.len());
                p.task.abort();
                assert!(p.task.await.unwrap_err().is_cancelled());
                m.release(now, true);
            }
            Op::Chunk(i) if !streaming.is_empty() => {
                let n = streaming.len();
                let s = &mut streaming[i % n];
                s.tx.send(Bytes::from_static(b"chunk")).unwrap();
                let frame = s.body.body_mut().frame().await.unwrap().unwrap();
                assert_eq!(frame.into_data().unwrap(), "chunk");
            }
            Op::EndBody(i) if !streaming.is_empty() => {
                let mut s = streaming.swap_remove(i % streaming.len());
                drop(s.tx);
                assert!(s.body.body_mut().frame().await.is_none());
                m.release(now, true);
                drop(s.body);
            }
            Op::DropBody(i) if !streaming.is_empty() => {
                let s = streaming.swap_remove(i % streaming.len());
                drop(s);
                m.release(now, true);
            }
            Op::Acquire => {
                let guard = c.track("model job");
                assert_eq!(guard.is_tracking(), !m.counter_closed, "model {m:?}");
                if guard.is_tracking() {
                    m.live += 1;
                }
                guards.push(guard);
            }
            Op::Release(i) if !guards.is_empty() => {
                let guard = guards.swap_remove(i % guards.len());
                if guard.is_tracking() {
                    m.release(now, false);
                }
            }
            Op::Trigger => {
                let first = c.trigger();
                assert_eq!(first, m.triggered_at.is_none());
                m.triggered_at.get_or_insert(now);
            }
            Op::Force => {
                c.force();
                m.triggered_at.get_or_insert(now);
                if m.draining_at.is_none() {
                    m.draining_at = Some(now);
                }
                if !m.drained && !m.cut {
                    m.forced = true;
                    m.cut = true;
                    m.stragglers = Some(m.live);
                    m.done_at = Some(now + m.hook_ms);
                }
            }
            Op::Advance(ms) => {
                // Step to each model boundary in turn so the model sees the
                // same order of events as the coordinator.
                let target = now + ms;
                loop {
                    let mut next = target;
                    if let (Some(t), None) = (m.triggered_at, m.draining_at) {
                        next = next.min(t + pre_drain_ms);
                    }
                    if let (Some(d), false, false) = (m.draining_at, m.drained, m.cut) {
                        next = next.min(d + deadline_ms);
                    }
                    if let Some(done) = m.done_at {
                        // Each hanging hook's timeout is a timer too: stop at
                        // each, as a real clock would.
                        let start = done - m.hook_ms;
                        if let Some(b) = (1..=m.hook_ms / 1_000)
                            .map(|k| start + k * 1_000)
                            .find(|b| *b > now)
                        {
                            next = next.min(b);
                        }
                    }
                    tokio::time::advance(Duration::from_millis(next - now)).await;
                    now = next;
                    settle().await;
                    m.update(now, pre_drain_ms);
                    if let (Some(d), false, false) = (m.draining_at, m.drained, m.cut) {
                        if now >= d + deadline_ms && m.live > 0 {
                            m.cut = true;
                            m.stragglers = Some(m.live);
                            m.done_at = Some(now + m.hook_ms);
                        }
                    }
                    if now >= target {
                        break;
                    }
                }
            }
            Op::Gate(ready) => {
                gate.set_ready(ready);
                m.gate_ready = ready;
            }
            _ => {}
        }
        settle().await;
        m.update(now, pre_drain_ms);

        // Every step: the counter, the phase, readiness, the signal.
        assert_eq!(c.in_flight(), m.live, "in-flight count; model {m:?}");
        let phase = c.phase();
        let floor = m.expect_phase_at_least();
        assert!(phase >= floor, "phase {phase:?} < model {floor:?}; {m:?}");
        if floor < Phase::CleaningUp {
            assert_eq!(phase, floor, "model {m:?}");
        }
        if m.cut {
            assert!(c.signal().is_forced(), "hard signal after a cut; {m:?}");
        }
        assert_eq!(c.signal().is_draining(), m.draining_at.is_some());
        let status = c.readiness().status();
        let want = if m.triggered_at.is_some() {
            ReadinessStatus::ShuttingDown
        } else if m.gate_ready {
            ReadinessStatus::Ready
        } else {
            ReadinessStatus::NotReady("model-gate".into())
        };
        assert_eq!(status, want);
    }

    // Finish: trigger if nobody did, let every timer run out, then compare the
    // report with the model.
    if m.triggered_at.is_none() {
        c.trigger();
        m.triggered_at = Some(now);
    }
    let report = tokio::time::timeout(Duration::from_secs(120), c.wait())
        .await
        .expect("shutdown always ends");
    // Nothing is released during the final wait: whatever is live when the
    // drain is cut is a straggler.
    if !m.drained && !m.cut && m.live > 0 {
        m.stragglers = Some(m.live);
    }
    assert_eq!(report.rejected, m.rejected, "{report}");
    assert_eq!(
        report.served_while_draining, m.served_while_draining,
        "{report}\nmodel {m:?}"
    );
    assert_eq!(
        report.stragglers.len(),
        m.stragglers.unwrap_or(0),
        "{report}\nmodel {m:?}"
    );
    assert_eq!(
        report.completed_while_draining, m.completed_while_draining,
        "{report}\nmodel {m:?}"
    );
    let outcomes: Vec<_> = report.hooks.iter().map(|h| h.outcome.clone()).collect();
    let want: Vec<_> = hooks
        .iter()
        .map(|k| match k {
            HookKind::Ok => HookOutcome::Completed,
            HookKind::Err => HookOutcome::Failed("model: hook error".into()),
            HookKind::Panic => HookOutcome::Panicked("model: hook panic".into()),
            HookKind::Hang => HookOutcome::TimedOut,
        })
        .collect();
    assert_eq!(outcomes, want);
    assert_eq!(c.phase(), Phase::Done);
    drop((pending, streaming, guards));
}

thread_local! {
    static STREAMS: std::cell::RefCell<Vec<mpsc::UnboundedReceiver<Bytes>>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("MODEL_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256),
        max_shrink_iters: 2_000,
        .. ProptestConfig::default()
    })]

    #[test]
    fn phase_machine_matches_model(
        composed in any::<bool>(),
        pre_drain_ms in prop_oneof![Just(0u64), Just(100), Just(1_000)],
        deadline_ms in prop_oneof![Just(500u64), Just(2_000)],
        hooks in prop::collection::vec(hook_kind(), 0..4),
        ops in prop::collection::vec(op(), 1..48),
    ) {
        quiet_model_panics();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_case(composed, pre_drain_ms, deadline_ms, hooks, ops));
    }
}

// Shrunk cases found while building the model, kept as regular tests.

/// Runs the case through the fused stack and through the stacked layers.
fn run_on_paused_runtime(pre: u64, deadline: u64, hooks: Vec<HookKind>, ops: Vec<Op>) {
    quiet_model_panics();
    for composed in [false, true] {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(run_case(
                composed,
                pre,
                deadline,
                hooks.clone(),
                ops.clone(),
            ));
    }
}

/// A rejection after the report was written is not in the report.
#[test]
fn regression_rejection_after_report() {
    run_on_paused_runtime(0, 500, vec![], vec![Op::Trigger, Op::Start { grpc: false }]);
}

/// Hook timeouts are timers: the report is written when the last one fires.
#[test]
fn regression_hook_timers_in_cleanup() {
    run_on_paused_runtime(
        0,
        500,
        vec![HookKind::Hang, HookKind::Hang],
        vec![
            Op::Trigger,
            Op::Advance(700),
            Op::Advance(700),
            Op::Advance(700),
            Op::Start { grpc: false },
        ],
    );
}

/// Force during the pre-drain delay with a request in flight: straggler,
/// hard signal, and the request's later end is still counted until the
/// report is written.
#[test]
fn regression_force_in_pre_drain() {
    run_on_paused_runtime(
        1_000,
        2_000,
        vec![HookKind::Hang],
        vec![
            Op::Start { grpc: true },
            Op::Trigger,
            Op::Force,
            Op::Respond(0),
            Op::EndBody(0),
            Op::Start { grpc: true },
            Op::Advance(700),
            Op::Advance(700),
        ],
    );
}
