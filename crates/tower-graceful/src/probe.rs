//! Readiness and liveness for load balancers and orchestrators.
//!
//! * **Readiness** answers `200 ready` while serving and every
//!   [`ReadinessGate`] is ready; `503 not ready: <gate>` while a gate is not;
//!   `503 draining` from the moment shutdown is triggered (before the
//!   pre-drain delay, so balancers stop sending new work while the instance
//!   still serves it).
//! * **Liveness** answers `200 live` through the whole shutdown, so an
//!   orchestrator does not kill a pod that is draining on purpose.
//!
//! Both answer `GET` and `HEAD` (`HEAD` with no body) and `405` otherwise.
//! Bodies say only the state; no configuration, versions or request data.
//! Use [`ReadinessService`] / [`LivenessService`] as route services, or
//! [`ProbeLayer`] to answer fixed paths in front of any service.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::FixedBody;
use crate::drain::{Answer, ResponseBody as EitherBody};
use crate::state::{Gate, ReadinessStatus, Shared, SharedRef};
use crate::sync::{lock, Arc};
use crate::Coordinator;

/// Handle for app-controlled readiness: create gates, read the status.
///
/// Readiness and liveness for load balancers and orchestrators.
///
/// * **Readiness** answers `200 ready` while serving and every
///   [`ReadinessGate`] is ready; `503 not ready: <gate>` while a gate is not;
///   `503 draining` from the moment shutdown is triggered (before the
///   pre-drain delay, so balancers stop sending new work while the instance
///   still serves it).
/// * **Liveness** answers `200 live` through the whole shutdown, so an
///   orchestrator does not kill a pod that is draining on purpose.
///
/// Both answer `GET` and `HEAD` (`HEAD` with no body) and `405` otherwise.
/// Bodies say only the state; no configuration, versions or request data.
/// Use [`ReadinessService`] / [`LivenessService`] as route services, or
/// [`ProbeLayer`] to answer fixed paths in front of any service.
#[derive(Clone)]
pub struct Readiness {
    shared: SharedRef,
}

impl fmt::Debug for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Readiness")
            .field("status", &self.status())
            .finish()
    }
}

impl Readiness {
    pub(crate) fn new(shared: SharedRef) -> Self {
        Self { shared }
    }

    /// Adds a gate, initially **not ready** (warm-up, a dependency that is not
    /// connected yet). Readiness is up only while every gate is ready.
    /// Dropping the gate removes it, so a forgotten gate cannot hold the
    /// instance out of rotation forever.
    pub fn gate(&self, name: impl Into<Cow<'static, str>>) -> ReadinessGate {
        let mut g = lock(&self.shared.gates);
        let id = g.next_id;
        g.next_id += 1;
        g.gates.push(Gate {
            id,
            name: name.into(),
            ready: false,
        });
        drop(g);
        self.shared.gates_changed();
        ReadinessGate {
            shared: self.shared.clone(),
            id,
        }
    }

    /// The current status, as the probe would answer it.
    pub fn status(&self) -> ReadinessStatus {
        self.shared.readiness()
    }
}

/// One app-controlled readiness condition. See [`Readiness::gate`].
#[must_use = "dropping the gate removes it at once: keep it for as long as it should hold readiness"]
pub struct ReadinessGate {
    shared: SharedRef,
    id: u64,
}

impl ReadinessGate {
    /// Marks the gate ready or not ready.
    pub fn set_ready(&self, ready: bool) {
        let changed = {
            let mut g = lock(&self.shared.gates);
            match g.gates.iter_mut().find(|g| g.id == self.id) {
                Some(gate) if gate.ready != ready => {
                    tracing::info!(target: "tower_graceful", gate = %gate.name, ready, "readiness gate changed");
                    gate.ready = ready;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.shared.gates_changed();
        }
    }

    /// Whether this gate is ready.
    pub fn is_ready(&self) -> bool {
        let g = lock(&self.shared.gates);
        g.gates.iter().any(|g| g.id == self.id && g.ready)
    }
}

impl Drop for ReadinessGate {
    fn drop(&mut self) {
        lock(&self.shared.gates).gates.retain(|g| g.id != self.id);
        self.shared.gates_changed();
    }
}

impl fmt::Debug for ReadinessGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessGate")
            .field("ready", &self.is_ready())
            .finish()
    }
}

fn probe_response(method: &Method, ok: bool, text: Bytes) -> Response<FixedBody> {
    if method != Method::GET && method != Method::HEAD {
        let mut res = Response::new(FixedBody::empty());
        *res.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        res.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return res;
    }
    let body = if method == Method::HEAD {
        FixedBody::empty()
    } else {
        FixedBody::new(text)
    };
    let mut res = Response::new(body);
    if !ok {
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    let h = res.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

pub(crate) fn readiness_response(shared: &Shared, method: &Method) -> Response<FixedBody> {
    let status = shared.readiness();
    let text = match &status {
        ReadinessStatus::Ready => Bytes::from_static(b"ready\n"),
        ReadinessStatus::ShuttingDown => Bytes::from_static(b"draining\n"),
        other => Bytes::from(format!("{other}\n")),
    };
    probe_response(method, status.is_ready(), text)
}

pub(crate) fn liveness_response(method: &Method) -> Response<FixedBody> {
    probe_response(method, true, Bytes::from_static(b"live\n"))
}

/// A tower service answering the readiness probe (see [`Readiness`]).
/// Works with axum's `route_service`.
#[derive(Clone)]
pub struct ReadinessService {
    shared: SharedRef,
}

impl ReadinessService {
    /// The readiness probe of `coordinator`.
    pub fn new(coordinator: &Coordinator) -> Self {
        Self {
            shared: coordinator.shared.clone(),
        }
    }
}

impl fmt::Debug for ReadinessService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadinessService").finish_non_exhaustive()
    }
}

impl<B> Service<Request<B>> for ReadinessService {
    type Response = Response<FixedBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(readiness_response(&self.shared, req.method())))
    }
}

/// A tower service answering the liveness probe: `200 live` through the whole
/// shutdown.
#[derive(Clone, Debug, Default)]
pub struct LivenessService {
    _priv: (),
}

impl LivenessService {
    /// The liveness probe.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<B> Service<Request<B>> for LivenessService {
    type Response = Response<FixedBody>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(Ok(liveness_response(req.method())))
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct ProbePaths {
    pub(crate) ready: Option<Arc<str>>,
    pub(crate) live: Option<Arc<str>>,
}

/// Layer that answers the readiness and liveness paths before the inner
/// service sees the request. Placed outside [`Drain`](crate::Drain), the
/// probes keep answering while everything else is rejected.
#[derive(Clone)]
pub struct ProbeLayer {
    shared: &'static Shared,
    paths: &'static ProbePaths,
}

impl ProbeLayer {
    /// Probes with the paths from `coordinator`'s builder
    /// ([`readiness_path`](crate::Builder::readiness_path),
    /// [`liveness_path`](crate::Builder::liveness_path)).
    pub fn new(coordinator: &Coordinator) -> Self {
        Self {
            shared: coordinator.shared_static(),
            paths: &coordinator.config().probes,
        }
    }
}

impl fmt::Debug for ProbeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeLayer")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ProbeLayer {
    type Service = Probes<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Probes {
            inner,
            shared: self.shared,
            paths: self.paths,
        }
    }
}

/// Middleware answering the probe paths; everything else goes to `S`.
#[derive(Clone)]
pub struct Probes<S> {
    inner: S,
    shared: &'static Shared,
    paths: &'static ProbePaths,
}

impl<S> Probes<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug> fmt::Debug for Probes<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probes")
            .field("inner", &self.inner)
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Probes<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Data: From<Bytes>,
{
    type Response = Response<EitherBody<ResBody>>;
    type Error = S::Error;
    type Future = crate::drain::ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match self
            .paths
            .answer(self.shared, req.uri().path(), req.method())
        {
            Some(answer) => crate::drain::ResponseFuture::answered(answer),
            None => crate::drain::ResponseFuture::inner(self.inner.call(req), None),
        }
    }
}

impl ProbePaths {
    /// The probe answer for `req`, if its path is a probe path.
    #[inline]
    pub(crate) fn answer(
        &self,
        shared: &'static Shared,
        path: &str,
        method: &Method,
    ) -> Option<Answer> {
        if self.ready.as_deref() == Some(path) {
            return Some(Answer::Ready {
                shared,
                method: ProbeMethod::of(method),
            });
        }
        if self.live.as_deref() == Some(path) {
            return Some(Answer::Live {
                method: ProbeMethod::of(method),
            });
        }
        None
    }
}

/// What a probe answer depends on of the request's method (one byte in the
/// response future instead of a `Method`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ProbeMethod {
    Get,
    Head,
    Other,
}

impl ProbeMethod {
    #[inline]
    fn of(method: &Method) -> Self {
        if method == Method::GET {
            ProbeMethod::Get
        } else if method == Method::HEAD {
            ProbeMethod::Head
        } else {
            ProbeMethod::Other
        }
    }

    pub(crate) fn method(self) -> Method {
        match self {
            ProbeMethod::Get => Method::GET,
            ProbeMethod::Head => Method::HEAD,
            // Any other method gets the same `405`.
            ProbeMethod::Other => Method::POST,
        }
    }
}
