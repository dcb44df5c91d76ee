//! Who keeps a coordinator's state alive: every handle to it, whatever order
//! they go in (issue 17). Each scenario drops the last `Coordinator` and every
//! service while a request is still in flight, then keeps using what the
//! handler or the body still holds. With state freed by hand these were a
//! use-after-free (the signal kept past the body's end), a "let go twice"
//! panic (the signal dropped at once) and a panic in a slow client's body
//! task; with the state owned by `Arc` they are ordinary.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use tokio::time::timeout;
use tower::{service_fn, Layer, ServiceExt};
use tower_graceful::{Coordinator, ShutdownSignal};

const WAIT: Duration = Duration::from_secs(10);

type Kept = Arc<Mutex<Option<ShutdownSignal>>>;

fn coordinator() -> Coordinator {
    Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::ZERO)
        .build()
        .unwrap()
}

/// A response whose body ends only when `end` is dropped; on each poll of
/// the body it asks for `ShutdownSignal::current()`, as a stream produced
/// lazily does.
fn streaming_body(
    end: tokio::sync::oneshot::Receiver<()>,
    seen: Kept,
) -> StreamBody<impl futures_util::Stream<Item = Result<http_body::Frame<Bytes>, Infallible>>> {
    let stream = futures_util::stream::unfold((Some(end), seen), |(end, seen)| async move {
        let end = end?;
        *seen.lock().unwrap() = ShutdownSignal::current();
        let _ = end.await;
        *seen.lock().unwrap() = ShutdownSignal::current();
        Some((
            Ok(http_body::Frame::data(Bytes::from_static(b"x"))),
            (None, seen),
        ))
    });
    StreamBody::new(stream)
}

/// The handler takes the signal (what the axum extractor does) and keeps it
/// past the end of the body, which outlives the coordinator and the service.
#[tokio::test]
async fn a_signal_kept_after_the_last_handle_and_body_is_still_usable() {
    let c = coordinator();
    let kept: Kept = Arc::default();
    let (end_tx, end_rx) = tokio::sync::oneshot::channel();
    let end_rx = Arc::new(Mutex::new(Some(end_rx)));
    let svc = c.layer().layer(service_fn({
        let kept = kept.clone();
        move |_req: Request<()>| {
            let kept = kept.clone();
            let end = end_rx.lock().unwrap().take().unwrap();
            async move {
                *kept.lock().unwrap() = ShutdownSignal::current();
                Ok::<_, Infallible>(Response::new(streaming_body(end, Arc::default())))
            }
        }
    }));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    drop(c); // the last coordinator handle; the service went with `oneshot`
    drop(end_tx);
    let body = timeout(WAIT, res.into_body().collect())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&body.to_bytes()[..], b"x");
    // The body ended: nothing counts the request any more. The signal is the
    // last handle to the state, and it must be whole.
    let signal = kept.lock().unwrap().take().expect("taken in the handler");
    assert!(!signal.is_draining());
    assert!(!signal.is_forced());
    assert!(signal.deadline().is_none());
    let guard = signal.track("after everything");
    assert!(guard.is_tracking());
    drop(guard);
    let token = signal.cancellation_token();
    assert!(!token.is_cancelled());
    drop(signal);
}

/// The handler takes the signal and drops it at once, after the last
/// coordinator handle and the service are gone.
#[tokio::test]
async fn a_signal_taken_and_dropped_after_the_last_handle_is_fine() {
    let c = coordinator();
    let (go_tx, go_rx) = tokio::sync::oneshot::channel::<()>();
    let go_rx = Arc::new(Mutex::new(Some(go_rx)));
    let svc = c.layer().layer(service_fn(move |_req: Request<()>| {
        let go = go_rx.lock().unwrap().take().unwrap();
        async move {
            let _ = go.await;
            let signal = ShutdownSignal::current().expect("inside the layer");
            drop(signal);
            let again = ShutdownSignal::current().expect("still inside the layer");
            assert!(!again.is_draining());
            Ok::<_, Infallible>(Response::new(String::from("ok")))
        }
    }));
    let call = tokio::spawn(svc.oneshot(Request::new(())));
    tokio::task::yield_now().await;
    drop(c);
    go_tx.send(()).unwrap();
    let res = timeout(WAIT, call).await.unwrap().unwrap().unwrap();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"ok");
}

/// The signal, taken in the handler, is cloned onto another thread, which
/// outlives everything else.
#[test]
fn a_signal_cloned_onto_another_thread_outlives_everything() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kept: Kept = Arc::default();
    rt.block_on(async {
        let c = coordinator();
        let svc = c.layer().layer(service_fn({
            let kept = kept.clone();
            move |_req: Request<()>| {
                let kept = kept.clone();
                async move {
                    *kept.lock().unwrap() = ShutdownSignal::current();
                    Ok::<_, Infallible>(Response::new(String::from("ok")))
                }
            }
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        drop(c);
        res.into_body().collect().await.unwrap();
    });
    let signal = kept.lock().unwrap().take().unwrap();
    let clone = signal.clone();
    let thread = std::thread::spawn(move || {
        let guard = clone.track("on another thread");
        assert!(!clone.is_draining());
        drop(guard);
        clone
    });
    drop(signal);
    drop(rt);
    let clone = thread.join().unwrap();
    assert!(!clone.is_draining());
    drop(clone);
}

/// A slow client still reads a streaming body after `wait()` returned at the
/// deadline and the coordinator was dropped: the body's polls (which set
/// `ShutdownSignal::current()`) and its end must be harmless.
#[tokio::test(start_paused = true)]
async fn a_body_read_after_a_forced_stop_and_the_last_handle_is_harmless() {
    let c = Coordinator::builder()
        .handle_signals(false)
        .pre_drain_delay(Duration::ZERO)
        .drain_deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let (end_tx, end_rx) = tokio::sync::oneshot::channel();
    let end_rx = Arc::new(Mutex::new(Some(end_rx)));
    let seen: Kept = Arc::default();
    let svc = c.layer().layer(service_fn({
        let seen = seen.clone();
        move |_req: Request<()>| {
            let end = end_rx.lock().unwrap().take().unwrap();
            let seen = seen.clone();
            async move { Ok::<_, Infallible>(Response::new(streaming_body(end, seen))) }
        }
    }));
    let res = svc.oneshot(Request::new(())).await.unwrap();
    c.trigger();
    let report = timeout(WAIT * 10, c.wait()).await.unwrap();
    assert_eq!(report.in_flight_at_drain, 1);
    assert_eq!(report.stragglers.len(), 1, "the body outlived the deadline");
    drop(c);
    let reader = tokio::spawn(async move { res.into_body().collect().await.map(|b| b.to_bytes()) });
    tokio::task::yield_now().await;
    drop(end_tx);
    let body = timeout(WAIT, reader).await.unwrap().unwrap().unwrap();
    assert_eq!(&body[..], b"x");
    let signal = seen
        .lock()
        .unwrap()
        .take()
        .expect("seen by the body's last poll");
    assert!(signal.is_forced());
}
