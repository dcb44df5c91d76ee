//! gRPC load for the rolling-restart harness (`tests/rolling/run.sh`): a real
//! tonic client of `demo.v1.Demo` (the examples' own client,
//! `tower_graceful_examples::demo`) that counts every call's outcome, with no
//! retries.
//!
//! ```text
//! grpc_load --addr 127.0.0.1:PORT [--connections 8] [--duration 60s]
//!           [--unary-interval-ms 25] [--stream-count 5] [--stream-interval-ms 200]
//!           [--timeout-ms 10000] [--stop-on-shutdown]
//! ```
//!
//! Each connection is its own client (one HTTP/2 connection through the
//! balancer at a time; a new one when the server sends GOAWAY or closes, and
//! the balancer picks the backend of the new connection). `--transport`
//! picks what carries the tonic client's calls:
//!
//! * `pool` (the default): hyper-util's client with its defaults
//!   (`http2_only`), which sends a request that never left its queue before
//!   the connection went away (GOAWAY, close) on a new connection instead
//!   (`retry_canceled_requests`, the default: no request that reached a
//!   server is sent twice);
//! * `channel`: tonic's own `Channel`, which (with hyper's HTTP/2 client,
//!   hyper#2500) still sends the first call after a GOAWAY on a connection
//!   with a stream open and fails it locally, within microseconds, without
//!   it ever reaching a server. `serve` sends its GOAWAY when the
//!   connection has no stream open, which closes most of that race, not
//!   all of it: a client whose calls follow each other back to back has no
//!   idle moment the server could pick;
//! * `channel-retry`: tonic's `Channel` below
//!   `tower_graceful::client::TransparentRetry`, which sends such a call
//!   (one that provably never left the client) again.
//!
//! On each connection two loops run side by side until the duration is over
//! or SIGINT / SIGTERM arrives:
//!
//! * unary `Hello` calls, one every `--unary-interval-ms`;
//! * server-streaming `Count` calls back to back, `--stream-count` ticks
//!   `--stream-interval-ms` apart. Without `--stop-on-shutdown` a stream must
//!   deliver every tick; with it, a stream may end early, cleanly, on a tick
//!   marked `shutting_down` (counted apart, not as a failure).
//!
//! Stopping starts no new call; calls in flight run to their end (each is
//! bounded by `--timeout-ms`). Then one JSON object is printed on stdout:
//! counts per outcome (`ok`, each gRPC code with its message, transport
//! errors with their cause), per operation (calls, ok, failed, worst and p99
//! latency) and totals. Progress goes to stderr; the line
//! `grpc_load: N connections established` says when the load is running,
//! and every failed call gets a line there too, with its connection and
//! when it started and failed (wall clock, seconds since the Unix epoch), to
//! match against the servers' logs. With `RUST_LOG` set (e.g.
//! `RUST_LOG=h2=trace`), the client's own tracing (tonic, hyper, h2) goes to
//! stderr as well.
//!
//! Exit status: 0 when the load ran (whatever the outcomes: the harness
//! judges them), 2 for bad arguments or when no connection could be made.

use std::collections::BTreeMap;
use std::error::Error as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::Code;
use tower_graceful_examples::demo::{CountRequest, DemoClient, HelloRequest};

/// What carries the calls (`--transport`).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Pool,
    Channel,
    ChannelRetry,
}

struct Args {
    addr: SocketAddr,
    kind: Kind,
    connections: usize,
    duration: Duration,
    unary_interval: Duration,
    stream_count: u32,
    stream_interval_ms: u32,
    timeout: Duration,
    stop_on_shutdown: bool,
}

const USAGE: &str = "usage: grpc_load --addr HOST:PORT [--transport pool|channel|channel-retry] [--connections N] [--duration 60s] \
[--unary-interval-ms MS] [--stream-count N] [--stream-interval-ms MS] [--timeout-ms MS] \
[--stop-on-shutdown]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        kind: Kind::Pool,
        connections: 8,
        duration: Duration::from_secs(60),
        unary_interval: Duration::from_millis(25),
        stream_count: 5,
        stream_interval_ms: 200,
        timeout: Duration::from_secs(10),
        stop_on_shutdown: false,
    };
    let mut addr = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--stop-on-shutdown" {
            args.stop_on_shutdown = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.to_owned());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |what: &str| -> Result<u64, String> {
            value
                .parse::<u64>()
                .map_err(|_| format!("{what}: {value:?} is not a whole number"))
        };
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--addr: {value:?} is not HOST:PORT"))?,
                )
            }
            "--transport" => {
                args.kind = match value.as_str() {
                    "pool" => Kind::Pool,
                    "channel" => Kind::Channel,
                    "channel-retry" => Kind::ChannelRetry,
                    other => {
                        return Err(format!(
                            "--transport: {other:?} is not pool, channel or channel-retry"
                        ))
                    }
                }
            }
            "--connections" => args.connections = num("--connections")?.clamp(1, 1000) as usize,
            "--duration" => {
                args.duration = tower_graceful_examples::parse_duration(&value)
                    .map_err(|e| format!("--duration: {e}"))?
            }
            "--unary-interval-ms" => {
                args.unary_interval = Duration::from_millis(num("--unary-interval-ms")?)
            }
            "--stream-count" => args.stream_count = num("--stream-count")?.clamp(1, 1000) as u32,
            "--stream-interval-ms" => {
                args.stream_interval_ms = num("--stream-interval-ms")?.min(60_000) as u32
            }
            "--timeout-ms" => {
                args.timeout = Duration::from_millis(num("--timeout-ms")?.clamp(1, 600_000))
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    args.addr = addr.ok_or_else(|| format!("--addr is required\n{USAGE}"))?;
    Ok(args)
}

/// The canonical name of a gRPC status code (as in the gRPC spec).
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// How a failed call is reported: `CODE: message`, plus the chain of causes
/// for transport errors (which carry the hyper / h2 error as their source).
fn status_kind(status: &tonic::Status) -> String {
    let mut kind = format!("{}: {}", code_name(status.code()), status.message());
    let mut source = status.source();
    let mut depth = 0;
    while let Some(e) = source {
        if depth == 4 {
            break;
        }
        let text = e.to_string();
        if !kind.contains(&text) {
            kind.push_str(" <- ");
            kind.push_str(&text);
        }
        source = e.source();
        depth += 1;
    }
    kind
}

/// The outcomes and latencies of one operation.
#[derive(Default)]
struct OpStats {
    outcomes: BTreeMap<String, u64>,
    latencies_ms: Vec<f64>,
    ok: u64,
    failed: u64,
}

impl OpStats {
    fn record(&mut self, outcome: Result<&'static str, String>, took: Duration) {
        self.latencies_ms.push(took.as_secs_f64() * 1000.0);
        match outcome {
            Ok(kind) => {
                self.ok += 1;
                *self.outcomes.entry(kind.to_owned()).or_default() += 1;
            }
            Err(kind) => {
                self.failed += 1;
                *self.outcomes.entry(kind).or_default() += 1;
            }
        }
    }

    fn json(&mut self) -> serde_json::Value {
        self.latencies_ms.sort_by(f64::total_cmp);
        let n = self.latencies_ms.len();
        let pick = |q: f64| -> f64 {
            if n == 0 {
                return 0.0;
            }
            let i = ((n as f64 * q).ceil() as usize).clamp(1, n) - 1;
            (self.latencies_ms[i] * 10.0).round() / 10.0
        };
        serde_json::json!({
            "calls": self.ok + self.failed,
            "ok": self.ok,
            "failed": self.failed,
            "p50_ms": pick(0.50),
            "p99_ms": pick(0.99),
            "max_ms": pick(1.0),
            "outcomes": self.outcomes,
        })
    }
}

#[derive(Default)]
struct Stats {
    unary: OpStats,
    stream: OpStats,
}

type Shared = Arc<Mutex<Stats>>;

/// What carries the calls: a tonic `Channel` or hyper-util's pooled client.
#[derive(Clone)]
enum Transport {
    Channel(tonic::transport::Channel),
    Retry(tower_graceful::client::TransparentRetry<tonic::transport::Channel>),
    Pool(
        Box<
            hyper_util::client::legacy::Client<
                hyper_util::client::legacy::connect::HttpConnector,
                tonic::body::Body,
            >,
        >,
    ),
}

/// A transport error, as a concrete type (rustc's `Send` check of the
/// spawned call loops trips over a boxed `dyn Error` here).
#[derive(Debug)]
struct TransportError(String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(" <- ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

impl tower::Service<http::Request<tonic::body::Body>> for Transport {
    type Response = http::Response<tonic::body::Body>;
    type Error = TransportError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, TransportError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), TransportError>> {
        match self {
            Transport::Channel(c) => {
                tower::Service::poll_ready(c, cx).map_err(|e| TransportError(chain(&e)))
            }
            Transport::Retry(c) => {
                tower::Service::poll_ready(c, cx).map_err(|e| TransportError(chain(&e)))
            }
            Transport::Pool(p) => {
                tower::Service::poll_ready(&mut **p, cx).map_err(|e| TransportError(chain(&e)))
            }
        }
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        match self {
            Transport::Channel(c) => {
                let fut = tower::Service::call(c, req);
                Box::pin(async move { fut.await.map_err(|e| TransportError(chain(&e))) })
            }
            Transport::Retry(c) => {
                let fut = tower::Service::call(c, req);
                Box::pin(async move { fut.await.map_err(|e| TransportError(chain(&e))) })
            }
            Transport::Pool(p) => {
                let fut = tower::Service::call(&mut **p, req);
                Box::pin(async move {
                    fut.await
                        .map(|r| r.map(tonic::body::Body::new))
                        .map_err(|e| TransportError(chain(&e)))
                })
            }
        }
    }
}

type Client = DemoClient<Transport>;

async fn connect(addr: SocketAddr, kind: Kind) -> Result<Client, String> {
    use tower::ServiceExt as _;
    let origin: http::Uri = format!("http://{addr}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let transport = if kind == Kind::Pool {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                // hyper-util's default: a request that was never sent (the
                // connection closed or sent GOAWAY before the request left the
                // client's queue) goes to a new connection. No request a server has
                // seen is ever sent twice.
                .retry_canceled_requests(true)
                .build_http::<tonic::body::Body>();
        // Open the connection now, as `Channel::connect` does.
        let probe = http::Request::get(format!("http://{addr}/"))
            .body(tonic::body::Body::empty())
            .unwrap();
        client
            .clone()
            .oneshot(probe)
            .await
            .map_err(|e| format!("{e}"))?;
        Transport::Pool(Box::new(client))
    } else {
        let channel = tonic::transport::Endpoint::from_shared(origin.to_string())
            .map_err(|e| format!("{e}"))?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| format!("{e}"))?;
        if kind == Kind::ChannelRetry {
            Transport::Retry(tower_graceful::client::TransparentRetry::new(channel))
        } else {
            Transport::Channel(channel)
        }
    };
    Ok(DemoClient::with_origin(transport, origin))
}

type CallFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<&'static str, String>> + Send>>;

// Boxed as `Send` here, where the transport is a concrete type: rustc cannot
// prove it through the generic client inside `tokio::spawn` (its
// higher-ranked `Send` check).
fn unary_call(mut client: Client) -> CallFuture {
    Box::pin(async move {
        let reply = client
            .hello(HelloRequest {
                name: "rolling".to_owned(),
            })
            .await
            .map_err(|s| status_kind(&s))?;
        if reply.get_ref().message == "hello, rolling" {
            Ok("ok")
        } else {
            Err(format!("wrong reply {:?}", reply.get_ref().message))
        }
    })
}

fn stream_call(mut client: Client, args: Arc<Args>) -> CallFuture {
    Box::pin(async move {
        let mut stream = client
            .count(CountRequest {
                count: args.stream_count,
                interval_ms: args.stream_interval_ms,
                stop_on_shutdown: args.stop_on_shutdown,
            })
            .await
            .map_err(|s| status_kind(&s))?
            .into_inner();
        let mut got = 0u32;
        loop {
            match stream.message().await {
                Ok(Some(tick)) => {
                    got += 1;
                    if tick.seq != got {
                        return Err(format!("tick {} where {got} was expected", tick.seq));
                    }
                    if tick.shutting_down {
                        // The server ended the stream early, cleanly, on purpose;
                        // it must be the last message.
                        return match stream.message().await {
                            Ok(None) => Ok("ok, ended early by shutdown"),
                            Ok(Some(_)) => Err("a tick after the shutting_down tick".to_owned()),
                            Err(s) => {
                                Err(format!("after the shutting_down tick: {}", status_kind(&s)))
                            }
                        };
                    }
                }
                Ok(None) if got == args.stream_count => return Ok("ok"),
                Ok(None) => {
                    return Err(format!(
                        "ended cleanly after {got} of {} ticks",
                        args.stream_count
                    ))
                }
                Err(s) => {
                    return Err(if got == 0 {
                        status_kind(&s)
                    } else {
                        format!("after {got} ticks: {}", status_kind(&s))
                    })
                }
            }
        }
    })
}

/// Wall-clock time as seconds since the Unix epoch, to the microsecond: the
/// same clock as the servers' log timestamps, so a failure can be matched
/// with what the server did at that moment.
fn wall_clock() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", t.as_secs(), t.subsec_micros())
}

/// Runs `op` until `stop` says so; each call bounded by `timeout`. Every
/// failed call is also logged on stderr, with when it started and ended
/// (wall clock) and on which connection.
async fn call_loop<F, Fut>(
    name: &'static str,
    conn: usize,
    mut op: F,
    pause: Duration,
    timeout: Duration,
    mut stop: watch::Receiver<bool>,
    stats: Shared,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<&'static str, String>>,
{
    while !*stop.borrow() {
        let started = Instant::now();
        let started_at = wall_clock();
        let outcome = match tokio::time::timeout(timeout, op()).await {
            Ok(r) => r,
            Err(_) => Err(format!("client timeout after {timeout:?}")),
        };
        if let Err(kind) = &outcome {
            eprintln!(
                "grpc_load: failed {name} on connection {conn}: started {started_at}, failed {} ({} ms): {kind}",
                wall_clock(),
                started.elapsed().as_millis()
            );
        }
        {
            let mut s = stats.lock().unwrap();
            let op_stats = if name == "unary" {
                &mut s.unary
            } else {
                &mut s.stream
            };
            op_stats.record(outcome, started.elapsed());
        }
        if !pause.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => {}
            }
        }
    }
}

async fn stop_signal() -> &'static str {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // Diagnostics only when asked for (RUST_LOG=h2=trace, say), on stderr:
    // stdout carries the JSON result.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = match parse_args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("grpc_load: {e}");
            return ExitCode::from(2);
        }
    };

    // One channel (one HTTP/2 connection) per client, all established before
    // the load starts.
    let mut clients = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        match tokio::time::timeout(Duration::from_secs(5), connect(args.addr, args.kind)).await {
            Ok(Ok(c)) => clients.push(c),
            Ok(Err(e)) => {
                eprintln!("grpc_load: connection {i} to {} failed: {e}", args.addr);
                return ExitCode::from(2);
            }
            Err(_) => {
                eprintln!("grpc_load: connection {i} to {} timed out", args.addr);
                return ExitCode::from(2);
            }
        }
    }
    eprintln!("grpc_load: {} connections established", clients.len());

    let (stop_tx, stop_rx) = watch::channel(false);
    let stats: Shared = Arc::default();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, client) in clients.into_iter().enumerate() {
        // Unary loop.
        let c = client.clone();
        let (stop, st) = (stop_rx.clone(), stats.clone());
        let (pause, timeout) = (args.unary_interval, args.timeout);
        // Offset each connection's first call within one interval.
        let offset = args
            .unary_interval
            .mul_f64(i as f64 / args.connections as f64);
        tasks.spawn(async move {
            tokio::time::sleep(offset).await;
            call_loop(
                "unary",
                i,
                move || {
                    let c = c.clone();
                    async move { unary_call(c).await }
                },
                pause,
                timeout,
                stop,
                st,
            )
            .await;
        });
        // Streaming loop, back to back.
        let c = client;
        let (stop, st) = (stop_rx.clone(), stats.clone());
        let a = args.clone();
        tasks.spawn(async move {
            call_loop(
                "stream",
                i,
                move || {
                    let c = c.clone();
                    let a = a.clone();
                    async move { stream_call(c, a).await }
                },
                Duration::ZERO,
                timeout,
                stop,
                st,
            )
            .await;
        });
    }
    drop(stop_rx);

    let why = tokio::select! {
        s = stop_signal() => s,
        _ = tokio::time::sleep(args.duration) => "duration over",
    };
    eprintln!(
        "grpc_load: stopping ({why}) after {:.1}s; waiting for calls in flight",
        started.elapsed().as_secs_f64()
    );
    let _ = stop_tx.send(true);
    // Every call is bounded by the timeout, so this ends; bounded anyway.
    let drained = tokio::time::timeout(args.timeout + Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        eprintln!("grpc_load: calls still in flight after the timeout; reporting without them");
        tasks.abort_all();
    }
    let elapsed = started.elapsed();

    let mut stats = stats.lock().unwrap();
    let (ok, failed) = (
        stats.unary.ok + stats.stream.ok,
        stats.unary.failed + stats.stream.failed,
    );
    let mut failures = BTreeMap::<String, u64>::new();
    for (op, s) in [("unary", &stats.unary), ("stream", &stats.stream)] {
        for (kind, n) in &s.outcomes {
            if !kind.starts_with("ok") {
                *failures.entry(format!("{op}: {kind}")).or_default() += n;
            }
        }
    }
    let summary = serde_json::json!({
        "addr": args.addr.to_string(),
        "connections": args.connections,
        "elapsed_s": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "stopped_by": why,
        "calls": ok + failed,
        "ok": ok,
        "failed": failed,
        "failures": failures,
        "unary": stats.unary.json(),
        "stream": stats.stream.json(),
    });
    println!("{summary}");
    ExitCode::SUCCESS
}
