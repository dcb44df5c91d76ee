//! The inner service, the do-nothing layer, requests, and a synchronous driver
//! that runs one request through a `tower::Service` with a no-op waker (no
//! runtime, no scheduler noise).

use std::convert::Infallible;
use std::future::{ready, Future, Ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes};
use http::header::{HeaderValue, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request, Response, Version};
use http_body::Body;
use http_body_util::{Empty, Full};
use tower_layer::Layer;
use tower_service::Service;

/// The response body of [`Hello`].
pub const HELLO: &[u8] = b"hello world";

/// Trivial inner service: always answers `200` with [`HELLO`] (no allocation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Hello;

impl<B> Service<Request<B>> for Hello {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, _req: Request<B>) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(HELLO)))))
    }
}

/// Like [`Hello`], but its response has the shape of the draining rejection:
/// four headers (so a header map is allocated) and a short body. The fair
/// baseline for the rejection path's cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct HelloHeaders;

impl<B> Service<Request<B>> for HelloHeaders {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, _req: Request<B>) -> Self::Future {
        let mut res = Response::new(Full::new(Bytes::from_static(HELLO)));
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(CONTENT_LENGTH, HeaderValue::from_static("11"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
        ready(Ok(res))
    }
}

/// The do-nothing layer: wraps a service in [`Noop`], which forwards
/// `poll_ready` and `call` and returns the inner future unchanged (the cost
/// of one more tower layer and nothing else).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopLayer;

impl<S> Layer<S> for NoopLayer {
    type Service = Noop<S>;
    fn layer(&self, inner: S) -> Noop<S> {
        Noop(inner)
    }
}

/// Service of [`NoopLayer`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Noop<S>(pub S);

impl<S: Service<R>, R> Service<R> for Noop<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: R) -> S::Future {
        self.0.call(req)
    }
}

/// Request body used at the tower level.
pub type ReqBody = Empty<Bytes>;

/// `GET /` HTTP/1.1, no headers (building it does not allocate).
#[inline]
pub fn get_root() -> Request<ReqBody> {
    Request::new(Empty::new())
}

/// `POST /demo.Echo/Unary` HTTP/2 with `content-type: application/grpc` (the
/// header map allocates once).
#[inline]
pub fn grpc_req() -> Request<ReqBody> {
    let mut req = Request::new(Empty::new());
    *req.method_mut() = Method::POST;
    *req.version_mut() = Version::HTTP_2;
    *req.uri_mut() = http::Uri::from_static("/demo.Echo/Unary");
    req.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    req
}

/// `GET /` for axum (`axum::body::Body`).
#[inline]
pub fn axum_get_root() -> Request<axum::body::Body> {
    Request::new(axum::body::Body::empty())
}

/// Runs one request through `svc`: `poll_ready`, `call`, polls the future to
/// completion and drains the response body, all with a no-op waker. Returns
/// the number of body bytes (so nothing is optimized away). Panics if the
/// service is not ready or keeps returning `Pending`.
#[inline(always)]
pub fn drive<S, B, RB>(svc: &mut S, req: Request<B>) -> usize
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        _ => panic!("service not ready"),
    }
    let fut = pin!(svc.call(req));
    finish(fut, &mut cx)
}

/// Like [`drive`], for a service owned by the request, through tower's
/// `oneshot` (`poll_ready`, then `call`, inside one future): what
/// hyper-util's `TowerToHyperService` does with the clone it makes for each
/// request (`self.service.clone().oneshot(req)`).
#[inline(always)]
pub fn drive_oneshot<S, B, RB>(svc: S, req: Request<B>) -> usize
where
    S: Service<Request<B>, Response = Response<RB>>,
    RB: Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    let fut = pin!(tower::ServiceExt::oneshot(svc, req));
    finish(fut, &mut cx)
}

/// Polls a response future to completion, then drains the body.
#[inline(always)]
fn finish<F, RB, E>(mut fut: std::pin::Pin<&mut F>, cx: &mut Context<'_>) -> usize
where
    F: Future<Output = Result<Response<RB>, E>>,
    RB: Body,
{
    let mut spins = 0u32;
    let res = loop {
        match fut.as_mut().poll(cx) {
            Poll::Ready(Ok(res)) => break res,
            Poll::Ready(Err(_)) => panic!("service error"),
            Poll::Pending => {
                spins += 1;
                assert!(spins < 64, "response future keeps returning Pending");
            }
        }
    };
    let (parts, body) = res.into_parts();
    black_box(parts.status);
    let mut body = pin!(body);
    let mut n = 0;
    loop {
        match body.as_mut().poll_frame(cx) {
            Poll::Ready(None) => break,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    n += d.remaining();
                }
            }
            Poll::Ready(Some(Err(_))) => panic!("body error"),
            Poll::Pending => panic!("body returned Pending"),
        }
    }
    n
}
