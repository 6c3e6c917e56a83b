//! The one place where errors become gRPC statuses: the domain's, by kind, and the few a
//! handler meets outside the domain (a blocking task that did not finish, a netlink dump), which
//! are INTERNAL.

use thiserror::Error;
use tonic::{Code, Status};
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

/// The gRPC code of each kind of domain failure.
pub(super) fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::Exhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Internal => Code::Internal,
    }
}

/// A domain error's code and message where it travels inside a message (a session's stream
/// error, a batch's entry status) rather than as the call's status; INTERNAL is logged as the
/// call's status would be.
pub(super) fn code_and_message(e: &DomainError) -> (Code, String) {
    let msg = e.to_string();
    let code = code(e.kind());
    if code == Code::Internal {
        error!(error = %msg, "internal dataplane error");
    }
    (code, msg)
}

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Self {
        let msg = e.to_string();
        match e.kind() {
            ErrorKind::Internal => internal(msg),
            kind => Status::new(code(kind), msg),
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
    use super::*;

    #[test]
    fn status_from_domain_error_maps_each_kind() {
        let cases = [
            (DomainError::invalid("name", "must not be empty"), Code::InvalidArgument),
            (DomainError::NotFound { kind: "interface", name: "x".into(), detail: "" }, Code::NotFound),
            (DomainError::AlreadyExists { kind: "interface", name: "x".into() }, Code::AlreadyExists),
            (DomainError::Exhausted { what: "interface slots", capacity: 1 }, Code::ResourceExhausted),
            (DomainError::FailedPrecondition("busy".into()), Code::FailedPrecondition),
            (DomainError::PermissionDenied("not primary".into()), Code::PermissionDenied),
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
