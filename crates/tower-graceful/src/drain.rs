//! The draining responder.
//!
//! Once the coordinator is draining, [`Drain`] answers new requests itself
//! instead of calling the inner service:
//!
//! * HTTP: `503 Service Unavailable`, `Retry-After` (seconds, optionally
//!   jittered so rejected clients do not return as one burst), `Connection:
//!   close` on HTTP/1.x (so the client's retry opens a new connection, which a
//!   load balancer sends elsewhere), and a short `text/plain` body.
//! * gRPC (`content-type: application/grpc*`): `200 OK` trailers-only with
//!   `grpc-status: 14` (UNAVAILABLE) and a `grpc-message`; gRPC clients treat
//!   UNAVAILABLE as retryable.
//!
//! Requests that passed the check before draining began are never touched.
//! Exempt paths (probes, metrics) always pass. The service never returns an
//! error for a rejection: it is a response.
//!
//! Nothing in the rejection depends on the request's size or content (no
//! echo, no allocation proportional to what the client sent).

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
            return Answer::Custom(Box::new(custom(&RejectContext {
                version: req.version(),
                grpc,
                retry_after: self.pick_retry_after(),
                path: req.uri().path(),
            })));
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

/// A cheap per-thread xorshift; jitter needs spread, not secrecy.
fn jitter(n: usize) -> usize {
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
        (x % n as u64) as usize
    })
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
    /// request; keep it cheap and do not echo the request.
    pub fn respond_with<F>(mut self, f: F) -> Self
    where
        F: Fn(&RejectContext<'_>) -> Response<Bytes> + Send + Sync + 'static,
    {
        let mut config = self.config.clone();
        config.custom = Some(Arc::new(f));
        self.config = Box::leak(Box::new(config));
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

/// Middleware that answers new requests with a retryable rejection while
/// draining.
///
/// Once the coordinator is draining, [`Drain`] answers new requests itself
/// instead of calling the inner service:
///
/// * HTTP: `503 Service Unavailable`, `Retry-After` (seconds, optionally
///   jittered so rejected clients do not return as one burst), `Connection:
///   close` on HTTP/1.x (so the client's retry opens a new connection, which a
///   load balancer sends elsewhere), and a short `text/plain` body.
/// * gRPC (`content-type: application/grpc*`): `200 OK` trailers-only with
///   `grpc-status: 14` (UNAVAILABLE) and a `grpc-message`; gRPC clients treat
///   UNAVAILABLE as retryable.
///
/// Requests that passed the check before draining began are never touched.
/// Exempt paths (probes, metrics) always pass. The service never returns an
/// error for a rejection: it is a response.
///
/// Nothing in the rejection depends on the request's size or content (no
/// echo, no allocation proportional to what the client sent).
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
        if self.shared.rejecting() && !self.config.is_exempt(req.uri().path()) {
            return rejected(self.shared, self.config, &req);
        }
        ResponseFuture::inner(self.inner.call(req))
    }
}

/// Counts, logs and answers one draining rejection (for [`Drain`] and the
/// fused [`Graceful`](crate::Graceful)).
#[cold]
#[inline(never)]
pub(crate) fn rejected<B, F>(
    shared: &Shared,
    config: &'static RejectConfig,
    req: &Request<B>,
) -> ResponseFuture<F> {
    shared.count_rejected();
    tracing::debug!(
        target: "tower_graceful",
        method = %req.method(),
        path = req.uri().path(),
        "rejected: draining"
    );
    ResponseFuture::answered(config.reject(req))
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
        Answered { answer: Option<Answer> },
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn inner(fut: F) -> Self {
        Self {
            kind: Kind::Inner { fut },
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { fut } => {
                let res = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(res.map(|inner| ResponseBody {
                    kind: BodyKind::Inner { inner },
                })))
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

    #[inline]
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
