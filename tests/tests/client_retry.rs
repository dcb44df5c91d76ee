//! `tower_graceful::client::TransparentRetry` on tonic's `Channel` (issue
//! 19): a unary call that hyper queued on a connection that had just read
//! the server's GOAWAY (with a stream still open on it, hyper#2500) fails
//! unsent, `operation was canceled`; with the retry it goes to a new
//! connection, and the server that sent the GOAWAY never sees it.
//!
//! Two real tonic servers (`demo.v1.Demo`) behind a loopback proxy that
//! sends the client's first connection to A and every later one to B, and
//! watches the client's bytes for its ack of the PING that h2 sends with its
//! graceful GOAWAY: the client writes that ack after it has read the GOAWAY,
//! so the test knows when the client's connection has it, without a sleep.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tower_graceful::client::TransparentRetry;
use tower_graceful_examples::demo::{CountRequest, DemoClient, DemoServer, HelloRequest};
use tower_graceful_tests::{listener, within};

/// h2's graceful-shutdown PING payload (`h2/src/frame/ping.rs`).
const SHUTDOWN_PING: [u8; 8] = [0x0b, 0x7b, 0xa2, 0xf0, 0x8b, 0x9b, 0xfe, 0x54];

/// A tonic server of the demo service; counts the `Hello` calls it got.
struct Backend {
    addr: SocketAddr,
    hellos: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn backend() -> Backend {
    let (l, addr) = listener().await;
    let hellos = Arc::new(AtomicUsize::new(0));
    let count = hellos.clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let counting = tower::util::MapRequestLayer::new(move |req: http::Request<_>| {
        if req.uri().path().ends_with("/Hello") {
            count.fetch_add(1, Ordering::SeqCst);
        }
        req
    });
    let task = tokio::spawn(async move {
        let _ = Server::builder()
            .layer(counting)
            .add_service(DemoServer::new())
            .serve_with_incoming_shutdown(TcpIncoming::from(l), async move {
                let _ = stopped.await;
            })
            .await;
    });
    Backend {
        addr,
        hellos,
        stop: Some(stop),
        task,
    }
}

/// A proxy: the first connection to `first`, the later ones to `rest`.
/// `acked` turns true once the client sent, on its first connection, the
/// ack of h2's shutdown PING.
async fn proxy(first: SocketAddr, rest: SocketAddr) -> (SocketAddr, watch::Receiver<bool>) {
    let (l, addr) = listener().await;
    let (acked_tx, acked) = watch::channel(false);
    tokio::spawn(async move {
        let mut acked_tx = Some(acked_tx);
        // Bounded: a test makes a handful of connections.
        for i in 0..16 {
            let Ok((client, _)) = l.accept().await else {
                return;
            };
            let to = if i == 0 { first } else { rest };
            let Ok(server) = TcpStream::connect(to).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            let watch = acked_tx.take();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    if let Some(tx) = &watch {
                        seen.extend_from_slice(&buf[..n]);
                        if has_shutdown_ack(&seen) {
                            tx.send_replace(true);
                        }
                    }
                }
                let _ = sw.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
            });
        }
    });
    (addr, acked)
}

/// Whether the client's bytes (preface first) hold a PING ack of h2's
/// shutdown payload.
fn has_shutdown_ack(bytes: &[u8]) -> bool {
    let mut at = 24; // the preface
    while bytes.len() >= at + 9 {
        let h = &bytes[at..at + 9];
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        if bytes.len() < at + 9 + len {
            return false;
        }
        if h[3] == 0x6 && h[4] & 0x1 != 0 && bytes[at + 9..at + 9 + len] == SHUTDOWN_PING {
            return true;
        }
        at += 9 + len;
    }
    false
}

/// Sets the race up: a stream open on the client's connection to A, A's
/// graceful GOAWAY read by the client. Returns the backends and the stream
/// (kept open).
async fn goaway_read_with_a_stream_open<T>(
    client: &mut DemoClient<T>,
    a: &mut Backend,
    acked: &mut watch::Receiver<bool>,
) -> tonic::codec::Streaming<tower_graceful_examples::demo::Tick>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let mut stream = within(
        "count call",
        client.count(CountRequest {
            count: 1000,
            interval_ms: 50,
            stop_on_shutdown: false,
        }),
    )
    .await
    .expect("count call")
    .into_inner();
    let tick = within("first tick", stream.message()).await.expect("tick");
    assert!(tick.is_some(), "the stream is open");
    // A's graceful shutdown: GOAWAY and PING on the open connection.
    let _ = a.stop.take().expect("stopped once").send(());
    within(
        "the client's ack of the GOAWAY's PING",
        acked.wait_for(|a| *a),
    )
    .await
    .expect("proxy alive");
    stream
}

async fn channel(addr: SocketAddr) -> Channel {
    within(
        "connect",
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect(),
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_without_retry_fails_the_call_unsent() {
    let mut a = backend().await;
    let b = backend().await;
    let (addr, mut acked) = proxy(a.addr, b.addr).await;
    let origin: http::Uri = format!("http://{addr}").parse().unwrap();
    let mut client = DemoClient::with_origin(channel(addr).await, origin);
    let _stream = goaway_read_with_a_stream_open(&mut client, &mut a, &mut acked).await;

    let err = within(
        "hello",
        client.hello(HelloRequest {
            name: "x".to_owned(),
        }),
    )
    .await
    .expect_err("hyper#2500: the first call after the GOAWAY fails");
    assert!(
        tower_graceful::client::never_sent(&err),
        "the error says the call never left the client: {err:?}"
    );
    assert_eq!(a.hellos.load(Ordering::SeqCst), 0, "A never saw it");
    assert_eq!(b.hellos.load(Ordering::SeqCst), 0, "nor B");
    a.task.abort();
    b.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_retry_sends_the_unsent_call_on_a_new_connection() {
    let mut a = backend().await;
    let b = backend().await;
    let (addr, mut acked) = proxy(a.addr, b.addr).await;
    let origin: http::Uri = format!("http://{addr}").parse().unwrap();
    let retry = TransparentRetry::new(channel(addr).await);
    let mut client = DemoClient::with_origin(retry, origin);
    let _stream = goaway_read_with_a_stream_open(&mut client, &mut a, &mut acked).await;

    let reply = within(
        "hello",
        client.hello(HelloRequest {
            name: "x".to_owned(),
        }),
    )
    .await
    .expect("sent again, on a new connection");
    assert_eq!(reply.get_ref().message, "hello, x");
    assert_eq!(a.hellos.load(Ordering::SeqCst), 0, "A never saw it");
    assert_eq!(b.hellos.load(Ordering::SeqCst), 1, "B served it, once");
    a.task.abort();
    b.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_retry_passes_calls_through() {
    let a = backend().await;
    let origin: http::Uri = format!("http://{}", a.addr).parse().unwrap();
    let retry = TransparentRetry::new(channel(a.addr).await).max_body(4);
    let mut client = DemoClient::with_origin(retry, origin);
    // A body over `max_body` is passed on as it comes (and would not be
    // retried); a stream's replies come through.
    let reply = within(
        "hello",
        client.hello(HelloRequest {
            name: "a longer name".to_owned(),
        }),
    )
    .await
    .expect("served");
    assert_eq!(reply.get_ref().message, "hello, a longer name");
    let mut stream = within(
        "count",
        client.count(CountRequest {
            count: 3,
            interval_ms: 1,
            stop_on_shutdown: false,
        }),
    )
    .await
    .expect("count")
    .into_inner();
    let mut ticks = 0;
    while let Some(_t) = within("tick", stream.message()).await.expect("tick") {
        ticks += 1;
    }
    assert_eq!(ticks, 3);
    assert_eq!(a.hellos.load(Ordering::SeqCst), 1);
    a.task.abort();
}
