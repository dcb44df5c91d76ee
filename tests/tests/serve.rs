//! `tower_graceful::connection::Server` as a production server: settings
//! (header read timeout, connection limit), listeners (Unix sockets, TLS
//! with ALPN), connection info (axum's `ConnectInfo`), nothing reset from
//! the backlog at drain start, every end condition bounded, bad input.
//! Real axum apps and real clients on 127.0.0.1 or a Unix socket in a temp
//! directory; every wait bounded.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::{Extension, Router};
use bytes::Bytes;
use futures_util::stream;
use http::{StatusCode, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tower_graceful::connection::{ConnectionInfo, Listener, Server};
use tower_graceful::Coordinator;
use tower_graceful_tests::*;

/// Pre-drain zero, a cleanup time far longer than any bound asserted here:
/// a connection that held the report would hold it that long.
fn coordinator_for(cleanup: Duration) -> Coordinator {
    builder(Duration::ZERO, DEADLINE)
        .cleanup_timeout(cleanup)
        .untracked_path("/forever")
        .build()
        .expect("valid test configuration")
}

const LONG_CLEANUP: Duration = Duration::from_secs(30);

/// What a held shutdown would exceed (and a correct one stays far below).
const NOT_HELD: Duration = Duration::from_secs(5);

fn router(graceful: &Coordinator) -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route(
            "/whoami",
            get(
                |ConnectInfo(peer): ConnectInfo<SocketAddr>,
                 Extension(info): Extension<ConnectionInfo>| async move {
                    format!("{peer} {}", info.local)
                },
            ),
        )
        .route(
            "/forever",
            get(|| async {
                let first = stream::once(async { Ok::<_, Infallible>(Bytes::from("first\n")) });
                Body::from_stream(futures_util::StreamExt::chain(first, stream::pending()))
            }),
        )
        .route(
            "/panic",
            get(|| async {
                if true {
                    panic!("handler panicked on purpose");
                }
                "unreachable"
            }),
        )
        .layer(graceful.layer())
}

/// A body larger than what loopback socket buffers hold.
const BIG: usize = 32 << 20;

struct Running {
    addr: SocketAddr,
    task: JoinHandle<std::io::Result<()>>,
}

async fn start(server: Server, app: Router) -> Running {
    let (listener, addr) = listener().await;
    Running {
        addr,
        task: tokio::spawn(server.serve(listener, app)),
    }
}

impl Running {
    async fn stopped(self) {
        within("the serve future", self.task)
            .await
            .expect("serve task")
            .expect("serve result");
    }
}

/// Triggers (pre-drain zero) and returns the report and how long it took.
async fn shut_down(graceful: &Coordinator) -> (tower_graceful::ShutdownReport, Duration) {
    let t0 = Instant::now();
    graceful.trigger();
    let report = within("the report", graceful.wait()).await;
    (report, t0.elapsed())
}

/// One `GET path` over HTTP/1.1 on `io` (hyper's client), the status and
/// the body as text; the connection is closed after it.
async fn get_once<I>(io: I, path: &str) -> (StatusCode, String)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "x")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = within("the GET", sender.send_request(req)).await.unwrap();
    let status = res.status();
    let body = body_text(res).await.unwrap();
    drop(sender);
    let _ = within("the client connection", conn).await;
    (status, body)
}

/// Reads until EOF or an error, bounded; returns the bytes and whether it
/// ended with an error.
async fn read_to_end(s: &mut TcpStream) -> (Vec<u8>, Option<std::io::Error>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    for _ in 0..100_000 {
        match within("the server's bytes", s.read(&mut buf)).await {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => return (got, Some(e)),
        }
    }
    panic!("the server never stopped sending");
}

// ------------------------------------------------------------- settings --

/// A client that sends half a request head is timed out by the header read
/// timeout (the timer is set), and one that does so around the trigger does
/// not hold the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_head_is_timed_out_and_does_not_hold_the_shutdown() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let graceful = coordinator_for(LONG_CLEANUP);
    let server = Server::new(&graceful)
        .header_read_timeout(TIMEOUT)
        .stall_timeout(Duration::from_secs(60));
    let running = start(server, router(&graceful)).await;

    // While serving: closed after the timeout, not before.
    let t0 = Instant::now();
    let mut half = TcpStream::connect(running.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let _ = read_to_end(&mut half).await;
    let took = t0.elapsed();
    assert!(took >= TIMEOUT, "closed after {took:?}, before the timeout");
    assert!(took < NOT_HELD, "closed only after {took:?}");

    // One that connects and sends nothing: the same bound.
    let mut silent = TcpStream::connect(running.addr).await.unwrap();
    let (got, _) = read_to_end(&mut silent).await;
    assert!(got.is_empty());

    // Around the trigger: the report is not held by it.
    let mut half = TcpStream::connect(running.addr).await.unwrap();
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (report, took) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    assert!(took < NOT_HELD, "the report took {took:?}");
    let _ = read_to_end(&mut half).await;
    running.stopped().await;
}

/// At the connection limit the accept loop waits: the next connection is
/// not dropped, it is served as soon as one closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_the_next_connection_waits_and_is_served() {
    let graceful = coordinator_for(Duration::from_secs(5));
    let running = start(Server::new(&graceful).max_connections(1), router(&graceful)).await;
    let mut first = H1::connect(running.addr).await;
    assert_eq!(
        body_text(first.get("/").await.unwrap()).await.unwrap(),
        "hello\n"
    );

    // The second connects (the kernel queues it) and sends its request.
    let mut second = TcpStream::connect(running.addr).await.unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    // Not served while the first is open (an absence, so a bounded look).
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut byte)).await;
    assert!(early.is_err(), "served beyond the limit: {early:?}");

    drop(first);
    let (rest, err) = read_to_end(&mut second).await;
    assert!(err.is_none(), "{err:?}");
    let text = String::from_utf8_lossy(&rest);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.ends_with("hello\n"), "{text}");

    let (report, _) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    running.stopped().await;
}

// ------------------------------------------------------ connection info --

/// axum's `ConnectInfo<SocketAddr>` works in a handler with no extra wiring,
/// and `ConnectionInfo` has the local address the client reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_info_reaches_axum_handlers() {
    let graceful = coordinator_for(Duration::from_secs(5));
    let running = start(Server::new(&graceful), router(&graceful)).await;
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let (status, body) = get_once(tcp, "/whoami").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("{me} {}", running.addr));
    let (report, _) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    running.stopped().await;
}

/// `Server::connection_info(false)`: no extension is inserted, and a
/// handler that asks for one gets axum's rejection (500), not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_info_off_inserts_nothing() {
    let graceful = coordinator_for(Duration::from_secs(5));
    let app = Router::new()
        .route(
            "/has",
            get(|req: axum::extract::Request| async move {
                let ext = req.extensions();
                format!(
                    "{} {}",
                    ext.get::<ConnectionInfo>().is_some(),
                    ext.get::<ConnectInfo<SocketAddr>>().is_some()
                )
            }),
        )
        .layer(graceful.layer());
    let running = start(Server::new(&graceful).connection_info(false), app).await;
    let tcp = TcpStream::connect(running.addr).await.unwrap();
    let (status, body) = get_once(tcp, "/has").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "false false");
    let (report, _) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    running.stopped().await;
}

// ------------------------------------------------------------ listeners --

/// A Unix socket: served with a real hyper client over a `UnixStream`,
/// with the peer's address in `ConnectionInfo`, and drained like TCP.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_is_served_and_drained() {
    use tokio::net::unix::SocketAddr as UnixAddr;
    let dir = std::env::temp_dir().join(format!(
        "tower-graceful-serve-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("http.sock");
    let graceful = coordinator_for(Duration::from_secs(5));
    let app = Router::new()
        .route(
            "/",
            get(
                |Extension(info): Extension<ConnectionInfo<UnixAddr>>| async move {
                    format!(
                        "unix {:?}\n",
                        info.local.as_pathname().map(|p| p.file_name())
                    )
                },
            ),
        )
        .layer(graceful.layer());
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    assert!(Listener::local_addr(&listener)
        .unwrap()
        .as_pathname()
        .is_some());
    let task = tokio::spawn(Server::new(&graceful).serve(listener, app));

    let stream = within("unix connect", tokio::net::UnixStream::connect(&path))
        .await
        .unwrap();
    // Kept open (idle, keep-alive) across the shutdown: closed at the end
    // of the drain.
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get("/")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = within("GET / over the Unix socket", sender.send_request(req))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        body_text(res).await.unwrap(),
        "unix Some(Some(\"http.sock\"))\n"
    );

    let (report, took) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    assert!(took < NOT_HELD, "{took:?}");
    // The idle keep-alive connection was closed at the end of the drain.
    within("the client connection to close", conn)
        .await
        .unwrap()
        .expect("a clean close");
    within("the serve future", task).await.unwrap().unwrap();
    // Closed: a new connection is refused.
    assert!(tokio::net::UnixStream::connect(&path).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

mod tls {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tower_graceful::connection::TlsListener;

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// A self-signed certificate for `localhost`, made here.
    struct Cert {
        der: CertificateDer<'static>,
        key: Vec<u8>,
    }

    fn cert() -> Cert {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        Cert {
            der: CertificateDer::from(cert.cert.der().to_vec()),
            key: cert.key_pair.serialize_der(),
        }
    }

    fn server_config(cert: &Cert) -> rustls::ServerConfig {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone()));
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der.clone()], key)
            .unwrap()
    }

    fn client_config(cert: &Cert, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der.clone()).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        client
    }

    async fn tls_connect(
        addr: SocketAddr,
        client: rustls::ClientConfig,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("localhost").unwrap();
        within("the TLS handshake", connector.connect(name, tcp))
            .await
            .expect("TLS handshake")
    }

    /// HTTPS with a real rustls client: a client offering `h2` by ALPN gets
    /// HTTP/2, one offering `http/1.1` gets HTTP/1.1, both with axum's
    /// `ConnectInfo`; then the drain closes both.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_serves_h2_and_http1_by_alpn() {
        let graceful = coordinator_for(Duration::from_secs(5));
        let cert = cert();
        let (listener, addr) = listener().await;
        let listener = TlsListener::new(listener, server_config(&cert));
        let task = tokio::spawn(Server::new(&graceful).serve(listener, router(&graceful)));

        // h2
        let client = client_config(&cert, &[b"h2", b"http/1.1"]);
        let tls = tls_connect(addr, client).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let me = tls.get_ref().0.local_addr().unwrap();
        let (mut h2, h2_conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        let h2_conn = tokio::spawn(h2_conn);
        let req = http::Request::get("https://localhost/whoami")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = within("h2 GET /whoami", h2.send_request(req))
            .await
            .unwrap();
        assert_eq!(res.version(), Version::HTTP_2);
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body_text(res).await.unwrap(), format!("{me} {addr}"));

        // http/1.1
        let client = client_config(&cert, &[b"http/1.1"]);
        let tls = tls_connect(addr, client).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut h1, h1_conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        let h1_conn = tokio::spawn(h1_conn);
        let req = http::Request::get("/")
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = within("h1 GET /", h1.send_request(req)).await.unwrap();
        assert_eq!(res.version(), Version::HTTP_11);
        assert_eq!(body_text(res).await.unwrap(), "hello\n");

        // A client that connects and never says hello holds nothing.
        let _silent = TcpStream::connect(addr).await.unwrap();

        let (report, took) = shut_down(&graceful).await;
        assert!(report.is_clean(), "{report}");
        assert!(took < NOT_HELD, "{took:?}");
        within("the h2 connection to end", h2_conn)
            .await
            .unwrap()
            .expect("a clean h2 close");
        within("the h1 connection to end", h1_conn)
            .await
            .unwrap()
            .expect("a clean h1 close");
        within("the serve future", task).await.unwrap().unwrap();
    }
}

// ------------------------------------------------------------ the backlog --

/// Several clients connect, send a request and read the answer in a tight
/// loop across drain start: every attempt is refused at connect or answered
/// in full; none is reset after sending its request (what closing the
/// listener with connections in its backlog does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connection_is_reset_at_drain_start() {
    const CLIENTS: usize = 8;
    const MAX_ATTEMPTS: usize = 20_000;
    let graceful = coordinator_for(Duration::from_secs(5));
    let running = start(Server::new(&graceful), router(&graceful)).await;
    let addr = running.addr;
    let answered = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(20);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut refused = false;
                let mut failures = Vec::new();
                for _ in 0..MAX_ATTEMPTS {
                    if Instant::now() > deadline {
                        break;
                    }
                    let mut s = match TcpStream::connect(addr).await {
                        Ok(s) => s,
                        // Refused, or reset before `connect` returned: the
                        // listener closed with the handshake unfinished on our
                        // side, so the client knows nothing was sent (what it
                        // retries elsewhere). A reset *after* sending is the
                        // loss this test is about, and fails below.
                        Err(e) => {
                            assert!(
                                matches!(
                                    e.kind(),
                                    std::io::ErrorKind::ConnectionRefused
                                        | std::io::ErrorKind::ConnectionReset
                                ),
                                "{e}"
                            );
                            refused = true;
                            break;
                        }
                    };
                    let sent = s
                        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                        .await;
                    let (got, err) = read_to_end(&mut s).await;
                    let text = String::from_utf8_lossy(&got);
                    let full = (text.starts_with("HTTP/1.1 200 OK") && text.ends_with("hello\n"))
                        || (text.starts_with("HTTP/1.1 503") && text.ends_with(REJECTION_BODY));
                    if sent.is_err() || err.is_some() || !full {
                        failures.push(format!("sent: {sent:?}, read error: {err:?}, got {text:?}"));
                    } else {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (refused, failures)
            })
        })
        .collect();
    // Trigger once the loops are at full speed.
    for _ in 0..10_000 {
        if answered.load(Ordering::Relaxed) >= 500 {
            break;
        }
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = answered.load(Ordering::Relaxed);
    assert!(before >= 500, "the clients did not get going: {before}");
    graceful.trigger();
    let mut refused = 0;
    let mut all_failures = Vec::new();
    for c in clients {
        let (was_refused, failures) = within_for(Duration::from_secs(30), "a client loop", c)
            .await
            .unwrap();
        all_failures.extend(failures);
        refused += usize::from(was_refused);
    }
    // What the kernel had queued when draining began is taken and served
    // (before that fix: ~15 resets per run). Left is the instant between
    // the last non-blocking accept that found the queue empty and the
    // listener's close: a handshake that completes in those microseconds
    // is reset by the kernel's close, whatever the server does (measured:
    // 1 run in 30 with one such reset, 8 clients connecting in a tight
    // loop, ~5,000 connections/s). So: at most one, and only of that
    // kind (reset before a single byte of the answer).
    assert!(
        all_failures.len() <= 1
            && all_failures
                .iter()
                .all(|f| f.contains("ConnectionReset") && f.ends_with("got \"\"")),
        "reset or cut after sending: {all_failures:#?}"
    );
    if !all_failures.is_empty() {
        eprintln!("the close race (a handshake in the instant of the close): {all_failures:?}");
    }
    assert_eq!(refused, CLIENTS, "every loop ends at a refused connect");
    let report = within("the report", graceful.wait()).await;
    assert!(report.is_clean(), "{report}");
    assert!(report.connections_from_backlog.is_some(), "{report}");
    running.stopped().await;
    eprintln!(
        "answered {} ({} before the trigger), every loop ended refused, {:?} taken from the backlog",
        answered.load(Ordering::Relaxed),
        before,
        report.connections_from_backlog
    );
}

// -------------------------------------------------------- bounded ends --

/// An untracked HTTP/2 stream (like a gRPC health `Watch`) still open when
/// the drain completes is reset then; it does not hold the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untracked_h2_stream_is_reset_when_the_drain_completes() {
    let graceful = coordinator_for(LONG_CLEANUP);
    let running = start(Server::new(&graceful), router(&graceful)).await;
    let h2 = H2::connect(running.addr).await;
    let res = within("GET /forever", h2.get("/forever")).await.unwrap();
    let mut body = res.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first\n");

    let (report, took) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    assert!(took < NOT_HELD, "the report took {took:?}");
    assert_eq!(
        report.streams_reset,
        Some(1),
        "the report says so: {report}"
    );
    assert!(
        report
            .to_string()
            .contains("1 untracked response reset at the end"),
        "{report}"
    );
    let end = within("the end of the untracked stream", body.frame()).await;
    assert!(
        matches!(end, Some(Err(_))),
        "reset, not ended cleanly: {end:?}"
    );
    let _ = within("the h2 connection to end", h2.conn).await;
    running.stopped().await;
}

/// The same on HTTP/1.1: the untracked response is cut (its connection
/// closed) when the drain completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untracked_http1_stream_is_cut_when_the_drain_completes() {
    let graceful = coordinator_for(LONG_CLEANUP);
    let running = start(Server::new(&graceful), router(&graceful)).await;
    let mut h1 = H1::connect(running.addr).await;
    let res = h1.get("/forever").await.unwrap();
    let mut body = res.into_body();
    let first = within("the first chunk", body.frame())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first\n");

    let (report, took) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    assert!(took < NOT_HELD, "the report took {took:?}");
    assert_eq!(
        report.streams_reset,
        Some(1),
        "the report says so: {report}"
    );
    let end = within("the end of the untracked stream", body.frame()).await;
    assert!(
        matches!(end, Some(Err(_))),
        "cut, not ended cleanly: {end:?}"
    );
    running.stopped().await;
}

/// A client that never reads its (tracked, whole) response: once hyper has
/// taken the body the drain is over, and the connection, stuck writing, is
/// cut after the stall timeout instead of holding the report.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_after_the_stall_timeout() {
    let graceful = coordinator_for(LONG_CLEANUP);
    let server = Server::new(&graceful).stall_timeout(Duration::from_millis(300));
    let (called_tx, mut called) = tokio::sync::mpsc::unbounded_channel::<()>();
    let app = Router::new()
        .route(
            "/big",
            get(move || async move {
                let _ = called_tx.send(());
                vec![b'x'; BIG]
            }),
        )
        .layer(graceful.layer());
    let running = start(server, app).await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Counted from the call on; the drain completes when hyper has taken
    // the body, long before the client could have read it.
    within("the handler", called.recv()).await.unwrap();
    let (report, took) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    assert!(took < NOT_HELD, "the report took {took:?}");
    assert_eq!(
        report.connections_cut,
        Some(1),
        "the report says so: {report}"
    );
    assert!(
        report.to_string().contains("1 cut for the stall timeout"),
        "{report}"
    );
    running.stopped().await;
    // What the client gets when it reads at last: less than the body.
    let (got, _) = read_to_end(&mut s).await;
    assert!(got.len() < BIG, "{} bytes", got.len());
}

/// A peer that never closes its side during the lingering close (it read
/// its response, then keeps the socket open and silent) is let go after the
/// linger; the report is not held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_closes_does_not_hold_the_report() {
    let graceful = coordinator_for(LONG_CLEANUP);
    let running = start(Server::new(&graceful), router(&graceful)).await;
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = within("the response", s.read(&mut buf)).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("hello\n"));

    let (report, took) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.connections_closed_idle, Some(1), "{report}");
    assert!(took < NOT_HELD, "the report took {took:?}");
    // Our side was closed cleanly (FIN), while this one never closed.
    let n = within("the server's FIN", s.read(&mut buf)).await.unwrap();
    assert_eq!(n, 0);
    running.stopped().await;
}

/// A handler that panics takes its connection down, is logged, and
/// neither stops the server nor holds the shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_connection_does_not_stop_the_server() {
    let graceful = coordinator_for(LONG_CLEANUP);
    let running = start(Server::new(&graceful), router(&graceful)).await;
    let mut h1 = H1::connect(running.addr).await;
    assert!(h1.get("/panic").await.is_err());
    let mut again = H1::connect(running.addr).await;
    assert_eq!(
        body_text(again.get("/").await.unwrap()).await.unwrap(),
        "hello\n"
    );
    let (report, took) = shut_down(&graceful).await;
    assert!(took < NOT_HELD, "the report took {took:?}");
    assert!(report.stragglers.is_empty(), "{report}");
    running.stopped().await;
}

// ------------------------------------------------------------ bad input --

/// A malformed head gets 400 and a close; one larger than the read buffer
/// gets 431 and a close; neither holds the shutdown afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_heads_get_400_or_431_and_a_close() {
    let graceful = coordinator_for(LONG_CLEANUP);
    let running = start(Server::new(&graceful), router(&graceful)).await;

    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost x\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_to_end(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400 Bad Request"), "{text}");

    let mut s = TcpStream::connect(running.addr).await.unwrap();
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "y".repeat(1 << 20)
    );
    // The server may close before reading it all: a write error is fine.
    let _ = s.write_all(big.as_bytes()).await;
    let (got, _) = read_to_end(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{text}"
    );

    // Not HTTP at all.
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(b"\x16\x03\x01\x00\x05hello\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_to_end(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );

    let (report, took) = shut_down(&graceful).await;
    assert!(report.is_clean(), "{report}");
    assert!(took < NOT_HELD, "the report took {took:?}");
    running.stopped().await;
}
