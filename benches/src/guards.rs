//! Hand-written and third-party in-flight guards, wrapped in one generic
//! middleware so that every peer is measured with the same shape as
//! tower-graceful's `InFlight`: the guard is taken in `call`, held by the
//! response future, moved into the response body and released when the body
//! ends or is dropped.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

/// Something that hands out one guard per request.
pub trait GuardSource: Clone + Send + Sync + 'static {
    /// Released on drop.
    type Guard: Send + 'static;
    /// Takes one guard.
    fn acquire(&self) -> Self::Guard;
}

/// The naive floor: one `fetch_add` / `fetch_sub` on a counter that lives for
/// the whole program (no reference count to move).
#[derive(Clone, Copy, Debug)]
pub struct StaticAtomic(pub &'static AtomicUsize);

impl StaticAtomic {
    /// A fresh leaked counter.
    pub fn leak() -> Self {
        Self(Box::leak(Box::new(AtomicUsize::new(0))))
    }
}

/// Guard of [`StaticAtomic`].
#[derive(Debug)]
pub struct StaticAtomicGuard(&'static AtomicUsize);

impl Drop for StaticAtomicGuard {
    #[inline]
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GuardSource for StaticAtomic {
    type Guard = StaticAtomicGuard;
    #[inline]
    fn acquire(&self) -> StaticAtomicGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        StaticAtomicGuard(self.0)
    }
}

/// The usual hand-written guard: an `Arc<AtomicUsize>` cloned into every
/// request (two atomic RMWs to take it, two to release it).
#[derive(Clone, Debug, Default)]
pub struct ArcCounter(pub Arc<AtomicUsize>);

/// Guard of [`ArcCounter`].
#[derive(Debug)]
pub struct ArcGuard(Arc<AtomicUsize>);

impl Drop for ArcGuard {
    #[inline]
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl GuardSource for ArcCounter {
    type Guard = ArcGuard;
    #[inline]
    fn acquire(&self) -> ArcGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        ArcGuard(self.0.clone())
    }
}

/// tokio-util's `TaskTracker::token()` per request.
#[derive(Clone, Debug, Default)]
pub struct Tracker(pub tokio_util::task::TaskTracker);

impl GuardSource for Tracker {
    type Guard = tokio_util::task::task_tracker::TaskTrackerToken;
    #[inline]
    fn acquire(&self) -> Self::Guard {
        self.0.token()
    }
}

/// tokio-graceful: a `ShutdownGuard` clone per request.
#[derive(Clone, Debug)]
pub struct TokioGraceful(pub tokio_graceful::ShutdownGuard);

impl GuardSource for TokioGraceful {
    type Guard = tokio_graceful::ShutdownGuard;
    #[inline]
    fn acquire(&self) -> Self::Guard {
        self.0.clone()
    }
}

/// Applies [`Guarded`].
#[derive(Clone, Debug)]
pub struct GuardLayer<G>(pub G);

impl<S, G: GuardSource> Layer<S> for GuardLayer<G> {
    type Service = Guarded<S, G>;
    fn layer(&self, inner: S) -> Self::Service {
        Guarded {
            inner,
            source: self.0.clone(),
        }
    }
}

/// Holds one guard of `G` per request until the response body ends.
#[derive(Clone, Debug)]
pub struct Guarded<S, G> {
    inner: S,
    source: G,
}

impl<S, G, ReqBody, ResBody> Service<Request<ReqBody>> for Guarded<S, G>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    G: GuardSource,
    ResBody: Body,
{
    type Response = Response<GuardBody<ResBody, G::Guard>>;
    type Error = S::Error;
    type Future = GuardFuture<S::Future, G::Guard>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let guard = self.source.acquire();
        GuardFuture {
            inner: self.inner.call(req),
            guard: Some(guard),
        }
    }
}

pin_project! {
    /// Response future of [`Guarded`].
    pub struct GuardFuture<F, T> {
        #[pin]
        inner: F,
        guard: Option<T>,
    }
}

impl<F, T, B, E> Future for GuardFuture<F, T>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<GuardBody<B, T>>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(res.map(|inner| {
            let guard = if inner.is_end_stream() { None } else { guard };
            GuardBody { inner, guard }
        })))
    }
}

pin_project! {
    /// Response body of [`Guarded`]: releases the guard at the end.
    pub struct GuardBody<B, T> {
        #[pin]
        inner: B,
        guard: Option<T>,
    }
}

impl<B, T> fmt::Debug for GuardBody<B, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardBody").finish_non_exhaustive()
    }
}

impl<B: Body, T> Body for GuardBody<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let frame = ready!(inner.as_mut().poll_frame(cx));
        let done = match &frame {
            None | Some(Err(_)) => true,
            Some(Ok(_)) => inner.is_end_stream(),
        };
        if done {
            this.guard.take();
        }
        Poll::Ready(frame)
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
