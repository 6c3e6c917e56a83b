//! Write fencing: a tower layer in front of every service that refuses, with PERMISSION_DENIED, a
//! mutating call from anyone but its role's primary controller (see `domain::arbitration`).
//!
//! The rule is by method path and denies by default: only the read-only methods listed here
//! pass unchecked, so an RPC added later is fenced unless someone decides it reads only.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{body::Body, Status};
use tower::{Layer, Service};

use crate::domain::{
    arbitration::{Arbiter, Caller},
    DomainError,
};

/// Metadata naming the caller's role (absent: "").
pub const ROLE_HEADER: &str = "dataplane-role";
/// Metadata carrying the caller's election id, in decimal.
pub const ELECTION_ID_HEADER: &str = "dataplane-election-id";

/// Methods that change nothing: reads, subscriptions, and the session stream (which arbitrates
/// on its own).
const READ_ONLY: &[&str] = &[
    "/dataplane.v1.System/GetStatus",
    "/dataplane.v1.Interfaces/ListInterfaces",
    "/dataplane.v1.Routing/ListVrfs",
    "/dataplane.v1.Routing/ListNextHops",
    "/dataplane.v1.Routing/ListRoutes",
    "/dataplane.v1.Routing/LookupRoute",
    "/dataplane.v1.Policy/ListPolicies",
    "/dataplane.v1.Flows/ListFlows",
    "/dataplane.v1.Flows/SubscribeFlowMisses",
    "/dataplane.v1.Events/SubscribeNetlinkEvents",
    "/dataplane.v1.Telemetry/WatchStats",
    "/dataplane.v1.Controller/Session",
];

/// Whether a call to `path` must pass the fence.
fn is_write(path: &str) -> bool {
    // Health and reflection are not ours and change nothing.
    path.starts_with("/dataplane.") && !READ_ONLY.contains(&path)
}

/// The caller named by a request's headers.
pub fn caller(headers: &http::HeaderMap) -> Result<Caller, DomainError> {
    let text = |name: &str| -> Result<Option<&str>, DomainError> {
        headers.get(name).map(|v| v.to_str().map_err(|_| DomainError::invalid(name, "not ASCII text"))).transpose()
    };
    let role = text(ROLE_HEADER)?.unwrap_or("").to_owned();
    let election_id = text(ELECTION_ID_HEADER)?
        .map(|v| {
            v.trim().parse::<u128>().map_err(|_| {
                DomainError::invalid(
                    format!("metadata {ELECTION_ID_HEADER}"),
                    format!("{v:?} is not a decimal 128-bit id"),
                )
            })
        })
        .transpose()?;
    Ok(Caller { role, election_id })
}

/// The layer; cheap to clone.
#[derive(Clone)]
pub struct FenceLayer {
    arbiter: Arc<Arbiter>,
}

impl FenceLayer {
    pub fn new(arbiter: Arc<Arbiter>) -> Self {
        Self { arbiter }
    }
}

impl<S> Layer<S> for FenceLayer {
    type Service = Fence<S>;

    fn layer(&self, inner: S) -> Fence<S> {
        Fence { inner, arbiter: self.arbiter.clone() }
    }
}

#[derive(Clone)]
pub struct Fence<S> {
    inner: S,
    arbiter: Arc<Arbiter>,
}

impl<S> Service<http::Request<Body>> for Fence<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if is_write(req.uri().path()) {
            let verdict = caller(req.headers()).and_then(|c| self.arbiter.check_write(&c));
            if let Err(e) = verdict {
                tracing::debug!(method = req.uri().path(), error = %e, "write refused by the fence");
                let refused = Status::from(e).into_http();
                return Box::pin(std::future::ready(Ok(refused)));
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_write_mutating_methods_fenced_reads_and_foreign_services_not() {
        assert!(is_write("/dataplane.v1.Routing/AddRoutes"));
        assert!(is_write("/dataplane.v1.System/Reset"));
        assert!(is_write("/dataplane.v1.Flows/InstallFlows"));
        assert!(!is_write("/dataplane.v1.Routing/ListRoutes"));
        assert!(!is_write("/dataplane.v1.Controller/Session"));
        assert!(!is_write("/grpc.health.v1.Health/Check"));
    }

    #[test]
    fn caller_reads_role_and_decimal_id_and_names_bad_metadata() {
        let mut h = http::HeaderMap::new();
        assert_eq!(caller(&h).unwrap(), Caller::default());
        h.insert(ROLE_HEADER, "mirror".parse().unwrap());
        h.insert(ELECTION_ID_HEADER, "340282366920938463463374607431768211455".parse().unwrap());
        assert_eq!(caller(&h).unwrap(), Caller { role: "mirror".into(), election_id: Some(u128::MAX) });
        h.insert(ELECTION_ID_HEADER, "0x10".parse().unwrap());
        assert!(caller(&h).unwrap_err().to_string().contains("dataplane-election-id"));
    }
}
