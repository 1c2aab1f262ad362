//! A response body written piece by piece from another task: what a streamed answer (server-sent
//! events, a sealed stream) is sent as.

use axum::body::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// A body fed through a channel. Each `Ok` is sent as it comes; an `Err` ends the body with an
/// error, which makes hyper abort the connection, so the client sees the answer cut rather than a
/// clean end. A sender dropped without an `Err` ends the body normally: a producer that may fail
/// sends its error first.
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl ChannelBody {
    /// A body and the sender that feeds it, holding at most `depth` pieces not yet sent.
    pub fn channel(depth: usize) -> (mpsc::Sender<Result<Bytes, std::io::Error>>, ChannelBody) {
        let (tx, rx) = mpsc::channel(depth.max(1));
        (tx, ChannelBody { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
            Poll::Ready(Some(Err(e))) => {
                // Nothing after an error.
                self.rx.close();
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn pieces_arrive_in_order_and_an_error_ends_the_body() {
        let (tx, body) = ChannelBody::channel(2);
        tokio::spawn(async move {
            tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
            tx.send(Ok(Bytes::from_static(b"b"))).await.unwrap();
        });
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"ab");

        let (tx, body) = ChannelBody::channel(2);
        tx.send(Ok(Bytes::from_static(b"a"))).await.unwrap();
        tx.send(Err(std::io::Error::other("cut"))).await.unwrap();
        assert!(body.collect().await.is_err());
    }
}
