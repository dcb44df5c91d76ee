//! Shared harness of the tower-graceful benchmarks: the contenders (our stack,
//! each of our layers alone, and the peers), a synchronous driver, a runner for
//! one or more threads, and the summary tables. See `BENCHMARKS.md` at the
//! repository root for how to run them and the latest figures.

pub mod guards;
pub mod report;
pub mod services;

use std::sync::Barrier;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use http::{Request, Response};
use http_body::Body;
use tower::limit::ConcurrencyLimitLayer;
use tower::ServiceBuilder;
use tower_graceful::{
    add_signal::AddSignalLayer, drain::DrainLayer, in_flight::InFlightLayer, probe::ProbeLayer,
    Coordinator, Phase, ShutdownSignal,
};
use tower_http::metrics::InFlightRequestsLayer;
use tower_layer::Layer;
use tower_service::Service;

use crate::guards::{ArcCounter, GuardLayer, StaticAtomic, TokioGraceful, Tracker};
use crate::services::{
    axum_get_root, drive, drive_oneshot, get_root, grpc_req, Hello, HelloHeaders, NoopLayer, HELLO,
};

/// How the service is used for each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One service, `poll_ready` + `call` on it for every request.
    Reused,
    /// `svc.clone()` per request, then `poll_ready` + `call` on the clone and
    /// drop it (what hyper-util's `TowerToHyperService` does, so what axum and
    /// tonic servers do: `self.service.clone().oneshot(req)`).
    ClonePerRequest,
    /// Exactly hyper-util's `TowerToHyperService::call`: a clone per request
    /// driven through tower's `oneshot` (`self.service.clone().oneshot(req)`),
    /// whose future holds the service and the request until `call`.
    Oneshot,
}

impl Mode {
    /// Short label used in benchmark ids.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Reused => "reused",
            Mode::ClonePerRequest => "clone",
            Mode::Oneshot => "oneshot",
        }
    }
}

type RunFn = Box<dyn FnMut(u64) -> Duration + Send>;
type ThreadsFn = Box<dyn Fn(u64, usize) -> Timing + Send>;

/// Mean per-thread times of a multi-thread run.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Wall-clock time from the start barrier to the thread's last request.
    pub wall: Duration,
    /// CPU time the thread was actually running (`CLOCK_THREAD_CPUTIME_ID`):
    /// excludes time the thread was descheduled, which on a small shared
    /// machine otherwise dominates multi-thread figures.
    pub cpu: Duration,
    /// The smallest `cpu / wall` over the threads: near 1 when every thread
    /// was running the whole time (so the threads really overlapped), near
    /// `1 / n` when they took turns on a busy machine.
    pub on_cpu: f64,
}

/// CPU time consumed by the calling thread.
#[allow(unsafe_code)]
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One thing to measure: a service, how it is called, and the request.
pub struct Contender {
    /// Display name (also the criterion benchmark id).
    pub name: String,
    run: RunFn,
    threads: ThreadsFn,
}

impl std::fmt::Debug for Contender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contender")
            .field("name", &self.name)
            .finish()
    }
}

impl Contender {
    /// Wraps `svc`; `mk` builds each request.
    pub fn new<S, B, RB, M>(name: impl Into<String>, svc: S, mode: Mode, mk: M) -> Self
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        RB: Body,
        M: Fn() -> Request<B> + Copy + Send + 'static,
    {
        let mut own = svc.clone();
        let run: RunFn = Box::new(move |iters| run_batch(&mut own, mode, mk, iters));
        let threads: ThreadsFn = Box::new(move |iters, n| {
            let barrier = Barrier::new(n);
            let per: Vec<Timing> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..n)
                    .map(|_| {
                        let mut mine = svc.clone();
                        let barrier = &barrier;
                        s.spawn(move || {
                            // One warm request so thread-local setup (shard
                            // slot, allocator caches) is not timed.
                            std::hint::black_box(drive(&mut mine.clone(), mk()));
                            barrier.wait();
                            let cpu0 = thread_cpu_time();
                            let wall = run_batch(&mut mine, mode, mk, iters);
                            let cpu = thread_cpu_time().saturating_sub(cpu0);
                            Timing {
                                wall,
                                cpu,
                                on_cpu: cpu.as_secs_f64() / wall.as_secs_f64().max(1e-12),
                            }
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            Timing {
                wall: per.iter().map(|t| t.wall).sum::<Duration>() / n as u32,
                cpu: per.iter().map(|t| t.cpu).sum::<Duration>() / n as u32,
                on_cpu: per.iter().map(|t| t.on_cpu).fold(f64::INFINITY, f64::min),
            }
        });
        Self {
            name: name.into(),
            run,
            threads,
        }
    }

    /// Runs `iters` requests on this thread; returns the elapsed time.
    pub fn run(&mut self, iters: u64) -> Duration {
        (self.run)(iters)
    }

    /// Runs `iters` requests on each of `n` new threads at once, each on its
    /// own clone of the one shared service; returns the mean per-thread wall
    /// and CPU times (so `time / iters` is ns per request per thread).
    pub fn run_threads(&self, iters: u64, n: usize) -> Timing {
        (self.threads)(iters, n)
    }

    /// [`run_threads`](Self::run_threads), repeated (up to `max_tries` runs)
    /// until every thread was on-CPU for at least `min_on_cpu` of the wall
    /// time, i.e. the threads really ran at the same time; returns that run,
    /// or the most overlapped one, and how many runs were rejected.
    pub fn run_threads_overlapping(
        &self,
        iters: u64,
        n: usize,
        min_on_cpu: f64,
        max_tries: usize,
    ) -> (Timing, usize) {
        let mut best: Option<Timing> = None;
        for tries in 0..max_tries.max(1) {
            let t = self.run_threads(iters, n);
            if t.on_cpu >= min_on_cpu {
                return (t, tries);
            }
            if best.is_none_or(|b| t.on_cpu > b.on_cpu) {
                best = Some(t);
            }
        }
        (best.expect("at least one run"), max_tries.max(1))
    }
}

#[inline(never)]
fn run_batch<S, B, RB, M>(svc: &mut S, mode: Mode, mk: M, iters: u64) -> Duration
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    RB: Body,
    M: Fn() -> Request<B>,
{
    let mut bytes = 0usize;
    let start = Instant::now();
    match mode {
        Mode::Reused => {
            for _ in 0..iters {
                bytes += drive(svc, mk());
            }
        }
        Mode::ClonePerRequest => {
            for _ in 0..iters {
                // The request first, then the clone: hyper-util clones the
                // service for a request hyper has already parsed. (Built
                // while the clone is alive, the request is built under an
                // unwind edge, and LLVM then copies it whole before an
                // out-of-line `call`.)
                let req = mk();
                bytes += drive(&mut svc.clone(), req);
            }
        }
        Mode::Oneshot => {
            for _ in 0..iters {
                let req = mk();
                bytes += drive_oneshot(svc.clone(), req);
            }
        }
    }
    let elapsed = start.elapsed();
    std::hint::black_box(bytes);
    elapsed
}

/// Everything the contenders share, kept alive for the whole run: a runtime
/// (for the coordinators' driver tasks and tokio-graceful's trigger task), a
/// serving coordinator, a draining one, a tokio-graceful `Shutdown` and a
/// `TaskTracker`.
pub struct Fixtures {
    /// Multi-thread runtime with one worker; idle during measurements.
    pub rt: tokio::runtime::Runtime,
    /// Serving (normal path).
    pub serving: Coordinator,
    /// Already draining (rejection path).
    pub draining: Coordinator,
    /// tokio-graceful, never triggered.
    pub shutdown: tokio_graceful::Shutdown,
    /// tokio-util, never closed.
    pub tracker: tokio_util::task::TaskTracker,
    _held: tower_graceful::signal::TaskGuard,
}

impl std::fmt::Debug for Fixtures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fixtures").finish_non_exhaustive()
    }
}

impl Default for Fixtures {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixtures {
    /// Builds the fixtures; the draining coordinator is waited into
    /// [`Phase::Draining`].
    pub fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let _enter = rt.enter();
        let serving = coordinator();
        // Held in flight so the draining coordinator stays in `Draining` (as
        // during a real drain) instead of finishing at once.
        let draining = Coordinator::builder()
            .handle_signals(false)
            .readiness_path("/ready")
            .liveness_path("/live")
            .drain_deadline(Duration::from_secs(24 * 3600))
            .build()
            .expect("coordinator");
        let held = draining.track("held for the rejection benches");
        draining.trigger();
        rt.block_on(draining.draining());
        assert_eq!(draining.phase(), Phase::Draining);
        let shutdown = tokio_graceful::Shutdown::new(std::future::pending::<()>());
        drop(_enter);
        Self {
            rt,
            serving,
            draining,
            shutdown,
            tracker: tokio_util::task::TaskTracker::new(),
            _held: held,
        }
    }
}

/// A coordinator as the benches configure it: no signal handlers, probe paths
/// `/ready` and `/live` (the documented common case), everything else default.
/// Must be called inside a tokio runtime.
pub fn coordinator() -> Coordinator {
    Coordinator::builder()
        .handle_signals(false)
        .readiness_path("/ready")
        .liveness_path("/live")
        .build()
        .expect("coordinator")
}

/// A concurrency limit nobody reaches.
pub const HUGE_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// Name of the bare contender in every list.
pub const BARE: &str = "bare";

/// The per-request contenders at the tower level, around [`Hello`].
pub fn service_contenders(fx: &Fixtures, mode: Mode) -> Vec<Contender> {
    let c = &fx.serving;
    let m = mode;
    vec![
        Contender::new(BARE, Hello, m, get_root),
        Contender::new("noop layer", NoopLayer.layer(Hello), m, get_root),
        Contender::new("tg full stack", c.layer().layer(Hello), m, get_root),
        Contender::new(
            "tg InFlightLayer",
            InFlightLayer::new(c).layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "tg DrainLayer",
            DrainLayer::new(c).layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "tg AddSignalLayer",
            AddSignalLayer::new(c).layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "tg ProbeLayer",
            ProbeLayer::new(c).layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "tower-http InFlightRequests",
            InFlightRequestsLayer::pair().0.layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "tower ConcurrencyLimit",
            ConcurrencyLimitLayer::new(HUGE_LIMIT).layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "tokio-graceful guard",
            GuardLayer(TokioGraceful(fx.shutdown.guard())).layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "TaskTracker::token",
            GuardLayer(Tracker(fx.tracker.clone())).layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "Arc<AtomicUsize> guard",
            GuardLayer(ArcCounter::default()).layer(Hello),
            m,
            get_root,
        ),
        Contender::new(
            "static atomic guard",
            GuardLayer(StaticAtomic::leak()).layer(Hello),
            m,
            get_root,
        ),
    ]
}

/// Normal path vs the draining rejection, full stack: plain `GET /` (503)
/// or, with `grpc`, a gRPC request (trailers-only `UNAVAILABLE`). The first
/// contender is the bare service with the same request.
pub fn rejection_contenders(fx: &Fixtures, mode: Mode, grpc: bool) -> Vec<Contender> {
    let m = mode;
    let serving = fx.serving.layer().layer(Hello);
    let draining = fx.draining.layer().layer(Hello);
    if grpc {
        vec![
            Contender::new("bare gRPC", Hello, m, grpc_req),
            Contender::new("tg serving gRPC", serving, m, grpc_req),
            Contender::new("tg draining gRPC -> UNAVAILABLE", draining, m, grpc_req),
        ]
    } else {
        vec![
            Contender::new("bare GET", Hello, m, get_root),
            Contender::new("tg serving GET", serving, m, get_root),
            Contender::new("tg draining GET -> 503", draining, m, get_root),
            Contender::new("bare GET, 4-header response", HelloHeaders, m, get_root),
            Contender::new(
                "tg serving GET, 4-header response",
                fx.serving.layer().layer(HelloHeaders),
                m,
                get_root,
            ),
        ]
    }
}

async fn hello() -> &'static [u8] {
    HELLO
}

async fn hello_with_signal(signal: ShutdownSignal) -> &'static [u8] {
    std::hint::black_box(&signal);
    HELLO
}

/// `GET /` answering [`HELLO`].
pub fn hello_router() -> Router {
    Router::new().route("/", get(hello))
}

/// `GET /` answering [`HELLO`], with a handler that takes the
/// [`ShutdownSignal`] extractor.
pub fn signal_router() -> Router {
    Router::new().route("/", get(hello_with_signal))
}

/// Contenders through an axum `Router`, in-process: layers applied with
/// `Router::layer` and layers wrapped around the whole router with
/// `ServiceBuilder`.
pub fn axum_contenders(fx: &Fixtures, mode: Mode) -> Vec<Contender> {
    let c = &fx.serving;
    let m = mode;
    let r = hello_router;
    vec![
        Contender::new(BARE, r(), m, axum_get_root),
        Contender::new(
            "Router::layer(noop)",
            r().layer(NoopLayer),
            m,
            axum_get_root,
        ),
        Contender::new(
            "Router::layer(tg full)",
            r().layer(c.layer()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "Router::layer(tg full) + ShutdownSignal extractor",
            signal_router().layer(c.layer()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "Router::layer(tower-http InFlightRequests)",
            r().layer(InFlightRequestsLayer::pair().0),
            m,
            axum_get_root,
        ),
        Contender::new(
            "Router::layer(tokio-graceful guard)",
            r().layer(GuardLayer(TokioGraceful(fx.shutdown.guard()))),
            m,
            axum_get_root,
        ),
        Contender::new(
            "Router::layer(TaskTracker::token)",
            r().layer(GuardLayer(Tracker(fx.tracker.clone()))),
            m,
            axum_get_root,
        ),
        Contender::new(
            "Router::layer(Arc guard)",
            r().layer(GuardLayer(ArcCounter::default())),
            m,
            axum_get_root,
        ),
        Contender::new(
            "around Router: noop",
            ServiceBuilder::new().layer(NoopLayer).service(r()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "around Router: tg full",
            ServiceBuilder::new().layer(c.layer()).service(r()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "around Router: tg full + ShutdownSignal extractor",
            ServiceBuilder::new()
                .layer(c.layer())
                .service(signal_router()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "around Router: tower-http InFlightRequests",
            ServiceBuilder::new()
                .layer(InFlightRequestsLayer::pair().0)
                .service(r()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "around Router: tower ConcurrencyLimit",
            ServiceBuilder::new()
                .layer(ConcurrencyLimitLayer::new(HUGE_LIMIT))
                .service(r()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "around Router: tokio-graceful guard",
            ServiceBuilder::new()
                .layer(GuardLayer(TokioGraceful(fx.shutdown.guard())))
                .service(r()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "around Router: TaskTracker::token",
            ServiceBuilder::new()
                .layer(GuardLayer(Tracker(fx.tracker.clone())))
                .service(r()),
            m,
            axum_get_root,
        ),
        Contender::new(
            "around Router: Arc guard",
            ServiceBuilder::new()
                .layer(GuardLayer(ArcCounter::default()))
                .service(r()),
            m,
            axum_get_root,
        ),
    ]
}
