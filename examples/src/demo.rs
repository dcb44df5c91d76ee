//! The `demo.v1.Demo` gRPC service, written by hand so that nothing needs
//! `protoc` at build time: prost messages with `#[derive(prost::Message)]`,
//! a server built on `tonic::server::Grpc` and a client on
//! `tonic::client::Grpc`, both with `tonic_prost::ProstCodec`.
//!
//! Shared by the `tonic` and `multi` examples and by the end-to-end tests
//! (as `tower_graceful_examples::demo`), so the tests exercise exactly the
//! service the examples run. The equivalent `.proto` is
//! `examples/proto/demo.proto` (documentation only; nothing compiles it).
//!
//! * `Hello` (unary): `HelloRequest { name }` → `HelloReply { message }`.
//! * `Count` (server streaming): `CountRequest { count, interval_ms,
//!   stop_on_shutdown }` → a stream of `Tick { seq, shutting_down }`. It sends
//!   `count` ticks, one every `interval_ms`. With `stop_on_shutdown`, it also
//!   ends as soon as the [`ShutdownSignal`] fires (draining began): one last
//!   tick with `shutting_down = true`, then status OK, so the client knows
//!   where to resume. Without it, an accepted stream runs to its end even
//!   while the server drains (until the drain deadline).

#![allow(missing_docs)]

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::Stream;
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;
use tower_graceful::ShutdownSignal;

/// The fully qualified service name (what tonic-health reports on).
pub const SERVICE_NAME: &str = "demo.v1.Demo";
const HELLO: &str = "/demo.v1.Demo/Hello";
const COUNT: &str = "/demo.v1.Demo/Count";

/// Largest `count` the server accepts, so one request cannot hold a stream
/// open forever.
pub const MAX_COUNT: u32 = 100_000;
/// Largest `interval_ms` the server accepts.
pub const MAX_INTERVAL_MS: u32 = 60_000;

#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct HelloRequest {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, Eq, ::prost::Message)]
pub struct HelloReply {
    #[prost(string, tag = "1")]
    pub message: String,
}

#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct CountRequest {
    /// How many ticks to send.
    #[prost(uint32, tag = "1")]
    pub count: u32,
    /// Pause before each tick.
    #[prost(uint32, tag = "2")]
    pub interval_ms: u32,
    /// End the stream early (cleanly) when the server starts draining.
    #[prost(bool, tag = "3")]
    pub stop_on_shutdown: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ::prost::Message)]
pub struct Tick {
    /// 1-based sequence number.
    #[prost(uint32, tag = "1")]
    pub seq: u32,
    /// Set on the last tick of a stream cut short by shutdown.
    #[prost(bool, tag = "2")]
    pub shutting_down: bool,
}

// ---------------------------------------------------------------- server --

/// The server: route by path, decode with prost, call the handler.
#[derive(Clone, Debug, Default)]
pub struct DemoServer {
    _private: (),
}

impl DemoServer {
    pub fn new() -> Self {
        Self::default()
    }
}

impl NamedService for DemoServer {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tower::Service<http::Request<B>> for DemoServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            HELLO => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.unary(tower::service_fn(hello), req).await)
            }),
            COUNT => Box::pin(async move {
                let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
                Ok(grpc.server_streaming(tower::service_fn(count), req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

async fn hello(req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
    let name = req.into_inner().name;
    let name = if name.is_empty() {
        "world".to_owned()
    } else {
        name
    };
    Ok(Response::new(HelloReply {
        message: format!("hello, {name}"),
    }))
}

/// The stream type of `Count`.
pub type TickStream = Pin<Box<dyn Stream<Item = Result<Tick, Status>> + Send + 'static>>;

async fn count(req: Request<CountRequest>) -> Result<Response<TickStream>, Status> {
    // `Coordinator::layer()` puts the signal into the request's extensions;
    // tonic carries them over from the HTTP request.
    // From the extensions if a `AddSignalLayer` put it there, else from the
    // `InFlight` layer that is polling this call (`coordinator.layer()`).
    let signal = req
        .extensions()
        .get::<ShutdownSignal>()
        .cloned()
        .or_else(ShutdownSignal::current);
    let args = req.into_inner();
    if args.count > MAX_COUNT || args.interval_ms > MAX_INTERVAL_MS {
        return Err(Status::invalid_argument(format!(
            "count must be at most {MAX_COUNT} and interval_ms at most {MAX_INTERVAL_MS}"
        )));
    }
    let signal = if args.stop_on_shutdown {
        match signal {
            Some(s) => Some(s),
            None => {
                return Err(Status::failed_precondition(
                    "stop_on_shutdown needs the tower-graceful layer on this server",
                ))
            }
        }
    } else {
        None
    };
    Ok(Response::new(Box::pin(ticks(args, signal))))
}

struct TickState {
    next: u32,
    count: u32,
    interval: Duration,
    signal: Option<ShutdownSignal>,
    done: bool,
}

fn ticks(
    args: CountRequest,
    signal: Option<ShutdownSignal>,
) -> impl Stream<Item = Result<Tick, Status>> {
    let state = TickState {
        next: 1,
        count: args.count,
        interval: Duration::from_millis(u64::from(args.interval_ms)),
        signal,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done || st.next > st.count {
            return None;
        }
        let seq = st.next;
        let stopped = match &st.signal {
            // Cancel safe: the signal keeps its state, so nothing is lost
            // when the sleep wins.
            Some(signal) => tokio::select! {
                biased;
                _ = signal.draining() => true,
                _ = tokio::time::sleep(st.interval) => false,
            },
            None => {
                tokio::time::sleep(st.interval).await;
                false
            }
        };
        if stopped {
            st.done = true;
            let tick = Tick {
                seq,
                shutting_down: true,
            };
            return Some((Ok(tick), st));
        }
        st.next += 1;
        Some((
            Ok(Tick {
                seq,
                shutting_down: false,
            }),
            st,
        ))
    })
}

// ---------------------------------------------------------------- client --

/// A client for `demo.v1.Demo`, on a tonic `Channel` or any other gRPC
/// transport (a tower service of HTTP requests).
#[derive(Clone, Debug)]
pub struct DemoClient<T = tonic::transport::Channel> {
    inner: tonic::client::Grpc<T>,
}

impl DemoClient {
    pub fn new(channel: tonic::transport::Channel) -> Self {
        Self {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// Connects to `http://ADDR` (loopback in the tests) within `timeout`.
    pub async fn connect(
        addr: std::net::SocketAddr,
        timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(timeout)
            .connect()
            .await?;
        Ok(Self::new(channel))
    }
}

impl<T> DemoClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    /// A client on `transport`, which sends to `origin` (`http://host:port`).
    pub fn with_origin(transport: T, origin: http::Uri) -> Self {
        Self {
            inner: tonic::client::Grpc::with_origin(transport, origin),
        }
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("channel not ready: {}", e.into())))
    }

    pub async fn hello(
        &mut self,
        req: impl tonic::IntoRequest<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(HELLO);
        self.inner
            .unary(req.into_request(), path, ProstCodec::default())
            .await
    }

    pub async fn count(
        &mut self,
        req: impl tonic::IntoRequest<CountRequest>,
    ) -> Result<Response<tonic::codec::Streaming<Tick>>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(COUNT);
        self.inner
            .server_streaming(req.into_request(), path, ProstCodec::default())
            .await
    }
}
