//! What the crate answers by itself, without calling the inner service:
//! probe answers and draining rejections. One [`Answer`] (small: it sits in
//! a variant of every response future), one response future and one
//! response body shared by [`Drain`](crate::drain::Drain),
//! [`Probe`](crate::probe::Probe), [`InFlight`](crate::in_flight::InFlight)
//! and [`Graceful`](crate::Graceful), and [`FixedBody`], the body of the
//! probe services.

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{
    HeaderMap, HeaderName, HeaderValue, ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH,
    CONTENT_TYPE, RETRY_AFTER,
};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::core::readiness::ReadinessStatus;
use crate::core::state::Shared;
use crate::core::sync::Arc;
use crate::lame_duck::{announce_close, jitter, CLOSE};

const GRPC_UNAVAILABLE: HeaderValue = HeaderValue::from_static("14");
const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");
const TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// gRFC A6: how long a client's retry policy waits before its next attempt.
const GRPC_RETRY_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// `s`, kept for the process: once per distinct text (see [`intern_bytes`]).
fn intern(s: &str) -> &'static str {
    std::str::from_utf8(intern_bytes(s.as_bytes())).expect("interned from a str")
}

/// `b`, kept for the process once per distinct value: the rejection's few
/// texts (`Retry-After` seconds, body, gRPC message, length), so that
/// building coordinators again and again with the same settings (a test
/// suite) allocates nothing that stays.
fn intern_bytes(b: &[u8]) -> &'static [u8] {
    static TEXTS: std::sync::Mutex<Vec<&'static [u8]>> = std::sync::Mutex::new(Vec::new());
    let mut texts = TEXTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(t) = texts.iter().find(|t| **t == b) {
        return t;
    }
    let t: &'static [u8] = Box::leak(b.to_vec().into_boxed_slice());
    texts.push(t);
    t
}

/// Why a request gets the draining rejection (see the policy table in
/// [`drain`](crate::drain)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// The drain had completed (nothing was left in flight): the process is
    /// closing and nothing may start any more.
    DrainCompleted,
    /// The forced stop had begun (the drain deadline passed, or a second
    /// signal / [`Coordinator::force`](crate::Coordinator::force)).
    Forced,
    /// Less than [`min_time_left`](crate::Builder::min_time_left) was left
    /// before the drain deadline: the request could not finish anyway.
    TooLate,
}

impl RejectReason {
    /// A short lowercase name, as used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::DrainCompleted => "drain completed",
            RejectReason::Forced => "forced stop",
            RejectReason::TooLate => "too late for the deadline",
        }
    }

    /// Why `shared` turns a request away now (called only for a request
    /// being rejected).
    pub(crate) fn of(shared: &Shared) -> Self {
        // The hard signal fires only for a drain that did not complete (or
        // was forced): it names the forced stop even if the count reaches
        // zero afterwards. Then a completed drain; else the deadline is
        // too near.
        if shared.hard.is_cancelled() {
            RejectReason::Forced
        } else if shared.tracker.is_drained() {
            RejectReason::DrainCompleted
        } else if shared.phase() >= crate::Phase::Forced {
            RejectReason::Forced
        } else {
            RejectReason::TooLate
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a custom rejection function sees of the rejected request: enough to
/// pick a format, nothing to echo; and the built-in answer, to fall back on.
#[derive(Debug)]
pub struct RejectContext<'a> {
    version: Version,
    grpc: bool,
    reason: RejectReason,
    method: &'a Method,
    path: &'a str,
    /// Index of the (jittered) `Retry-After` value of this rejection.
    retry: usize,
    config: &'a RejectConfig,
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

    /// Why the request is turned away.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        self.method
    }

    /// The `Retry-After` value this rejection would carry (already jittered).
    pub fn retry_after(&self) -> &HeaderValue {
        &self.config.retry_after[self.retry]
    }

    /// The request path, for routing the choice of response. Do not echo it
    /// into the response.
    pub fn path(&self) -> &str {
        self.path
    }

    /// The built-in rejection of this request, with the same `Retry-After`:
    /// for HTTP `503` with `Retry-After`, `Connection: close` on HTTP/1.x
    /// and the configured body; for gRPC the trailers-only `UNAVAILABLE`
    /// with `grpc-retry-pushback-ms`. What a custom function returns for the
    /// requests it does not want to answer itself (gRPC ones, say), or
    /// starts from to add a header.
    pub fn default_response(&self) -> Response<Bytes> {
        self.config.response(self.version, self.grpc, self.retry)
    }
}

/// A custom rejection: `None` falls back to the built-in one.
type Custom = dyn Fn(&RejectContext<'_>) -> Option<Response<Bytes>> + Send + Sync;

/// The validated rejection settings (built by the coordinator's builder).
#[derive(Clone)]
pub(crate) struct RejectConfig {
    /// `Retry-After` values for base, base+1, … base+jitter seconds.
    pub(crate) retry_after: Arc<[HeaderValue]>,
    /// The same in milliseconds, for gRPC's `grpc-retry-pushback-ms`.
    pushback: Arc<[HeaderValue]>,
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
        // As `'static` values: cloning a static `HeaderValue` or `Bytes`
        // copies a pointer, where a shared one would bump a reference count
        // on a cache line that every core's rejections touch. Interned, so
        // a process keeps each distinct text once, however many
        // coordinators it builds.
        let retry_after: Arc<[HeaderValue]> = (retry_after_secs..=retry_after_secs + jitter_secs)
            .map(|s| HeaderValue::from_static(intern(&s.to_string())))
            .collect();
        let pushback: Arc<[HeaderValue]> = (retry_after_secs..=retry_after_secs + jitter_secs)
            .map(|s| HeaderValue::from_static(intern(&(u64::from(s) * 1000).to_string())))
            .collect();
        let body = Bytes::from_static(intern_bytes(&body));
        let grpc_message =
            HeaderValue::from_static(intern(grpc_message.to_str().unwrap_or("unavailable")));
        let content_length = HeaderValue::from_static(intern(&body.len().to_string()));
        let templates = Arc::new(Self::templates(
            &retry_after[0],
            &pushback[0],
            &content_length,
            &grpc_message,
        ));
        Self {
            retry_after,
            pushback,
            body,
            templates,
            exempt: exempt.into(),
            custom: None,
        }
    }

    /// A copy with a custom rejection (`None` from it: the built-in one).
    pub(crate) fn with_custom<F>(&self, f: F) -> Self
    where
        F: Fn(&RejectContext<'_>) -> Option<Response<Bytes>> + Send + Sync + 'static,
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

    /// The index of this rejection's `Retry-After` (jittered).
    fn pick_retry_after(&self) -> usize {
        let n = self.retry_after.len();
        if n == 1 {
            0
        } else {
            jitter(n)
        }
    }

    /// Decides the rejection of `req` (turned away for `reason`); the
    /// built-in response is built when the future is polled
    /// ([`Answer::into_response`]), which keeps every response future of
    /// the stack small.
    #[inline]
    pub(crate) fn reject<B>(&self, req: &Request<B>, reason: RejectReason) -> Answer {
        let grpc = req
            .headers()
            .get(CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        if let Some(custom) = &self.custom {
            let retry = self.pick_retry_after();
            let ctx = RejectContext {
                version: req.version(),
                grpc,
                reason,
                method: req.method(),
                path: req.uri().path(),
                retry,
                config: self,
            };
            let Some(mut res) = custom(&ctx) else {
                return Answer::Custom(Box::new(ctx.default_response()));
            };
            // What makes the rejection retryable elsewhere stays, unless the
            // function set these headers itself: gRPC answers keep theirs
            // as they are (trailers-only status is the function's business).
            if !grpc {
                let h = res.headers_mut();
                if !h.contains_key(RETRY_AFTER) {
                    h.insert(RETRY_AFTER, self.retry_after[retry].clone());
                }
                if req.version() <= Version::HTTP_11 && !h.contains_key(CONNECTION) {
                    h.insert(CONNECTION, CLOSE);
                }
            }
            return Answer::Custom(Box::new(res));
        }
        Answer::Reject {
            config: self.clone(),
            version: req.version(),
            grpc,
        }
    }

    fn templates(
        retry_after: &HeaderValue,
        pushback: &HeaderValue,
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
        // Trailers-only: status in the headers, empty body. The retry hint
        // is gRFC A6's pushback: a client whose retry policy lists
        // UNAVAILABLE waits that long before its next attempt (which its
        // balancer sends to another backend); the same time as the HTTP
        // answer's `Retry-After`.
        let mut grpc = HeaderMap::with_capacity(4);
        grpc.insert(CONTENT_TYPE, GRPC_CONTENT_TYPE);
        grpc.insert(GRPC_STATUS, GRPC_UNAVAILABLE);
        grpc.insert(GRPC_MESSAGE, grpc_message.clone());
        grpc.insert(GRPC_RETRY_PUSHBACK, pushback.clone());
        [h1, h2, grpc]
    }

    /// The built-in rejection, with the `retry`-th `Retry-After` value.
    fn response(&self, version: Version, grpc: bool, retry: usize) -> Response<Bytes> {
        let mut res = Response::new(Bytes::new());
        *res.version_mut() = version;
        let jittered = self.retry_after.len() > 1;
        if grpc {
            let h = res.headers_mut();
            *h = self.templates[2].clone();
            if jittered {
                h.insert(GRPC_RETRY_PUSHBACK, self.pushback[retry].clone());
            }
        } else {
            *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            let h1 = version <= Version::HTTP_11;
            let h = res.headers_mut();
            *h = self.templates[usize::from(!h1)].clone();
            if jittered {
                // Replaces the template's value in place.
                h.insert(RETRY_AFTER, self.retry_after[retry].clone());
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
        config: RejectConfig,
        version: Version,
        grpc: bool,
    },
    /// From [`DrainLayer::respond_with`]: built at `call` (it sees the path).
    Custom(Box<Response<Bytes>>),
    Ready {
        shared: Arc<Shared>,
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
            } => {
                let retry = config.pick_retry_after();
                config.response(version, grpc, retry)
            }
            Answer::Custom(res) => *res,
            Answer::Ready { shared, method } => {
                readiness_response(&shared, &method.method()).map(FixedBody::into_bytes)
            }
            Answer::Live { method } => {
                liveness_response(&method.method()).map(FixedBody::into_bytes)
            }
        }
    }
}

/// In the extensions of every probe answer, so that `serve` can tell a
/// balancer's check from the traffic it sends: a check on a connection
/// opened after the trigger is no evidence that the balancer still sends
/// requests here (HAProxy opens a connection per check).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProbeAnswer;

fn probe_response(method: &Method, ok: bool, text: Bytes) -> Response<FixedBody> {
    let mut res = probe_response_inner(method, ok, text);
    // One small allocation per probe answer: probes are a few a second.
    res.extensions_mut().insert(ProbeAnswer);
    res
}

fn probe_response_inner(method: &Method, ok: bool, text: Bytes) -> Response<FixedBody> {
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
    if matches!(status, ReadinessStatus::ShuttingDown)
        && (method == Method::GET || method == Method::HEAD)
    {
        // A balancer's check, refused: the adaptive pre-drain's evidence.
        shared.evidence.check_refused();
    }
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
    pub(crate) fn of(method: &Method) -> Self {
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

/// How a middleware names the body of its responses: its own opaque type
/// around [`AnswerBody`], built where the response is built (the response
/// head moves once).
pub(crate) trait WrapBody<X> {
    type Out;
    fn wrap(body: AnswerBody<X>) -> Self::Out;
}

pin_project! {
    /// The response future of [`Drain`] and [`Probe`](crate::probe::Probe)
    /// (each names it with its own type): the inner service's, or an answer
    /// of the crate's own; `W` names the body.
    pub(crate) struct AnswerFuture<F, W> {
        #[pin]
        state: FutureState<F>,
        wrap: std::marker::PhantomData<fn() -> W>,
    }
}

pin_project! {
    #[project = FutureStateProj]
    enum FutureState<F> {
        Inner { #[pin] fut: F },
        // An HTTP/1.x request through `Drain`: the lame duck may announce the
        // close. (The fused service does that in the counted future, where
        // the response is rebuilt anyway, so its requests use `Inner`.)
        LameDuck { #[pin] fut: F, shared: Arc<Shared> },
        Answered { answer: Option<Answer> },
    }
}

impl<F, W> AnswerFuture<F, W> {
    /// The inner service's future; `lame_duck` for HTTP/1.x requests.
    #[inline]
    pub(crate) fn inner(fut: F, lame_duck: Option<Arc<Shared>>) -> Self {
        Self {
            state: match lame_duck {
                None => FutureState::Inner { fut },
                Some(shared) => FutureState::LameDuck { fut, shared },
            },
            wrap: std::marker::PhantomData,
        }
    }

    /// A response decided without calling the inner service.
    #[inline]
    pub(crate) fn answered(answer: Answer) -> Self {
        Self {
            state: FutureState::Answered {
                answer: Some(answer),
            },
            wrap: std::marker::PhantomData,
        }
    }
}

impl<F, B, E, W> Future for AnswerFuture<F, W>
where
    F: Future<Output = Result<Response<B>, E>>,
    W: WrapBody<B>,
{
    type Output = Result<Response<W::Out>, E>;

    // Always (BENCHMARKS.md, Round 6: the inline attributes).
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            FutureStateProj::Inner { fut } => {
                let res = ready!(fut.poll(cx))?;
                Poll::Ready(Ok(res.map(|inner| W::wrap(AnswerBody::inner(inner)))))
            }
            FutureStateProj::LameDuck { fut, shared } => {
                let res = ready!(fut.poll(cx))?;
                let (mut head, inner) = res.into_parts();
                if shared.triggered() {
                    let _ = announce_close(shared, &mut head);
                }
                Poll::Ready(Ok(Response::from_parts(
                    head,
                    W::wrap(AnswerBody::inner(inner)),
                )))
            }
            FutureStateProj::Answered { answer } => {
                Poll::Ready(Ok(answered_response(answer).map(W::wrap)))
            }
        }
    }
}

/// The response of an answer of the crate's own, taken from a future's
/// `Option` (it panics if the future is polled again after completing).
#[cold]
#[inline(never)]
pub(crate) fn answered_response<B>(answer: &mut Option<Answer>) -> Response<AnswerBody<B>> {
    let res = answer
        .take()
        .expect("polled after completion")
        .into_response();
    res.map(|data| AnswerBody {
        kind: BodyKind::Answered {
            body: FixedBody::new(data),
        },
    })
}

impl<B> AnswerBody<B> {
    /// The inner service's body.
    #[inline(always)]
    pub(crate) fn inner(inner: B) -> Self {
        Self {
            kind: BodyKind::Inner { inner },
        }
    }
}

pin_project! {
    /// The response body of every middleware (each names it with its own
    /// type): the inner body, or the body of an answer of the crate's own.
    pub(crate) struct AnswerBody<B> {
        #[pin]
        kind: BodyKind<B>,
    }
}

pin_project! {
    #[project = BodyProj]
    enum BodyKind<B> {
        Inner { #[pin] inner: B },
        // The crate's own answer: the same one-chunk body as the probe
        // services'.
        Answered { body: FixedBody },
    }
}

impl<B> Body for AnswerBody<B>
where
    B: Body,
    B::Data: From<Bytes>,
{
    type Data = B::Data;
    type Error = B::Error;

    // Always (BENCHMARKS.md, Round 6: the inline attributes).
    #[inline(always)]
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            BodyProj::Inner { inner } => inner.poll_frame(cx),
            BodyProj::Answered { body } => {
                Poll::Ready(body.data.take().map(|d| Ok(Frame::data(B::Data::from(d)))))
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Inner { inner } => inner.is_end_stream(),
            BodyKind::Answered { body } => body.is_end_stream(),
        }
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Inner { inner } => inner.size_hint(),
            BodyKind::Answered { body } => body.size_hint(),
        }
    }
}

/// A body of at most one chunk, with an exact size hint. Used for probe
/// answers and rejections.
#[derive(Debug, Default, Clone)]
pub struct FixedBody {
    data: Option<Bytes>,
}

impl FixedBody {
    /// A body holding `data` (empty data gives an empty body).
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            data: (!data.is_empty()).then_some(data),
        }
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.data.unwrap_or_default()
    }

    /// An empty body.
    pub fn empty() -> Self {
        Self { data: None }
    }
}

impl Body for FixedBody {
    type Data = Bytes;
    type Error = Infallible;

    #[inline]
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|d| Ok(Frame::data(d))))
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}
