//! The one place where domain errors become gRPC statuses.

use tonic::Status;
use tracing::error;

use crate::domain::{DomainError, ErrorKind};

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Self {
        let msg = e.to_string();
        match e.kind() {
            ErrorKind::InvalidArgument => Status::invalid_argument(msg),
            ErrorKind::NotFound => Status::not_found(msg),
            ErrorKind::AlreadyExists => Status::already_exists(msg),
            ErrorKind::Exhausted => Status::resource_exhausted(msg),
            ErrorKind::FailedPrecondition => Status::failed_precondition(msg),
            ErrorKind::Internal => {
                error!(error = %msg, "internal dataplane error");
                Status::internal(msg)
            }
        }
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
}
