//! The one place where domain errors become gRPC statuses.

use tonic::Status;
use tracing::error;

use crate::domain::DomainError;

impl From<DomainError> for Status {
    fn from(e: DomainError) -> Self {
        let msg = e.to_string();
        match e {
            DomainError::InvalidArgument { .. } => Status::invalid_argument(msg),
            DomainError::NotFound { .. } => Status::not_found(msg),
            DomainError::AlreadyExists { .. } => Status::already_exists(msg),
            DomainError::Exhausted { .. } => Status::resource_exhausted(msg),
            DomainError::FailedPrecondition(_) => Status::failed_precondition(msg),
            DomainError::Internal { source } => {
                error!(error = %source, "internal dataplane error");
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
    }
}
