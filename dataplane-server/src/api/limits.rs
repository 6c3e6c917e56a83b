//! Limits on what callers can hold open, a tower layer in front of every service (after the
//! metrics layer, so refused calls are counted): at most `--max-subscribers` open streams of each
//! subscription kind (flow misses, netlink events, counter watches, controller sessions), and at
//! most `--max-concurrent-calls` other calls in flight. Over either, RESOURCE_EXHAUSTED naming
//! the limit, before any handler runs. A node agent must not be knocked over by one client
//! opening ten thousand watches or a thousand million-route batches at once.
//!
//! Health checks are never limited (probes must get through a busy server), nor reflection.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
};

use tonic::{body::Body, Status};
use tower::{Layer, Service};

use super::body::Ending;

/// The long-lived subscriptions, each counted on its own: what a caller holds open for as long
/// as it likes.
const SUBSCRIPTIONS: &[&str] = &[
    "/dataplane.v1.Flows/SubscribeFlowMisses",
    "/dataplane.v1.Events/SubscribeNetlinkEvents",
    "/dataplane.v1.Telemetry/WatchStats",
    "/dataplane.v1.Controller/Session",
];

/// What the layer enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_subscribers: usize,
    pub max_concurrent_calls: usize,
}

/// The layer: the counters shared by every connection of a listener.
#[derive(Clone)]
pub struct LimitLayer {
    limits: Limits,
    calls: Arc<AtomicUsize>,
    streams: Arc<HashMap<&'static str, AtomicUsize>>,
}

impl LimitLayer {
    pub fn new(limits: Limits) -> Self {
        let streams = SUBSCRIPTIONS.iter().map(|m| (*m, AtomicUsize::new(0))).collect();
        Self { limits, calls: Arc::new(AtomicUsize::new(0)), streams: Arc::new(streams) }
    }
}

impl<S> Layer<S> for LimitLayer {
    type Service = Limited<S>;

    fn layer(&self, inner: S) -> Limited<S> {
        Limited { inner, layer: self.clone() }
    }
}

#[derive(Clone)]
pub struct Limited<S> {
    inner: S,
    layer: LimitLayer,
}

/// A slot taken in a counter, given back when dropped.
struct Slot(Arc<dyn Fn() + Send + Sync>);

impl Drop for Slot {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Takes a slot of `counter` unless `max` are taken.
fn take(counter: &AtomicUsize, max: usize) -> bool {
    counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
}

impl<S> Service<http::Request<Body>> for Limited<S>
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
        let path = req.uri().path();
        if !path.starts_with("/dataplane.") {
            return Box::pin(self.inner.call(req));
        }
        let refuse = |msg: String| -> Self::Future {
            tracing::debug!(method = %path, "{msg}");
            Box::pin(std::future::ready(Ok(Status::resource_exhausted(msg).into_http())))
        };
        if let Some((method, open)) = self.layer.streams.get_key_value(path) {
            let max = self.layer.limits.max_subscribers;
            if !take(open, max) {
                return refuse(format!(
                    "{max} {method} streams are open, the most this server allows (--max-subscribers)"
                ));
            }
            // Held for the stream's life: given back when its response body goes.
            let streams = self.layer.streams.clone();
            let method: &'static str = method;
            let slot = Slot(Arc::new(move || {
                if let Some(n) = streams.get(method) {
                    n.fetch_sub(1, Ordering::AcqRel);
                }
            }));
            let fut = self.inner.call(req);
            return Box::pin(async move {
                let res = fut.await?;
                Ok(res.map(|body| Ending::wrap(body, move |_| drop(slot))))
            });
        }
        let max = self.layer.limits.max_concurrent_calls;
        if !take(&self.layer.calls, max) {
            return refuse(format!("{max} calls are in flight, the most this server allows (--max-concurrent-calls)"));
        }
        let calls = self.layer.calls.clone();
        let slot = Slot(Arc::new(move || {
            calls.fetch_sub(1, Ordering::AcqRel);
        }));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await?;
            // A call's work is done when its response is (a listing streams what it read).
            Ok(res.map(|body| Ending::wrap(body, move |_| drop(slot))))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_stops_at_max_and_slots_give_back() {
        let n = Arc::new(AtomicUsize::new(0));
        assert!(take(&n, 2) && take(&n, 2) && !take(&n, 2));
        let m = n.clone();
        drop(Slot(Arc::new(move || {
            m.fetch_sub(1, Ordering::AcqRel);
        })));
        assert!(take(&n, 2), "a slot given back is taken again");
    }
}
