//! Prometheus metrics (`--metrics-listen ADDR`): the dataplane's counters read from the kernel
//! at each scrape (interfaces, every pass and drop reason, next hops, policy rules, map and
//! table occupancy, held misses), the event streams' subscribers and sessions, and the gRPC
//! calls counted and timed by method and status code as they are served.
//!
//! Exposed in the OpenMetrics text format by `prometheus-client`; served by [`http::serve`].
//! Nothing is read from the kernel between scrapes: a scrape costs what a `ListInterfaces`,
//! `ListNextHops` and `ListPolicies` cost.

pub mod http;

use std::sync::Arc;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric},
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::{exponential_buckets, Histogram},
        MetricType,
    },
    registry::Registry,
};

use dataplane_common::{maps as names, reason::ReasonKind};

use crate::domain::{Dataplane, Domain};

/// Labels of a gRPC call's metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RpcLabels {
    /// `/package.Service/Method`.
    pub method: String,
    /// The gRPC status code's name (`OK`, `INVALID_ARGUMENT`, ...).
    pub code: String,
}

/// gRPC calls served: counted and timed (a stream from its request to its last message).
#[derive(Debug)]
pub struct RpcMetrics {
    pub handled: Family<RpcLabels, Counter>,
    pub seconds: Family<RpcLabels, Histogram, fn() -> Histogram>,
}

fn rpc_histogram() -> Histogram {
    // 50 us to ~13 s by factors of 4: a route batch of a million entries and a GetStatus both fit.
    Histogram::new(exponential_buckets(0.000_05, 4.0, 10))
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self { handled: Family::default(), seconds: Family::new_with_constructor(rpc_histogram) }
    }
}

impl RpcMetrics {
    /// Records one finished call.
    pub fn record(&self, method: &str, code: tonic::Code, elapsed: std::time::Duration) {
        let labels = RpcLabels { method: method.to_owned(), code: code_name(code).to_owned() };
        self.handled.get_or_create(&labels).inc();
        self.seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }
}

/// The status code's canonical name, as gRPC's own metrics spell it.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Subscriber counts of the event streams, by stream name.
pub type Subscribers = Arc<dyn Fn() -> Vec<(&'static str, usize)> + Send + Sync>;

/// The registry of a server: its RPC metrics and the collector reading the domain.
pub fn registry<D: Dataplane>(domain: Arc<Domain<D>>, rpc: Arc<RpcMetrics>, subscribers: Subscribers) -> Registry {
    let mut r = Registry::default();
    r.register_collector(Box::new(DomainCollector { domain, subscribers }));
    r.register_collector(Box::new(RpcCollector(rpc)));
    r
}

/// Encodes the RPC families (registered as a collector: the registry wants owned metrics, the
/// layer that records them holds them too).
#[derive(Debug)]
struct RpcCollector(Arc<RpcMetrics>);

impl Collector for RpcCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let m = encoder.encode_descriptor(
            "dataplane_grpc_requests",
            "gRPC calls served, by method and status code",
            None,
            MetricType::Counter,
        )?;
        self.0.handled.encode(m)?;
        let m = encoder.encode_descriptor(
            "dataplane_grpc_request_duration_seconds",
            "Time from a call's request to its status (a stream's whole life), by method and status code",
            None,
            MetricType::Histogram,
        )?;
        self.0.seconds.encode(m)
    }
}

struct DomainCollector<D: Dataplane> {
    domain: Arc<Domain<D>>,
    subscribers: Subscribers,
}

impl<D: Dataplane> std::fmt::Debug for DomainCollector<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DomainCollector")
    }
}

/// One metric family: `name`'s descriptor, then a sample per label set.
fn family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in rows {
        let sample = m.encode_family(&labels)?;
        match kind {
            MetricType::Counter => ConstCounter::new(v).encode(sample)?,
            _ => ConstGauge::new(v as i64).encode(sample)?,
        }
    }
    Ok(())
}

/// One metric without labels.
fn scalar(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let m = encoder.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => ConstCounter::new(v).encode(m),
        _ => ConstGauge::new(v as i64).encode(m),
    }
}

impl<D: Dataplane> Collector for DomainCollector<D> {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use MetricType::{Counter as C, Gauge as G};
        let d = &self.domain;
        // A read that fails (the kernel refusing a map read) leaves its families out of this
        // scrape rather than failing the scrape: the others still say something true.
        if let Ok(ifaces) = d.list_interfaces(None) {
            let by = |f: fn(&dataplane_common::InterfaceStats) -> u64| {
                ifaces.iter().map(move |i| ([("interface", i.name.to_string())], f(&i.stats))).collect::<Vec<_>>()
            };
            family(&mut e, "dataplane_interface_rx_packets", "Packets received", C, by(|s| s.rx_packets))?;
            family(&mut e, "dataplane_interface_rx_bytes", "Bytes received", C, by(|s| s.rx_bytes))?;
            family(&mut e, "dataplane_interface_tx_packets", "Packets sent", C, by(|s| s.tx_packets))?;
            family(&mut e, "dataplane_interface_tx_bytes", "Bytes sent", C, by(|s| s.tx_bytes))?;
            let reasons = ifaces.iter().flat_map(|i| {
                dataplane_common::Reason::ALL.iter().map(move |r| {
                    let kind = match r.kind() {
                        ReasonKind::Pass => "pass",
                        ReasonKind::ParseError => "parse_error",
                        ReasonKind::Drop => "drop",
                    };
                    let labels =
                        [("interface", i.name.to_string()), ("reason", r.name().to_owned()), ("kind", kind.into())];
                    (labels, i.stats.reasons[*r as usize])
                })
            });
            family(
                &mut e,
                "dataplane_interface_packets",
                "Packets received, by what the ingress program did with them (every pass, parse-error and drop reason)",
                C,
                reasons,
            )?;
        }
        if let Ok(nhs) = d.list_nexthops() {
            let rows = |f: fn(&dataplane_common::NextHopStats) -> u64| {
                nhs.iter().map(move |n| ([("nexthop", n.id.to_string())], f(&n.stats))).collect::<Vec<_>>()
            };
            family(
                &mut e,
                "dataplane_nexthop_packets",
                "Packets forwarded through a next hop",
                C,
                rows(|s| s.packets),
            )?;
            family(&mut e, "dataplane_nexthop_bytes", "Bytes forwarded through a next hop", C, rows(|s| s.bytes))?;
            let routes = nhs.iter().map(|n| ([("nexthop", n.id.to_string())], n.routes));
            family(&mut e, "dataplane_nexthop_routes", "Routes using a next hop", G, routes)?;
        }
        let vrfs = d.list_vrfs();
        family(
            &mut e,
            "dataplane_vrf_routes",
            "Routes in a VRF's table (both families)",
            G,
            vrfs.iter().map(|v| ([("vrf", v.id.to_string())], v.routes)),
        )?;
        if let Ok(policies) = d.list_policies(None) {
            let rule = |f: fn(&crate::domain::RuleView) -> u64| {
                policies
                    .iter()
                    .flat_map(|p| {
                        p.rules
                            .iter()
                            .enumerate()
                            .map(move |(i, r)| ([("policy", p.name.to_string()), ("rule", i.to_string())], f(r)))
                    })
                    .collect::<Vec<_>>()
            };
            family(&mut e, "dataplane_policy_rule_packets", "Packets a policy rule matched", C, rule(|r| r.packets))?;
            family(&mut e, "dataplane_policy_rule_bytes", "Bytes a policy rule matched", C, rule(|r| r.bytes))?;
        }
        if let Ok(s) = d.status() {
            // The flow tables' entries are counted below, by kind.
            let counted = |m: &&crate::domain::MapView| m.name != names::FLOWS_V4 && m.name != names::FLOWS_V6;
            family(
                &mut e,
                "dataplane_map_entries",
                "Entries in use in a BPF map: keys of a hash, slots allocated of a slot-indexed array, every entry of a fixed array (the flow tables: dataplane_flow_entries)",
                G,
                s.maps.iter().filter(counted).map(|m| ([("map", m.name.to_owned())], m.occupancy)),
            )?;
            family(
                &mut e,
                "dataplane_map_capacity",
                "Entries a BPF map holds at most",
                G,
                s.maps.iter().map(|m| ([("map", m.name.to_owned())], u64::from(m.max_entries))),
            )?;
            scalar(
                &mut e,
                "dataplane_flow_misses_held",
                "Flow misses held for a controller's decision now (their first packets kept)",
                G,
                s.held,
            )?;
            scalar(
                &mut e,
                "dataplane_flow_misses_unanswered",
                "Flow misses no one answered within the hold timeout (their first packets dropped)",
                C,
                s.unanswered,
            )?;
            scalar(&mut e, "dataplane_generation", "Configuration generation", G, s.generation)?;
        }
        if let Ok(f) = d.count_flows() {
            let rows = ["ipv4", "ipv6"].into_iter().enumerate().flat_map(|(i, fam)| {
                [("forward", f.forward[i]), ("drop", f.drop[i]), ("hold", f.hold[i])]
                    .map(|(kind, n)| ([("family", fam), ("kind", kind)], n))
            });
            family(
                &mut e,
                "dataplane_flow_entries",
                "Entries of the flow tables: installed flows that forward or drop, and HOLDs (misses waiting for a decision)",
                G,
                rows,
            )?;
        }
        family(
            &mut e,
            "dataplane_stream_subscribers",
            "Open subscriptions of an event stream (controller sessions included)",
            G,
            (self.subscribers)().into_iter().map(|(s, n)| ([("stream", s)], n as u64)),
        )?;
        let mut sessions = std::collections::BTreeMap::<(String, bool), u64>::new();
        for s in d.arbiter().sessions() {
            *sessions.entry((s.role, s.primary)).or_default() += 1;
        }
        family(
            &mut e,
            "dataplane_controller_sessions",
            "Open controller sessions, by role and whether primary",
            G,
            sessions.into_iter().map(|((role, primary), n)| ([("role", role), ("primary", primary.to_string())], n)),
        )?;
        Ok(())
    }
}
