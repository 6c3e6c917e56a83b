//! A tower layer, outermost in front of every service, that counts and times each gRPC call by
//! method and status code ([`crate::metrics::RpcMetrics`]). The status is read where gRPC puts
//! it: the response headers of a call refused at once (trailers-only), otherwise the trailers
//! after the last message, so a stream is recorded when it ends. A call whose response body is
//! dropped before its trailers (the client went away) is recorded as CANCELLED.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::body::Body;
use tower::{Layer, Service};

use super::body::{status_of, Ending};
use crate::metrics::RpcMetrics;

/// The layer; cheap to clone.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    metrics: Arc<RpcMetrics>,
}

impl RpcMetricsLayer {
    pub fn new(metrics: Arc<RpcMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcMetricsLayer {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Clone)]
pub struct Recorded<S> {
    inner: S,
    metrics: Arc<RpcMetrics>,
}

impl<S> Service<http::Request<Body>> for Recorded<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            let pending = Pending { metrics, method, started };
            Ok(match status_of(res.headers()) {
                Some(code) => {
                    pending.done(code);
                    res
                }
                None => res.map(|body| Ending::wrap(body, move |code| pending.done(code))),
            })
        })
    }
}

/// A call not recorded yet.
struct Pending {
    metrics: Arc<RpcMetrics>,
    method: String,
    started: Instant,
}

impl Pending {
    fn done(self, code: tonic::Code) {
        self.metrics.record(&self.method, code, self.started.elapsed());
    }
}
