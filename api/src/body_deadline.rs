//! A deadline for reading a request's body: a request whose body has not arrived whole
//! `IDEM_BODY_READ_TIMEOUT_SECONDS` after its head is answered 408 and its connection closed.
//!
//! The header read timeout (`serve`) stops a client that dribbles its request head; without
//! this, one that sends a head promising a body and then the body a byte at a time would hold
//! its connection, and the handler reading it, for as long as it liked (the body limits bound
//! the size, not the time). The deadline counts from the head, for the whole body: a slow but
//! honest upload of the largest body (a branding upload: two 2 MiB images, ~4.1 MiB) needs
//! ~71 KB/s to make the default 60 s. Requests without a body (every long-poll) are not
//! wrapped at all.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::app::Shared;

/// What a body read past its deadline fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// A request body that fails once its deadline has passed, and says so in `expired`.
struct DeadlineBody {
    inner: Body,
    deadline: Instant,
    /// Made when the body first has to wait: a body that is there at once needs no timer.
    timer: Option<Pin<Box<Sleep>>>,
    expired: Arc<AtomicBool>,
}

impl DeadlineBody {
    /// `inner`, failing once `deadline` has passed; `expired` is set when it does.
    fn wrap(inner: Body, deadline: Instant, expired: Arc<AtomicBool>) -> Body {
        Body::new(DeadlineBody {
            inner,
            deadline,
            timer: None,
            expired,
        })
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if this.expired.load(Ordering::Relaxed) {
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline;
        let timer = this
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                this.expired.store(true, Ordering::Relaxed);
                Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware: gives a request that has a body the configured time to deliver it, and answers
/// 408 (closing the connection, whose next request cannot be found in a half-read body) if
/// the handler's read ran out of it, whatever the handler made of the failed read.
pub async fn body_deadline(State(state): State<Shared>, request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + state.config.body_read_timeout;
    let request = request.map(|inner| DeadlineBody::wrap(inner, deadline, expired.clone()));
    let response = next.run(request).await;
    if !expired.load(Ordering::Relaxed) {
        return response;
    }
    let mut timed_out = crate::problem::Problem::new(
        StatusCode::REQUEST_TIMEOUT,
        "Request Timeout",
        format!(
            "the request body did not arrive within {} s of its head",
            state.config.body_read_timeout.as_secs()
        ),
    )
    .into_response();
    timed_out
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    timed_out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A body of the chunks sent on a channel, ending when the sender is dropped.
    struct Chunks(tokio::sync::mpsc::Receiver<Bytes>);

    impl HttpBody for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|chunk| chunk.map(|chunk| Ok(Frame::data(chunk))))
        }
    }

    /// A body due in 5 s whose chunks are sent on the channel, and whether it expired.
    fn due_in_5_seconds() -> (Body, tokio::sync::mpsc::Sender<Bytes>, Arc<AtomicBool>) {
        let (send, receive) = tokio::sync::mpsc::channel(1);
        let expired = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + Duration::from_secs(5);
        let body = DeadlineBody::wrap(Body::new(Chunks(receive)), deadline, expired.clone());
        (body, send, expired)
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stalls_past_its_deadline_fails_and_says_so() {
        let (body, send, expired) = due_in_5_seconds();
        send.send(Bytes::from_static(b"{\"a\":")).await.unwrap();
        let error = axum::body::to_bytes(body, 1024).await.unwrap_err();
        assert!(
            std::error::Error::source(&error)
                .is_some_and(|source| source.to_string().contains("did not arrive in time"))
                || error.to_string().contains("did not arrive in time"),
            "{error}"
        );
        assert!(expired.load(Ordering::Relaxed));
        drop(send);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_arrives_before_its_deadline_is_read_whole() {
        let (body, send, expired) = due_in_5_seconds();
        let sender = tokio::spawn(async move {
            for part in [&b"{\"a\":"[..], b"1}"] {
                tokio::time::sleep(Duration::from_secs(2)).await;
                send.send(Bytes::from_static(part)).await.unwrap();
            }
        });
        let read = axum::body::to_bytes(body, 1024).await.unwrap();
        assert_eq!(&read[..], b"{\"a\":1}");
        assert!(!expired.load(Ordering::Relaxed));
        sender.await.unwrap();
    }
}
