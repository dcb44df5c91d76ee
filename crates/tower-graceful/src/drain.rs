//! The draining responder: what happens to requests and connections once
//! shutdown has been triggered.
//!
//! # Connections: the lame duck
//!
//! From the trigger on, HTTP/1.x responses announce `Connection: close`, so
//! each keep-alive connection is closed cleanly after its next response and
//! its client reconnects (through the load balancer, to another instance).
//! By default the share of responses that announce it rises from 0 to 1
//! over the pre-drain delay (Envoy's gradual drain), so reconnections do not
//! land elsewhere as one burst; from the start of draining every response
//! announces it. HTTP/2 responses never carry it (the header is forbidden
//! there): HTTP/2 connections get GOAWAY from the server
//! ([`serve`](crate::serve) sends it at the trigger). `101 Switching
//! Protocols` responses are left alone.
//!
//! # Requests: served, or turned away
//!
//! A request is never turned away because its client should have known
//! better: an L4 balancer or a connection pool keeps sending on connections
//! it already has, and the client could not have sent it elsewhere. So,
//! while draining:
//!
//! | the request arrives …                                   | it gets |
//! |---------------------------------------------------------|---------|
//! | before draining (serving, or during the pre-drain delay) | served (HTTP/1.x: `Connection: close`, with the rising share) |
//! | while draining, with time left before the deadline       | served, counted (the drain waits for it), `Connection: close` |
//! | while draining, with less than `min_time_left` left      | the rejection: it could not finish anyway |
//! | after the forced stop began (deadline, second signal)    | the rejection |
//! | after the drain completed (nothing was left in flight)    | the rejection: the process is closing |
//! | on an exempt path (probes, metrics)                      | always served |
//!
//! One more case keeps the drain open a moment: an HTTP/1.x response whose
//! head went out before the trigger (a stream, a long download) and that
//! ends while draining never announced the close, so its client may send
//! the next request on that connection at once. The combined layer holds
//! the drain for [`Builder::reuse_grace`](crate::Builder::reuse_grace) after
//! such a response, so that request is served (close announced) instead of
//! racing the close of an idle connection at the end of the drain.
//!
//! The rejection:
//!
//! * HTTP: `503 Service Unavailable`, `Retry-After` (seconds, optionally
//!   jittered so rejected clients do not return as one burst), `Connection:
//!   close` on HTTP/1.x (so the client's retry opens a new connection, which a
//!   load balancer sends elsewhere), and a short `text/plain` body.
//! * gRPC (`content-type: application/grpc*`): `200 OK` trailers-only with
//!   `grpc-status: 14` (UNAVAILABLE) and a `grpc-message`; gRPC clients treat
//!   UNAVAILABLE as retryable.
//!
//! "The drain completed" is decided by the counter itself
//! ([`InFlight`](crate::InFlight)): a claim after the count reached zero is
//! refused in the same atomic step that would have counted it, so no request
//! is served after [`Coordinator::drained`](crate::Coordinator::drained)
//! resolved, whatever sits between the layers. [`Drain`] alone (without a
//! counter inside it) reads the drained latch instead.
//!
//! A request that was already accepted is never touched; only the deadline
//! cancels work. The service never returns an error for a rejection: it is a
//! response. Nothing in the rejection depends on the request's size or
//! content (no echo, no allocation proportional to what the client sent).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use http::{Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::body::FixedBody;
use crate::probe::ProbeMethod;
use crate::state::Shared;
use crate::sync::Arc;
use crate::Coordinator;

const GRPC_UNAVAILABLE: HeaderValue = HeaderValue::from_static("14");
const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const CLOSE: HeaderValue = HeaderValue::from_static("close");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// What a custom rejection function sees of the rejected request: enough to
/// pick a format, nothing to echo.
#[derive(Debug)]
pub struct RejectContext<'a> {
    version: Version,
    grpc: bool,
    retry_after: &'a HeaderValue,
    path: &'a str,
}

impl RejectContext<'_> {
    /// The request's HTTP version.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the request is gRPC (`content-type: application/grpc*`).
    pub fn is_grpc(&self) -> bool {
        self.grpc
    }

    /// The `Retry-After` value this rejection would carry (already jittered).
    pub fn retry_after(&self) -> &HeaderValue {
        self.retry_after
    }

    /// The request path, for routing the choice of response. Do not echo it
    /// into the response.
    pub fn path(&self) -> &str {
        self.path
    }
}

type Custom = dyn Fn(&RejectContext<'_>) -> Response<Bytes> + Send + Sync;

/// The validated rejection settings (built by the coordinator's builder).
#[derive(Clone)]
pub(crate) struct RejectConfig {
    /// `Retry-After` values for base, base+1, … base+jitter seconds.
    pub(crate) retry_after: Arc<[HeaderValue]>,
    pub(crate) body: Bytes,
    /// The rejection's headers, built once and cloned per rejection (two
    /// allocations and a copy instead of hashing and inserting each header):
    /// HTTP/1.x (with `Connection: close`), HTTP/2+, gRPC.
    templates: Arc<[HeaderMap; 3]>,
    pub(crate) exempt: Arc<[String]>,
    pub(crate) custom: Option<Arc<Custom>>,
}

impl fmt::Debug for RejectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectConfig")
            .field("retry_after", &self.retry_after.first())
            .field("jitter_choices", &self.retry_after.len())
            .field("exempt", &self.exempt)
            .field("custom", &self.custom.is_some())
            .finish()
    }
}

impl RejectConfig {
    pub(crate) fn new(
        retry_after_secs: u32,
        jitter_secs: u32,
        body: Bytes,
        grpc_message: HeaderValue,
        exempt: Vec<String>,
    ) -> Self {
        // Built once per coordinator and kept for the process, as `'static`
        // values: cloning a static `HeaderValue` or `Bytes` copies a pointer,
        // where a shared one would bump a reference count on a cache line
        // that every core's rejections touch.
        let retry_after: Arc<[HeaderValue]> = (retry_after_secs..=retry_after_secs + jitter_secs)
            .map(|s| HeaderValue::from_static(Box::leak(s.to_string().into_boxed_str())))
            .collect();
        let body = Bytes::from_static(Box::leak(body.to_vec().into_boxed_slice()));
        let grpc_message = HeaderValue::from_static(Box::leak(
            grpc_message
                .to_str()
                .unwrap_or("unavailable")
                .to_owned()
                .into_boxed_str(),
        ));
        let content_length =
            HeaderValue::from_static(Box::leak(body.len().to_string().into_boxed_str()));
        let templates = Arc::new(Self::templates(
            &retry_after[0],
            &content_length,
            &grpc_message,
        ));
        Self {
            retry_after,
            body,
            templates,
            exempt: exempt.into(),
            custom: None,
        }
    }

    /// A copy with a custom rejection.
    pub(crate) fn with_custom<F>(&self, f: F) -> Self
    where
        F: Fn(&RejectContext<'_>) -> Response<Bytes> + Send + Sync + 'static,
    {
        let mut config = self.clone();
        config.custom = Some(Arc::new(f));
        config
    }

    /// A copy with one more exempt path.
    pub(crate) fn with_exempt(&self, path: String) -> Self {
        let mut config = self.clone();
        let mut v: Vec<String> = config.exempt.iter().cloned().collect();
        v.push(path);
        config.exempt = v.into();
        config
    }

    #[inline]
    pub(crate) fn is_exempt(&self, path: &str) -> bool {
        self.exempt.iter().any(|p| p == path)
    }

    fn pick_retry_after(&self) -> &HeaderValue {
        let n = self.retry_after.len();
        if n == 1 {
            &self.retry_after[0]
        } else {
            &self.retry_after[jitter(n)]
        }
    }

    /// Decides the rejection of `req`; the response itself is built when the
    /// future is polled ([`Answer::into_response`]), which keeps every
    /// response future of the stack small.
    #[inline]
    pub(crate) fn reject<B>(&'static self, req: &Request<B>) -> Answer {
        let grpc = req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if let Some(custom) = &self.custom {
            let retry_after = self.pick_retry_after();
            let mut res = custom(&RejectContext {
                version: req.version(),
                grpc,
                retry_after,
                path: req.uri().path(),
            });
            // What makes the rejection retryable elsewhere stays, unless the
            // function set these headers itself: gRPC answers keep theirs
            // as they are (trailers-only status is the function's business).
            if !grpc {
                let h = res.headers_mut();
                if !h.contains_key(RETRY_AFTER) {
                    h.insert(RETRY_AFTER, retry_after.clone());
                }
                if req.version() <= Version::HTTP_11 && !h.contains_key(CONNECTION) {
                    h.insert(CONNECTION, CLOSE);
                }
            }
            return Answer::Custom(Box::new(res));
        }
        Answer::Reject {
            config: self,
            version: req.version(),
            grpc,
        }
    }

    fn templates(
        retry_after: &HeaderValue,
        content_length: &HeaderValue,
        grpc_message: &HeaderValue,
    ) -> [HeaderMap; 3] {
        let mut h2 = HeaderMap::with_capacity(4);
        h2.insert(RETRY_AFTER, retry_after.clone());
        h2.insert(CONTENT_TYPE, TEXT_PLAIN);
        h2.insert(CONTENT_LENGTH, content_length.clone());
        let mut h1 = h2.clone();
        // Only HTTP/1.x has connection-level headers; HTTP/2 and 3 forbid
        // them (the server's GOAWAY does the job there).
        h1.insert(CONNECTION, CLOSE);
        // Trailers-only: status in the headers, empty body.
        let mut grpc = HeaderMap::with_capacity(3);
        grpc.insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
        grpc.insert(GRPC_STATUS, GRPC_UNAVAILABLE);
        grpc.insert(GRPC_MESSAGE, grpc_message.clone());
        [h1, h2, grpc]
    }

    fn response(&self, version: Version, grpc: bool) -> Response<Bytes> {
        let mut res = Response::new(Bytes::new());
        *res.version_mut() = version;
        if grpc {
            *res.headers_mut() = self.templates[2].clone();
        } else {
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let h1 = version <= Version::HTTP_11;
            let h = res.headers_mut();
            *h = self.templates[usize::from(!h1)].clone();
            if self.retry_after.len() > 1 {
                // Jittered: replaces the template's value in place.
                h.insert(RETRY_AFTER, self.pick_retry_after().clone());
            }
            *res.body_mut() = self.body.clone();
        }
        res
    }
}

/// A response decided without calling the inner service (a rejection or a
/// probe answer). Small on purpose: it sits in a variant of the response
/// future beside the inner service's future, so its size is paid on every
/// request; the response is built from it when the future is polled.
pub(crate) enum Answer {
    Reject {
        config: &'static RejectConfig,
        version: Version,
        grpc: bool,
    },
    /// From [`DrainLayer::respond_with`]: built at `call` (it sees the path).
    Custom(Box<Response<Bytes>>),
    Ready {
        shared: &'static Shared,
        method: ProbeMethod,
    },
    Live {
        method: ProbeMethod,
    },
}

impl Answer {
    #[cold]
    #[inline(never)]
    pub(crate) fn into_response(self) -> Response<Bytes> {
        match self {
            Answer::Reject {
                config,
                version,
                grpc,
            } => config.response(version, grpc),
            Answer::Custom(res) => *res,
            Answer::Ready { shared, method } => {
                crate::probe::readiness_response(shared, &method.method())
                    .map(FixedBody::into_bytes)
            }
            Answer::Live { method } => {
                crate::probe::liveness_response(&method.method()).map(FixedBody::into_bytes)
            }
        }
    }
}

/// A cheap per-thread xorshift; jitter and the lame duck's share need
/// spread, not secrecy.
fn random_u64() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0x9E37_79B9_7F4A_7C15);
            let addr = &t as *const u64 as u64;
            (t ^ addr.rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    })
}

/// Uniform in `[0, 1)`.
#[cfg_attr(not(feature = "serve"), allow(dead_code))]
pub(crate) fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn jitter(n: usize) -> usize {
    (random_u64() % n as u64) as usize
}

/// Whether a response now announces `Connection: close`: always from the
/// start of draining (or with no window); before that, with a probability
/// that rises linearly from 0 at the trigger to 1 at the end of the window.
pub(crate) fn announces_close(shared: &Shared) -> bool {
    if shared.draining() {
        return true;
    }
    let window = shared.policy.lame_duck_window;
    let Some(t0) = shared.triggered_at.get() else {
        return true;
    };
    let elapsed = t0.elapsed();
    if window.is_zero() || elapsed >= window {
        return true;
    }
    let window = window.as_nanos() as u64;
    random_u64() % window < elapsed.as_nanos() as u64
}

/// The lame duck, on one HTTP/1.x response once shutdown was triggered.
#[cold]
#[inline(never)]
pub(crate) fn announce_close(shared: &Shared, head: &mut http::response::Parts) -> bool {
    if head.status == StatusCode::SWITCHING_PROTOCOLS || !announces_close(shared) {
        return head.headers.get(CONNECTION).is_some_and(|v| v == CLOSE);
    }
    if head.headers.insert(CONNECTION, CLOSE).is_none() {
        shared.tracker.count_close();
    }
    true
}

/// Layer that applies [`Drain`].
#[derive(Clone)]
pub struct DrainLayer {
    shared: &'static Shared,
    config: &'static RejectConfig,
}

impl DrainLayer {
    /// Rejects new requests once `coordinator` is draining, with the
    /// rejection settings from its builder.
    pub fn new(coordinator: &Coordinator) -> Self {
        Self {
            shared: coordinator.shared_static(),
            config: &coordinator.config().reject,
        }
    }

    /// Adds an exact path that is always passed through (for example a
    /// metrics route). The builder's [`exempt_path`](crate::Builder::exempt_path)
    /// validates paths; this adds one without checks.
    ///
    /// Like the coordinator, a configured layer lives for the whole process
    /// (services hold a `&'static` to it so per-request clones are free):
    /// configure layers at start-up, not per request.
    pub fn exempt(mut self, path: impl Into<String>) -> Self {
        self.config = Box::leak(Box::new(self.config.with_exempt(path.into())));
        self
    }

    /// Replaces the built-in rejection with your own response (for example
    /// JSON in your API's error format). It is called once per rejected
    /// request; keep it cheap and do not echo the request. `Retry-After` and,
    /// on HTTP/1.x, `Connection: close` are added to an HTTP response that
    /// does not set them itself (set them to opt out).
    pub fn respond_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&RejectContext<'_>) -> Response<Bytes> + Send + Sync + 'static,
    {
        self.config = Box::leak(Box::new(self.config.with_custom(f)));
        self
    }
}

impl fmt::Debug for DrainLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainLayer")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for DrainLayer {
    type Service = Drain<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Drain {
            inner,
            shared: self.shared,
            config: self.config,
        }
    }
}

/// Middleware that announces the close on HTTP/1.x connections once
/// shutdown is triggered, and turns away the requests that could not be
/// served while draining with a retryable rejection.
///
/// See the [module docs](crate::drain) for the policy table. Place it
/// outside [`InFlight`](crate::InFlight) (as
/// [`Coordinator::layer`](crate::Coordinator::layer) does).
#[derive(Clone)]
pub struct Drain<S> {
    inner: S,
    shared: &'static Shared,
    config: &'static RejectConfig,
}

impl<S> Drain<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, coordinator: &Coordinator) -> Self {
        DrainLayer::new(coordinator).layer(inner)
    }

    /// Returns a [`Layer`] that wraps services with this middleware.
    pub fn layer(coordinator: &Coordinator) -> DrainLayer {
        DrainLayer::new(coordinator)
    }

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

impl<S: fmt::Debug> fmt::Debug for Drain<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Drain<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: Body,
    ResBody::Data: From<Bytes>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = self.shared;
        if turn_away_uncounted(shared, self.config, req.uri().path()) {
            return rejected(shared, self.config, &req);
        }
        let h1 = req.version() <= Version::HTTP_11;
        ResponseFuture::inner(self.inner.call(req), h1.then_some(shared))
    }
}

/// While draining, for a request that no counter has admitted (it cannot be
/// refused by one: [`Drain`] alone, untracked paths): while draining, turned
/// away once the drain completed, or when it could not finish; exempt paths
/// always pass. One phase load unless draining.
#[inline]
pub(crate) fn turn_away_uncounted(shared: &Shared, config: &RejectConfig, path: &str) -> bool {
    shared.draining() && turn_away_while_draining(shared) && !config.is_exempt(path)
}

#[cold]
fn turn_away_while_draining(shared: &Shared) -> bool {
    shared.tracker.is_drained() || shared.too_late()
}

/// Counts, logs and answers one draining rejection (for [`Drain`], the
/// counter and the fused [`Graceful`](crate::Graceful)).
#[cold]
#[inline(never)]
pub(crate) fn rejected<B, F>(
    shared: &Shared,
    config: &'static RejectConfig,
    req: &Request<B>,
) -> ResponseFuture<F> {
    ResponseFuture::answered(rejection(shared, config, req))
}

/// Counts and logs one draining rejection, and decides its response.
#[cold]
#[inline(never)]
pub(crate) fn rejection<B>(
    shared: &Shared,
    config: &'static RejectConfig,
    req: &Request<B>,
) -> Answer {
    shared.count_rejected();
    tracing::debug!(
        target: "tower_graceful",
        method = %req.method(),
        path = req.uri().path(),
        "rejected: draining"
    );
    config.reject(req)
}

pin_project! {
    /// Response future of [`Drain`].
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner { #[pin] fut: F },
        // An HTTP/1.x request through `Drain`: the lame duck may announce the
        // close. (The fused service does that in the counted future, where
        // the response is rebuilt anyway, so its requests use `Inner`.)
        LameDuck { #[pin] fut: F, shared: &'static Shared },
        Answered { answer: Option<Answer> },
    }
}

impl<F> ResponseFuture<F> {
    /// The inner service's future; `lame_duck` for HTTP/1.x requests.
    #[inline]
    pub(crate) fn inner(fut: F, lame_duck: Option<&'static Shared>) -> Self {
        Self {
            kind: match lame_duck {
                None => Kind::Inner { fut },
                Some(shared) => Kind::LameDuck { fut, shared },
            },
        }
    }

    /// A response decided without calling the inner service.
    #[inline]
    pub(crate) fn answered(answer: Answer) -> Self {
        Self {
            kind: Kind::Answered {
                answer: Some(answer),
            },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    // Always: out of line, the whole response is returned through memory
    // (measured: +100 instructions per request with `icount`).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut } => {
                let res = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(res.map(|inner| ResponseBody {
                    kind: BodyKind::Inner { inner },
                })))
            }
            KindProj::LameDuck { fut, shared } => {
                let res = ready!(fut.poll(cx))?;
                let (mut head, inner) = res.into_parts();
                if shared.triggered() {
                    let _ = announce_close(shared, &mut head);
                }
                Poll::Ready(Ok(Response::from_parts(
                    head,
                    ResponseBody {
                        kind: BodyKind::Inner { inner },
                    },
                )))
            }
            KindProj::Answered { answer } => {
                let res = answer
                    .take()
                    .expect("polled after completion")
                    .into_response();
                Poll::Ready(Ok(res.map(|data| ResponseBody {
                    kind: BodyKind::Answered {
                        data: (!data.is_empty()).then_some(data),
                    },
                })))
            }
        }
    }
}

pin_project! {
    /// Response body of [`Drain`]: the inner body, or the rejection's.
    pub struct ResponseBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Inner { #[pin] inner: B },
        Answered { data: Option<Bytes> },
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody").finish_non_exhaustive()
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    // Always, like the future's `poll`: out of line it costs ~100
    // instructions per request (`icount`).
    #[inline(always)]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            BodyProj::Inner { inner } => inner.poll_frame(cx),
            BodyProj::Answered { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(B::Data::from(d)))))
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { inner } => inner.is_end_stream(),
            BodyKind::Answered { data } => data.is_none(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { inner } => inner.size_hint(),
            BodyKind::Answered { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
