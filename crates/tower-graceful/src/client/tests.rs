use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

/// An error that is not hyper's: never retried.
#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

/// Answers with the request body it read, or fails every call.
#[derive(Clone)]
struct Echo {
    calls: Arc<AtomicUsize>,
    fail: bool,
}

impl Service<Request<tonic::body::Body>> for Echo {
    type Response = Response<Bytes>;
    type Error = Refused;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Bytes>, Refused>> + Send>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Refused>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<tonic::body::Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let fail = self.fail;
        Box::pin(async move {
            let hint = req.body().size_hint().exact();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            if fail {
                return Err(Refused);
            }
            let mut res = Response::new(body);
            if let Some(n) = hint {
                res.headers_mut().insert("x-exact", n.into());
            }
            Ok(res)
        })
    }
}

fn echo(fail: bool) -> (Echo, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    (
        Echo {
            calls: calls.clone(),
            fail,
        },
        calls,
    )
}

fn full(bytes: &'static [u8]) -> tonic::body::Body {
    tonic::body::Body::new(http_body_util::Full::new(Bytes::from_static(bytes)))
}

#[tokio::test]
async fn a_ready_body_is_kept_and_sent_with_its_exact_size() {
    let (svc, calls) = echo(false);
    let res = TransparentRetry::new(svc)
        .oneshot(Request::new(full(b"hello")))
        .await
        .unwrap();
    assert_eq!(res.body(), &Bytes::from_static(b"hello"));
    assert_eq!(res.headers()["x-exact"], "5");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_streaming_body_is_passed_on_as_it_comes() {
    let (svc, _) = echo(false);
    let (mut tx, body) = http_body_util::channel::Channel::<Bytes, Refused>::new(4);
    tx.send_data(Bytes::from_static(b"one ")).await.unwrap();
    let call = tokio::spawn(
        TransparentRetry::new(svc).oneshot(Request::new(tonic::body::Body::new(body))),
    );
    // The first frame was ready, the next one is not: the call is made
    // (it is waiting for the rest of the body), then gets it.
    tokio::task::yield_now().await;
    tx.send_data(Bytes::from_static(b"two")).await.unwrap();
    drop(tx);
    let res = call.await.unwrap().unwrap();
    assert_eq!(res.body(), &Bytes::from_static(b"one two"));
}

#[tokio::test]
async fn a_body_over_the_limit_is_passed_on_whole() {
    let (svc, _) = echo(false);
    let res = TransparentRetry::new(svc)
        .max_body(3)
        .oneshot(Request::new(full(b"hello")))
        .await
        .unwrap();
    assert_eq!(res.body(), &Bytes::from_static(b"hello"));
}

#[tokio::test]
async fn other_errors_are_not_retried() {
    let (svc, calls) = echo(true);
    let err = TransparentRetry::new(svc)
        .oneshot(Request::new(full(b"x")))
        .await
        .unwrap_err();
    assert!(!never_sent(&err));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "sent once");
}

#[test]
fn services_and_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<TransparentRetry<Echo>>();
    send_sync::<TransparentRetryLayer>();
    send::<ResponseFuture<Echo, tonic::body::Body>>();
}
