//! The gRPC surface: one file per service, each decoding requests into domain types (`TryFrom`),
//! calling the domain and encoding the answer. Also health and reflection, always on.

mod body;
mod controller;
mod error;
mod events;
pub mod fence;
mod flows;
mod interfaces;
pub mod limits;
mod policy;
mod routing;
pub mod rpc_metrics;
mod system;
mod telemetry;

use std::sync::Arc;

use dataplane_proto::v1::{
    controller_server::ControllerServer, events_server::EventsServer, flows_server::FlowsServer,
    interfaces_server::InterfacesServer, policy_server::PolicyServer, routing_server::RoutingServer,
    system_server::SystemServer, telemetry_server::TelemetryServer,
};
use tonic::transport::server::Router;
use tonic_health::server::HealthReporter;

use crate::{
    domain::{Dataplane, Domain, FlowMiss, FlowRemoved},
    events::{
        netlink::{Netlink, NetlinkEvent},
        Hub,
    },
};

pub use controller::ControllerService;
pub use events::EventsService;
pub use flows::{encode_flow_removed, FlowsService};
pub use interfaces::InterfacesService;
pub use policy::PolicyService;
pub use routing::RoutingService;
pub use system::SystemService;
pub use telemetry::TelemetryService;

/// Largest request or response the Routing, Policy and Flows services accept.
const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// The event sources subscriptions read from.
#[derive(Clone)]
pub struct EventSources {
    pub misses: Arc<Hub<FlowMiss>>,
    /// Every removal of an installed flow (what a controller session streams as `FlowRemoved`).
    pub flow_removed: Arc<Hub<FlowRemoved>>,
    pub netlink: Arc<Hub<NetlinkEvent>>,
    pub netlink_listener: Netlink,
}

/// The layers every call passes through before its service: counted and timed, limited, then
/// fenced.
pub type FencedStack = tower::layer::util::Stack<
    fence::FenceLayer,
    tower::layer::util::Stack<
        limits::LimitLayer,
        tower::layer::util::Stack<rpc_metrics::RpcMetricsLayer, tower::layer::util::Identity>,
    >,
>;

/// Builds the router with every dataplane service, gRPC health (each service SERVING) and
/// server reflection (v1 and v1alpha, since grpcurl 1.8 speaks only v1alpha).
pub async fn router<D: Dataplane>(
    domain: Arc<Domain<D>>,
    events: EventSources,
    info: system::ServerInfo,
    exit: tokio::sync::watch::Sender<bool>,
    rpc: Arc<crate::metrics::RpcMetrics>,
    limits: limits::Limits,
) -> Result<(Router<FencedStack>, HealthReporter), tonic_reflection::server::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<InterfacesServer<InterfacesService<D>>>().await;
    health.set_serving::<SystemServer<SystemService<D>>>().await;
    health.set_serving::<RoutingServer<RoutingService<D>>>().await;
    health.set_serving::<PolicyServer<PolicyService<D>>>().await;
    health.set_serving::<FlowsServer<FlowsService<D>>>().await;
    health.set_serving::<EventsServer<EventsService<D>>>().await;
    health.set_serving::<ControllerServer<ControllerService<D>>>().await;
    health.set_serving::<TelemetryServer<TelemetryService<D>>>().await;
    // The empty service name stands for the server as a whole.
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dataplane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dataplane_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let router = tonic::transport::Server::builder()
        // Every call, refused or not, counted by method and status code.
        .layer(rpc_metrics::RpcMetricsLayer::new(rpc))
        // Open subscriptions per kind and calls in flight, each capped.
        .layer(limits::LimitLayer::new(limits))
        // Writes from anyone but a role's primary controller are refused before any handler.
        .layer(fence::FenceLayer::new(domain.arbiter().clone()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(InterfacesServer::new(InterfacesService::new(domain.clone())))
        .add_service(
            // Route batches of a million entries run to tens of MiB; tonic's default is 4 MiB.
            RoutingServer::new(RoutingService::new(domain.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            PolicyServer::new(PolicyService::new(domain.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            FlowsServer::new(FlowsService::new(domain.clone(), events.misses.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(
            ControllerServer::new(ControllerService::new(
                domain.clone(),
                events.misses.clone(),
                events.flow_removed.clone(),
            ))
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        )
        .add_service(TelemetryServer::new(TelemetryService::new(domain.clone())))
        .add_service(EventsServer::new(EventsService::new(domain.clone(), events.netlink, events.netlink_listener)))
        .add_service(SystemServer::new(SystemService::new(domain, info, exit)));
    Ok((router, health))
}

pub use system::ServerInfo;

/// Runs `f` on the blocking pool: domain calls that write many map entries or wait on the
/// kernel, which would otherwise hold up an async worker thread. Its failure maps to a status in
/// `error.rs`, like every other.
async fn blocking<T, F>(f: F) -> Result<T, error::TaskFailed>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Ok(tokio::task::spawn_blocking(f).await?)
}

/// A server stream fed by `f` through a bounded channel (the task ends when the client goes).
pub(crate) fn stream_from<F, Fut, T>(f: F) -> std::pin::Pin<Box<dyn tokio_stream::Stream<Item = T> + Send>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}
