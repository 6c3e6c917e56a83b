//! Rust client for the dataplane.v1 API: connection handling (unix socket or TCP) and typed
//! service clients. `dpctl` and any Rust controller build on this.

use std::path::PathBuf;

use dataplane_proto::v1::{
    controller_client::ControllerClient, events_client::EventsClient, flows_client::FlowsClient,
    interfaces_client::InterfacesClient, policy_client::PolicyClient, routing_client::RoutingClient,
    system_client::SystemClient, telemetry_client::TelemetryClient,
};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::{
    metadata::MetadataValue,
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint, Uri},
};

pub use dataplane_proto::v1 as pb;

pub mod controller;
pub mod policy_file;
pub mod stream_channel;
pub mod yaml_fields;

/// Where dpctl and controllers look for the server when not told.
pub const DEFAULT_SERVER: &str = "unix:/run/dataplane/dataplane.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("server address {address:?}: expected unix:PATH or http://HOST:PORT")]
    BadAddress { address: String },
    #[error("role {role:?}: not valid gRPC metadata (printable ASCII)")]
    BadRole { role: String },
    #[error("connecting to {address}: {source}")]
    Transport {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
}

/// A parsed server address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerAddress {
    Unix(PathBuf),
    Http(String),
}

impl std::str::FromStr for ServerAddress {
    type Err = ConnectError;

    fn from_str(s: &str) -> Result<Self, ConnectError> {
        if let Some(p) = s.strip_prefix("unix://").or_else(|| s.strip_prefix("unix:")) {
            if p.is_empty() {
                return Err(ConnectError::BadAddress { address: s.to_owned() });
            }
            Ok(Self::Unix(PathBuf::from(p)))
        } else if s.starts_with("http://") || s.starts_with("https://") {
            Ok(Self::Http(s.to_owned()))
        } else {
            Err(ConnectError::BadAddress { address: s.to_owned() })
        }
    }
}

impl std::fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Http(u) => f.write_str(u),
        }
    }
}

/// Opens a channel to the server.
pub async fn connect(address: &ServerAddress) -> Result<Channel, ConnectError> {
    connect_tuned(address, |e| e).await
}

/// [`connect`] with the endpoint adjusted first (HTTP/2 windows, timeouts, ...).
pub async fn connect_tuned(
    address: &ServerAddress,
    tune: impl FnOnce(Endpoint) -> Endpoint,
) -> Result<Channel, ConnectError> {
    match address {
        ServerAddress::Unix(path) => {
            let path = path.clone();
            let shown = format!("unix:{}", path.display());
            // The URI is only used for the :authority header; the connector ignores it.
            tune(Endpoint::from_static("http://localhost"))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
                }))
                .await
                .map_err(|source| ConnectError::Transport { address: shown, source })
        }
        ServerAddress::Http(url) => {
            let endpoint =
                Endpoint::from_shared(url.clone()).map_err(|_| ConnectError::BadAddress { address: url.clone() })?;
            tune(endpoint).connect().await.map_err(|source| ConnectError::Transport { address: url.clone(), source })
        }
    }
}

/// Metadata a controller's writes carry once it holds a session (see the Controller service):
/// its role and election id. Empty: no metadata (a write from no session, as dpctl's default).
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub role: Option<MetadataValue<tonic::metadata::Ascii>>,
    pub election_id: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl Credentials {
    /// Writes as election id `id` of `role` ("" for the default role).
    pub fn new(role: &str, id: u128) -> Result<Self, ConnectError> {
        let bad = || ConnectError::BadRole { role: role.to_owned() };
        let role = if role.is_empty() { None } else { Some(role.parse().map_err(|_| bad())?) };
        Ok(Self { role, election_id: Some(id.to_string().parse().map_err(|_| bad())?) })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(r) = &self.role {
            req.metadata_mut().insert("dataplane-role", r.clone());
        }
        if let Some(id) = &self.election_id {
            req.metadata_mut().insert("dataplane-election-id", id.clone());
        }
        Ok(req)
    }
}

/// The channel every service client sends through, adding the caller's [`Credentials`].
pub type Transport = InterceptedService<Channel, Credentials>;

/// Every dataplane.v1 service client over one channel.
#[derive(Clone, Debug)]
pub struct Client {
    pub interfaces: InterfacesClient<Transport>,
    pub routing: RoutingClient<Transport>,
    pub policy: PolicyClient<Transport>,
    pub flows: FlowsClient<Transport>,
    pub events: EventsClient<Transport>,
    pub system: SystemClient<Transport>,
    pub controller: ControllerClient<Transport>,
    pub telemetry: TelemetryClient<Transport>,
    channel: Channel,
}

impl Client {
    pub async fn connect(address: &ServerAddress) -> Result<Self, ConnectError> {
        Self::from_channel(connect(address).await?)
    }

    /// The same connection, its writes carrying `credentials` (a controller's election id once
    /// its session is open).
    pub fn with_credentials(&self, credentials: Credentials) -> Self {
        Self::build(self.channel.clone(), credentials)
    }

    /// A client whose HTTP/2 receive windows are `bytes` (per stream and per connection): how
    /// much a stream the client does not read buffers before the server holds back (hyper's
    /// default stream window is 2 MiB).
    pub async fn connect_with_window(address: &ServerAddress, bytes: u32) -> Result<Self, ConnectError> {
        Self::from_channel(
            connect_tuned(address, |e| e.initial_stream_window_size(bytes).initial_connection_window_size(bytes))
                .await?,
        )
    }

    /// The standard `grpc.health.v1.Health` service on the same connection.
    pub fn health(&self) -> tonic_health::pb::health_client::HealthClient<Channel> {
        tonic_health::pb::health_client::HealthClient::new(self.channel.clone())
    }

    fn from_channel(ch: Channel) -> Result<Self, ConnectError> {
        Ok(Self::build(ch, Credentials::default()))
    }

    fn build(ch: Channel, c: Credentials) -> Self {
        // Large route batches: raise tonic's 4 MiB default message limits.
        let max = 256 * 1024 * 1024;
        let t = || InterceptedService::new(ch.clone(), c.clone());
        Self {
            interfaces: InterfacesClient::new(t()),
            routing: RoutingClient::new(t()).max_encoding_message_size(max).max_decoding_message_size(max),
            policy: PolicyClient::new(t()).max_encoding_message_size(max).max_decoding_message_size(max),
            flows: FlowsClient::new(t()).max_encoding_message_size(max).max_decoding_message_size(max),
            events: EventsClient::new(t()),
            system: SystemClient::new(t()),
            controller: ControllerClient::new(t()).max_encoding_message_size(max).max_decoding_message_size(max),
            telemetry: TelemetryClient::new(t()),
            channel: ch,
        }
    }
}

/// The canonical upper-case name of a gRPC status code ("NOT_FOUND"), as grpcurl and the gRPC
/// docs spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The `Any` type of the detail a failed batch write's status carries.
pub const BATCH_STATUS_TYPE: &str = "type.googleapis.com/dataplane.v1.BatchStatus";

/// The failed entries of a batch write (AddRoutes, DeleteRoutes, AddNextHops, DeleteNextHops),
/// from its status's details (`grpc-status-details-bin`: a `google.rpc.Status` whose details
/// hold one `BatchStatus`). `None` for any other status, or one whose details do not decode.
pub fn batch_status(status: &tonic::Status) -> Option<pb::BatchStatus> {
    use prost::Message;
    let rich = dataplane_proto::rpc::Status::decode(status.details()).ok()?;
    let any = rich.details.iter().find(|a| a.type_url == BATCH_STATUS_TYPE)?;
    pb::BatchStatus::decode(any.value.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_status_details_of_batch_decoded_others_none() {
        use prost::Message;
        let batch = pb::BatchStatus {
            failed: vec![pb::EntryStatus {
                index: 3,
                code: 5,
                message: "routes[3].next_hop: next hop 9 not found".into(),
            }],
            unlisted: 2,
            entries: 10,
            applied: 7,
            generation: 4,
        };
        let rich = dataplane_proto::rpc::Status {
            code: 5,
            message: "m".into(),
            details: vec![prost_types_any(BATCH_STATUS_TYPE, batch.encode_to_vec())],
        };
        let s = tonic::Status::with_details(tonic::Code::NotFound, "m", rich.encode_to_vec().into());
        assert_eq!(batch_status(&s), Some(batch));
        assert_eq!(batch_status(&tonic::Status::not_found("m")), None);
        let other = dataplane_proto::rpc::Status {
            details: vec![prost_types_any("type.googleapis.com/other", vec![1])],
            ..Default::default()
        };
        let s = tonic::Status::with_details(tonic::Code::NotFound, "m", other.encode_to_vec().into());
        assert_eq!(batch_status(&s), None);
    }

    fn prost_types_any(type_url: &str, value: Vec<u8>) -> prost_types::Any {
        prost_types::Any { type_url: type_url.into(), value }
    }

    #[test]
    fn server_address_parse_accepts_unix_and_http_rejects_other() {
        assert_eq!("unix:/run/x.sock".parse::<ServerAddress>().unwrap(), ServerAddress::Unix("/run/x.sock".into()));
        assert_eq!("unix:///run/x.sock".parse::<ServerAddress>().unwrap(), ServerAddress::Unix("/run/x.sock".into()));
        assert!(matches!("http://127.0.0.1:50051".parse::<ServerAddress>().unwrap(), ServerAddress::Http(_)));
        for bad in ["", "unix:", "/run/x.sock", "tcp://1.2.3.4:5"] {
            assert!(bad.parse::<ServerAddress>().is_err(), "{bad:?}");
        }
    }
}
