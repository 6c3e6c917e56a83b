//! Errors of the domain layer: each says what kind of failure it is (the API maps the kind to a
//! gRPC status in one place) and names the field or object involved.

use crate::dataplane::DataplaneError;

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    /// A request field is malformed.
    #[error("{field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{kind} {name} not found{detail}")]
    NotFound { kind: &'static str, name: String, detail: &'static str },
    #[error("{kind} {name} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    #[error("{what}: all {capacity} in use")]
    Exhausted { what: &'static str, capacity: u32 },
    /// The request is well-formed but the system is not in a state to carry it out.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller is not the controller allowed to write (arbitration).
    #[error("{0}")]
    PermissionDenied(String),
    /// An ECMP group names a member that an earlier entry of its batch was to add, and that
    /// entry failed: the member does not exist, as if the group came alone after that batch.
    #[error("next hop {member} not found: its entry {entry} failed")]
    MemberFailed { member: u32, entry: String },
    /// Another error about one item of a request: `field` names it (`routes[3].next_hop`).
    #[error("{field}: {source}")]
    At {
        field: String,
        #[source]
        source: Box<DomainError>,
    },
    /// A kernel operation failed unexpectedly; nothing was changed.
    #[error("dataplane: {source}")]
    Internal {
        #[source]
        source: DataplaneError,
    },
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), reason: reason.into() }
    }

    /// This error, about the request item `field`.
    pub fn at(self, field: impl Into<String>) -> Self {
        Self::At { field: field.into(), source: Box::new(self) }
    }

    /// What kind of failure this is (the innermost error decides).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument { .. } => ErrorKind::InvalidArgument,
            Self::NotFound { .. } | Self::MemberFailed { .. } => ErrorKind::NotFound,
            Self::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Self::Exhausted { .. } => ErrorKind::Exhausted,
            Self::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            Self::PermissionDenied(_) => ErrorKind::PermissionDenied,
            Self::Internal { .. } => ErrorKind::Internal,
            Self::At { source, .. } => source.kind(),
        }
    }
}

/// The kinds of failure, one per gRPC status the API uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    Exhausted,
    FailedPrecondition,
    PermissionDenied,
    Internal,
}

impl From<DataplaneError> for DomainError {
    fn from(e: DataplaneError) -> Self {
        match e {
            DataplaneError::XdpModeUnsupported { .. } | DataplaneError::XdpBusy { .. } => {
                Self::FailedPrecondition(e.to_string())
            }
            DataplaneError::InterfaceGone { interface } => {
                Self::NotFound { kind: "interface", name: interface, detail: " (it disappeared while being attached)" }
            }
            other => Self::Internal { source: other },
        }
    }
}
