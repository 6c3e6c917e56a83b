//! A response body that tells, once, how its call ended: the status in its trailers, the error
//! it failed with, UNKNOWN if it ended without a status, CANCELLED if dropped before its end
//! (the client went away). What the metrics layer records and the limits layer frees a slot on.

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::{body::Body, Code, Status};

/// `grpc-status` of a header map (response headers, or trailers), if there is one.
pub(super) fn status_of(h: &http::HeaderMap) -> Option<Code> {
    let v = h.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok()?;
    Some(Code::from(v))
}

/// `inner`, calling `ended` with the call's final code when it ends or is dropped.
pub(super) struct Ending<F: FnOnce(Code) + Send + 'static> {
    inner: Body,
    ended: Option<F>,
}

impl<F: FnOnce(Code) + Send + 'static> Ending<F> {
    pub(super) fn wrap(inner: Body, ended: F) -> Body {
        Body::new(Self { inner, ended: Some(ended) })
    }

    fn end(&mut self, code: Code) {
        if let Some(f) = self.ended.take() {
            f(code);
        }
    }
}

impl<F: FnOnce(Code) + Send + 'static> Drop for Ending<F> {
    fn drop(&mut self) {
        self.end(Code::Cancelled);
    }
}

// No field is structurally pinned: `inner` is moved into a fresh `Pin` on each poll.
impl<F: FnOnce(Code) + Send + 'static> Unpin for Ending<F> {}

impl<F: FnOnce(Code) + Send + 'static> HttpBody for Ending<F> {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_of) {
                    self.end(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.end(code);
            }
            // Ended without trailers: no status was sent.
            Poll::Ready(None) => self.end(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
