//! The one place where errors become gRPC statuses: the domain's, by kind, and the few a
//! handler meets outside the domain (a blocking task that did not finish, a netlink dump), which
//! are INTERNAL.

use thiserror::Error;
use tonic::Status;
use tracing::error;

use crate::{
    domain::{DomainError, ErrorKind},
    events::netlink::NetlinkError,
};

/// A domain call run on the blocking pool (see [`super::blocking`]) that did not return: it
/// panicked, or the runtime is shutting down.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct TaskFailed(#[from] pub tokio::task::JoinError);

/// INTERNAL, logged: the client cannot do anything about it, the operator should see it.
fn internal(msg: String) -> Status {
    error!(error = %msg, "internal dataplane error");
    Status::internal(msg)
}

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Self {
        let msg = e.to_string();
        match e.kind() {
            ErrorKind::InvalidArgument => Status::invalid_argument(msg),
            ErrorKind::NotFound => Status::not_found(msg),
            ErrorKind::AlreadyExists => Status::already_exists(msg),
            ErrorKind::Exhausted => Status::resource_exhausted(msg),
            ErrorKind::FailedPrecondition => Status::failed_precondition(msg),
            ErrorKind::Internal => internal(msg),
        }
    }
}

impl From<TaskFailed> for Status {
    fn from(e: TaskFailed) -> Self {
        internal(e.to_string())
    }
}

impl From<NetlinkError> for Status {
    fn from(e: NetlinkError) -> Self {
        internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    #[test]
    fn status_from_domain_error_maps_each_kind() {
        let cases = [
            (DomainError::invalid("name", "must not be empty"), Code::InvalidArgument),
            (DomainError::NotFound { kind: "interface", name: "x".into(), detail: "" }, Code::NotFound),
            (DomainError::AlreadyExists { kind: "interface", name: "x".into() }, Code::AlreadyExists),
            (DomainError::Exhausted { what: "interface slots", capacity: 1 }, Code::ResourceExhausted),
            (DomainError::FailedPrecondition("busy".into()), Code::FailedPrecondition),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(e).code(), code);
        }
        let s = Status::from(DomainError::invalid("interfaces[3].name", "must not be empty"));
        assert_eq!(s.message(), "interfaces[3].name: must not be empty");
        let nested = DomainError::NotFound { kind: "next hop", name: "9".into(), detail: "" }.at("routes[2].next_hop");
        let s = Status::from(nested);
        assert_eq!((s.code(), s.message()), (Code::NotFound, "routes[2].next_hop: next hop 9 not found"));
    }

    #[tokio::test]
    async fn status_from_task_failed_panicked_task_is_internal_with_join_message() {
        let join = tokio::task::spawn_blocking(|| panic!("boom")).await.unwrap_err();
        let want = join.to_string();
        let s = Status::from(TaskFailed(join));
        assert_eq!((s.code(), s.message()), (Code::Internal, want.as_str()));
    }

    #[test]
    fn status_from_netlink_error_is_internal_with_its_message() {
        let e = NetlinkError::Socket { source: std::io::Error::other("no netlink here") };
        let s = Status::from(e);
        assert_eq!((s.code(), s.message()), (Code::Internal, "opening the rtnetlink socket: no netlink here"));
    }
}
