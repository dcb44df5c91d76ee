//! Per-request cost of tower-graceful's full stack against two guards an
//! engineer would write by hand (`TaskTracker::token` and an
//! `Arc<AtomicUsize>`), around the same trivial service, with the service
//! reused, cloned per request, and cloned through `oneshot`. Every request is
//! a fresh `Request<()>`; its future and body are polled to the end with a
//! no-op waker. Contenders run in interleaved rounds and the median of the
//! rounds is printed, then the same at two threads, then allocations per
//! request.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt};

// ---- allocations ----

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// ---- the service ----

#[derive(Clone)]
struct Hello;

impl Service<Request<()>> for Hello {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Ok(Response::new(Full::new(Bytes::from_static(b"hello")))))
    }
}

// ---- a hand-written guard layer: the guard rides in the body ----

trait Source: Clone {
    type Guard: Send;
    fn take(&self) -> Self::Guard;
}

#[derive(Clone)]
struct TrackerSource(tokio_util::task::TaskTracker);
impl Source for TrackerSource {
    type Guard = tokio_util::task::task_tracker::TaskTrackerToken;
    fn take(&self) -> Self::Guard {
        self.0.token()
    }
}

#[derive(Clone, Default)]
struct ArcSource(Arc<AtomicUsize>);
struct ArcGuard(Arc<AtomicUsize>);
impl Drop for ArcGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}
impl Source for ArcSource {
    type Guard = ArcGuard;
    fn take(&self) -> ArcGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        ArcGuard(self.0.clone())
    }
}

#[derive(Clone)]
struct Guarded<S, G> {
    inner: S,
    source: G,
}

struct GuardedLayer<G>(G);
impl<S, G: Source> Layer<S> for GuardedLayer<G> {
    type Service = Guarded<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            source: self.0.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    struct GuardedFuture<F, T> { #[pin] fut: F, guard: Option<T> }
}
pin_project_lite::pin_project! {
    struct GuardedBody<B, T> { #[pin] body: B, guard: Option<T> }
}

impl<F, B, E, T> Future for GuardedFuture<F, T>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<GuardedBody<B, T>>, E>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.fut.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(res.map(|r| r.map(|body| GuardedBody { body, guard })))
    }
}

impl<B: Body, T> Body for GuardedBody<B, T> {
    type Data = B::Data;
    type Error = B::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        if frame.is_none() {
            this.guard.take();
        }
        Poll::Ready(frame)
    }
    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<S, G, B> Service<Request<()>> for Guarded<S, G>
where
    S: Service<Request<()>, Response = Response<B>>,
    G: Source,
{
    type Response = Response<GuardedBody<B, G::Guard>>;
    type Error = S::Error;
    type Future = GuardedFuture<S::Future, G::Guard>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Request<()>) -> Self::Future {
        let guard = Some(self.source.take());
        GuardedFuture {
            fut: self.inner.call(req),
            guard,
        }
    }
}

// ---- driving ----

#[derive(Clone, Copy, Debug)]
enum Mode {
    Reused,
    Cloned,
    Oneshot,
}

fn request() -> Request<()> {
    Request::builder().uri("/").body(()).unwrap()
}

fn finish<F, B, E>(fut: F, cx: &mut Context<'_>)
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    E: std::fmt::Debug,
{
    let mut fut = pin!(fut);
    let res = loop {
        if let Poll::Ready(r) = fut.as_mut().poll(cx) {
            break r.unwrap();
        }
    };
    let mut body = pin!(res.into_body());
    while let Poll::Ready(Some(frame)) = body.as_mut().poll_frame(cx) {
        std::hint::black_box(frame.ok());
    }
}

/// `n` requests through `svc`; ns per request.
fn run<S, B>(svc: &mut S, mode: Mode, n: u64) -> f64
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    let t = Instant::now();
    for _ in 0..n {
        let req = std::hint::black_box(request());
        match mode {
            Mode::Reused => {
                assert!(svc.poll_ready(&mut cx).is_ready());
                finish(svc.call(req), &mut cx);
            }
            Mode::Cloned => {
                let mut s = svc.clone();
                assert!(s.poll_ready(&mut cx).is_ready());
                finish(s.call(req), &mut cx);
            }
            Mode::Oneshot => finish(svc.clone().oneshot(req), &mut cx),
        }
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

type Runner = Box<dyn FnMut(Mode, u64) -> f64 + Send>;

fn runner<S, B>(mut svc: S) -> Runner
where
    S: Service<Request<()>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    B: Body,
{
    Box::new(move |mode, n| run(&mut svc, mode, n))
}

fn contenders(c: &tower_graceful::Coordinator, tracker: &tokio_util::task::TaskTracker) -> Vec<(&'static str, Runner)> {
    vec![
        ("bare", runner(Hello)),
        ("tower-graceful full stack", runner(c.layer().layer(Hello))),
        (
            "TaskTracker::token",
            runner(GuardedLayer(TrackerSource(tracker.clone())).layer(Hello)),
        ),
        (
            "Arc<AtomicUsize> guard",
            runner(GuardedLayer(ArcSource::default()).layer(Hello)),
        ),
    ]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    let rounds = env("ROUNDS", 21);
    let iters = env("ITERS", 200_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let coordinator = tower_graceful::Coordinator::builder()
        .handle_signals(false)
        .readiness_path("/ready")
        .liveness_path("/live")
        .build()
        .unwrap();
    let tracker = tokio_util::task::TaskTracker::new();

    println!("rounds {rounds} × {iters} requests, interleaved; median ns per request\n");
    for mode in [Mode::Reused, Mode::Cloned, Mode::Oneshot] {
        let mut cs = contenders(&coordinator, &tracker);
        for (_, r) in cs.iter_mut() {
            r(mode, iters / 10); // warm up
        }
        let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cs.len()];
        for round in 0..rounds as usize {
            for k in 0..cs.len() {
                let i = (k + round) % cs.len();
                samples[i].push((cs[i].1)(mode, iters));
            }
        }
        let med: Vec<f64> = samples.into_iter().map(median).collect();
        table(&format!("1 thread, {mode:?}"), &cs, &med);
    }

    // Two threads at once, each its own clones (as two worker threads).
    println!("\n2 threads at once (each thread's median), Cloned:");
    let names: Vec<&str> = contenders(&coordinator, &tracker).iter().map(|c| c.0).collect();
    let mut two = Vec::new();
    for k in 0..names.len() {
        let per_thread: Vec<f64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..2)
                .map(|_| {
                    let mut cs = contenders(&coordinator, &tracker);
                    s.spawn(move || {
                        let r = &mut cs[k].1;
                        r(Mode::Cloned, iters / 10);
                        median((0..rounds / 2 + 1).map(|_| r(Mode::Cloned, iters)).collect())
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        two.push(per_thread.iter().sum::<f64>() / 2.0);
    }
    for (n, v) in names.iter().zip(&two) {
        println!("  {n:28} {v:7.1} ns");
    }

    println!("\nallocations per request (Cloned, {iters} requests):");
    for (name, mut r) in contenders(&coordinator, &tracker) {
        r(Mode::Cloned, 1000);
        let before = ALLOCS.load(Ordering::Relaxed);
        r(Mode::Cloned, iters);
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        println!("  {name:28} {:.3}", n as f64 / iters as f64);
    }
}

fn table(title: &str, cs: &[(&'static str, Runner)], med: &[f64]) {
    let bare = med[0];
    let token = med[2] - bare;
    let arc = med[3] - bare;
    println!("{title}");
    println!("  | contender | ns/request | added | ÷ token | ÷ Arc guard |");
    println!("  |---|---:|---:|---:|---:|");
    for ((name, _), m) in cs.iter().zip(med) {
        let added = m - bare;
        println!(
            "  | {name} | {m:.1} | {added:+.1} | {:.2} | {:.2} |",
            added / token,
            added / arc
        );
    }
    println!();
}
