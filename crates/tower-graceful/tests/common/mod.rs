//! Helpers shared by the in-process tests in this directory: a coordinator
//! without OS signal handlers, a streaming body fed by a channel, requests
//! and a handler, and a bounded read of a response body.

#![allow(dead_code)] // each test file uses a different part

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tower_graceful::Coordinator;

pub(crate) const WAIT: Duration = Duration::from_secs(5);

pub(crate) fn coordinator() -> Coordinator {
    Coordinator::builder()
        .handle_signals(false)
        .build()
        .expect("valid config")
}

/// A streaming body fed by a channel: ends when the sender is dropped.
pub(crate) struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

pub(crate) fn channel_body() -> (mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = mpsc::channel(8);
    (tx, ChannelBody { rx })
}

pub(crate) fn get(path: &str) -> Request<String> {
    Request::get(path).body(String::new()).unwrap()
}

pub(crate) async fn ok_handler(_req: Request<String>) -> Result<Response<String>, Infallible> {
    Ok(Response::new("ok".to_owned()))
}

pub(crate) async fn body_text<B>(res: Response<B>) -> String
where
    B: Body,
    B::Error: std::fmt::Debug,
{
    let bytes = timeout(WAIT, res.into_body().collect())
        .await
        .expect("body in time")
        .expect("body ok")
        .to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}
