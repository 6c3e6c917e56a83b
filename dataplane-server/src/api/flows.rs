//! `dataplane.v1.Flows`: flow mode, flow-miss subscriptions, flow installation and listing.

use std::{net::IpAddr, pin::Pin, sync::Arc, time::Duration};

use dataplane_common::flow::{DEFAULT_PUNT_BURST, DEFAULT_PUNT_RATE};
use dataplane_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        Atomicity, BatchError, Dataplane, Domain, DomainError, EntryError, FlowAction, FlowKey, FlowMiss, FlowMode,
        FlowRemoved, FlowRemovedReason, FlowSpec, FlowTarget, FlowView, InterfaceName,
    },
    events::Hub,
    net::parse_addr,
};

/// Flows per streamed `ListFlowsResponse`.
const LIST_CHUNK: usize = 1024;
/// Bytes of the packet a miss carries to subscribers.
const MISS_PACKET_BYTES: usize = 256;

pub struct FlowsService<D: Dataplane> {
    domain: Arc<Domain<D>>,
    misses: Arc<Hub<FlowMiss>>,
}

impl<D: Dataplane> FlowsService<D> {
    pub fn new(domain: Arc<Domain<D>>, misses: Arc<Hub<FlowMiss>>) -> Self {
        Self { domain, misses }
    }
}

type MissStream = Pin<Box<dyn Stream<Item = Result<pb::FlowMissMessage, Status>> + Send>>;
type FlowStream = Pin<Box<dyn Stream<Item = Result<pb::ListFlowsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<D: Dataplane> pb::flows_server::Flows for FlowsService<D> {
    async fn set_flow_mode(
        &self,
        req: Request<pb::SetFlowModeRequest>,
    ) -> Result<Response<pb::SetFlowModeResponse>, Status> {
        let r = req.into_inner();
        let interface = InterfaceName::parse("interface", &r.interface)?;
        let miss_forward = match pb::MissAction::try_from(r.miss_action) {
            Ok(pb::MissAction::Unspecified | pb::MissAction::Drop) => false,
            Ok(pb::MissAction::ForwardByRoute) => true,
            Err(_) => return Err(DomainError::invalid("miss_action", "DROP or FORWARD_BY_ROUTE").into()),
        };
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        let mode = FlowMode {
            enabled: r.enabled,
            miss_forward,
            hold_cap: or(r.hold_cap, 4096),
            punt_rate: or(r.punt_rate, DEFAULT_PUNT_RATE),
            punt_burst: or(r.punt_burst, DEFAULT_PUNT_BURST),
        };
        let generation = self.domain.set_flow_mode(&interface, mode)?;
        Ok(Response::new(pb::SetFlowModeResponse { generation }))
    }

    type SubscribeFlowMissesStream = MissStream;

    async fn subscribe_flow_misses(
        &self,
        req: Request<pb::SubscribeFlowMissesRequest>,
    ) -> Result<Response<MissStream>, Status> {
        let r = req.into_inner();
        let only_slot = match r.interface.as_str() {
            "" => None,
            name => Some(self.domain.interface_slot(&InterfaceName::parse("interface", name)?)?),
        };
        let only_vrf = r.vrf;
        let mut rx = self.misses.subscribe();
        let domain = self.domain.clone();
        let stream =
            super::stream_from(move |tx: tokio::sync::mpsc::Sender<Result<pb::FlowMissMessage, Status>>| async move {
                loop {
                    let msg = match rx.recv().await {
                        Ok(ev) => {
                            let m = &ev.event;
                            if only_slot.is_some_and(|s| s != m.slot) || only_vrf.is_some_and(|v| v != m.key.vrf) {
                                continue;
                            }
                            pb::FlowMissMessage {
                                kind: Some(pb::flow_miss_message::Kind::Miss(pb::FlowMiss {
                                    seq: ev.seq,
                                    request_id: m.request_id,
                                    interface: domain.interface_name_by_slot(m.slot).unwrap_or_default(),
                                    key: Some(encode_key(&m.key)),
                                    packet_length: m.packet_len,
                                    packet: m.frame.slice(..m.frame.len().min(MISS_PACKET_BYTES)),
                                    reason: match m.reason {
                                        dataplane_common::flow::MISS_PUNT_RULE => "punt".into(),
                                        _ => "miss".into(),
                                    },
                                })),
                            }
                        }
                        Err(RecvError::Lagged(n)) => {
                            pb::FlowMissMessage { kind: Some(pb::flow_miss_message::Kind::Lagged(n)) }
                        }
                        Err(RecvError::Closed) => return,
                    };
                    if tx.send(Ok(msg)).await.is_err() {
                        return; // the subscriber went away
                    }
                }
            });
        Ok(Response::new(stream))
    }

    async fn install_flows(
        &self,
        req: Request<pb::InstallFlowsRequest>,
    ) -> Result<Response<pb::InstallFlowsResponse>, Status> {
        let r = req.into_inner();
        let atomicity = atomicity(r.atomicity)?;
        let entries = r.flows.len();
        let d = decide(&self.domain, r.flows, atomicity)?;
        if d.failed.is_empty() {
            return Ok(Response::new(pb::InstallFlowsResponse { generation: d.generation }));
        }
        Err(BatchError::Entries {
            atomicity,
            failed: d.failed.into_iter().map(|(index, error)| EntryError { index, error }).collect(),
            entries,
            applied: d.applied,
            generation: d.generation,
        }
        .into())
    }

    async fn delete_flows(
        &self,
        req: Request<pb::DeleteFlowsRequest>,
    ) -> Result<Response<pb::DeleteFlowsResponse>, Status> {
        let r = req.into_inner();
        let atomicity = atomicity(r.atomicity)?;
        let keys = r.keys.into_iter().enumerate().map(|(i, k)| decode_key(&format!("keys[{i}]"), Some(k)));
        let generation = self.domain.delete_flows_each(keys, atomicity)?;
        Ok(Response::new(pb::DeleteFlowsResponse { generation }))
    }

    type ListFlowsStream = FlowStream;

    async fn list_flows(&self, req: Request<pb::ListFlowsRequest>) -> Result<Response<FlowStream>, Status> {
        let flows = self.domain.list_flows(req.into_inner().vrf)?;
        let chunks: Vec<Result<pb::ListFlowsResponse, Status>> = flows
            .chunks(LIST_CHUNK)
            .map(|c| Ok(pb::ListFlowsResponse { flows: c.iter().map(encode_flow).collect() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}

/// A batch of flows decided: what the domain did with each entry.
pub(super) struct Decided {
    pub generation: u64,
    pub applied: usize,
    /// Failed entries by their index in the request, in request order.
    pub failed: Vec<(usize, DomainError)>,
    pub installed: Vec<FlowKey>,
}

/// Decodes and installs `flows` (InstallFlows, a session's Decisions), each entry on its own: one
/// that does not decode fails like one the domain refuses. ALL_OR_NOTHING with a failure: nothing
/// is installed and every failed entry is still reported. Runs in place on the calling runtime
/// worker (`block_in_place`); a session's thread calls [`decide_here`].
pub(super) fn decide<D: Dataplane>(
    domain: &Arc<Domain<D>>,
    flows: Vec<pb::Flow>,
    atomicity: Atomicity,
) -> Result<Decided, DomainError> {
    tokio::task::block_in_place(|| decide_here(domain, flows, atomicity))
}

/// [`decide`] on the calling thread, which it blocks for the batch's kernel writes: for a thread
/// of its own, never a runtime worker.
pub(super) fn decide_here<D: Dataplane>(
    domain: &Arc<Domain<D>>,
    flows: Vec<pb::Flow>,
    atomicity: Atomicity,
) -> Result<Decided, DomainError> {
    let continue_on_error = atomicity == Atomicity::ContinueOnError;
    let mut specs = Vec::with_capacity(flows.len());
    let mut positions = Vec::with_capacity(flows.len());
    let mut failed = Vec::new();
    for (i, f) in flows.into_iter().enumerate() {
        match decode_flow(&format!("flows[{i}]"), f) {
            Ok(s) => {
                specs.push(s);
                positions.push(i);
            }
            Err(e) => failed.push((i, e)),
        }
    }
    let out = if failed.is_empty() || continue_on_error {
        domain.install_flows_with(specs, &positions, continue_on_error)
    } else {
        let generation = domain.generation();
        let failed = domain.validate_flows(&specs, &positions);
        Ok(crate::domain::BatchOutcome { generation, applied: 0, failed, installed: Vec::new() })
    }?;
    failed.extend(out.failed);
    failed.sort_by_key(|(i, _)| *i);
    let applied = if !failed.is_empty() && !continue_on_error { 0 } else { out.applied };
    Ok(Decided { generation: out.generation, applied, failed, installed: out.installed })
}

/// A request's atomicity.
pub(super) fn atomicity(value: i32) -> Result<Atomicity, DomainError> {
    match pb::Atomicity::try_from(value) {
        Ok(pb::Atomicity::Unspecified | pb::Atomicity::AllOrNothing) => Ok(Atomicity::AllOrNothing),
        Ok(pb::Atomicity::ContinueOnError) => Ok(Atomicity::ContinueOnError),
        Err(_) => Err(DomainError::invalid("atomicity", format!("unknown atomicity {value}"))),
    }
}

fn decode_key(at: &str, k: Option<pb::FlowKey>) -> Result<FlowKey, DomainError> {
    let k = k.ok_or_else(|| DomainError::invalid(format!("{at}.key"), "required"))?;
    let addr = |field: &str, s: &str| -> Result<IpAddr, DomainError> {
        parse_addr(s).map_err(|e| DomainError::invalid(format!("{at}.{field}"), e.to_string()))
    };
    let src = addr("src", &k.src)?;
    let dst = addr("dst", &k.dst)?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(DomainError::invalid(format!("{at}.dst"), "src and dst are of different families"));
    }
    let proto = u8::try_from(k.protocol).map_err(|_| DomainError::invalid(format!("{at}.protocol"), "0-255"))?;
    let port =
        |field: &str, v: u32| u16::try_from(v).map_err(|_| DomainError::invalid(format!("{at}.{field}"), "0-65535"));
    Ok(FlowKey {
        vrf: k.vrf,
        src,
        dst,
        proto,
        sport: port("src_port", k.src_port)?,
        dport: port("dst_port", k.dst_port)?,
    })
}

fn decode_action(field: String, action: i32, next_hop: u32) -> Result<Option<FlowAction>, DomainError> {
    match pb::FlowAction::try_from(action) {
        Ok(pb::FlowAction::Forward) => Ok(Some(FlowAction::Forward(next_hop))),
        Ok(pb::FlowAction::Drop) => Ok(Some(FlowAction::Drop)),
        Ok(pb::FlowAction::Unspecified) => Ok(None),
        _ => Err(DomainError::invalid(field, "FORWARD or DROP")),
    }
}

pub(super) fn decode_flow(at: &str, f: pb::Flow) -> Result<FlowSpec, DomainError> {
    let target = match (f.key, f.request_id) {
        (None, 0) => return Err(DomainError::invalid(format!("{at}.key"), "a key or a request_id is required")),
        (None, id) => FlowTarget::Request(id),
        (key, _) => FlowTarget::Key(decode_key(at, key)?),
    };
    let action = decode_action(format!("{at}.action"), f.action, f.next_hop)?
        .ok_or_else(|| DomainError::invalid(format!("{at}.action"), "FORWARD or DROP is required"))?;
    let reverse = decode_action(format!("{at}.reverse_action"), f.reverse_action, f.reverse_next_hop)?;
    // 0: none of its own.
    let timeout = |ms: u32| (ms > 0).then(|| Duration::from_millis(ms.into()));
    Ok(FlowSpec {
        target,
        action,
        reverse,
        idle_timeout: timeout(f.idle_timeout_ms),
        hard_timeout: timeout(f.hard_timeout_ms),
    })
}

pub(super) fn encode_key(k: &FlowKey) -> pb::FlowKey {
    pb::FlowKey {
        vrf: k.vrf,
        src: k.src.to_string(),
        dst: k.dst.to_string(),
        protocol: k.proto.into(),
        src_port: k.sport.into(),
        dst_port: k.dport.into(),
    }
}

fn encode_flow(f: &FlowView) -> pb::Flow {
    let (action, next_hop) = match f.action {
        Some(FlowAction::Forward(id)) => (pb::FlowAction::Forward, id),
        Some(FlowAction::Drop) => (pb::FlowAction::Drop, 0),
        None => (pb::FlowAction::Hold, 0),
    };
    pb::Flow {
        key: Some(encode_key(&f.key)),
        action: action as i32,
        next_hop,
        request_id: f.request_id,
        packets: f.packets,
        bytes: f.bytes,
        idle_ms: f.idle.as_millis() as u64,
        idle_timeout_ms: timeout_ms(f.idle_timeout),
        hard_timeout_ms: timeout_ms(f.hard_timeout),
        ..Default::default()
    }
}

/// A timeout as the API carries it (0: none; InstallFlows took it from milliseconds in a u32).
fn timeout_ms(t: Option<Duration>) -> u32 {
    t.map_or(0, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX))
}

/// A flow removal as a controller session streams it.
pub fn encode_flow_removed(r: &FlowRemoved) -> pb::FlowRemoved {
    let reason = match r.reason {
        FlowRemovedReason::IdleTimeout => pb::FlowRemovedReason::IdleTimeout,
        FlowRemovedReason::HardTimeout => pb::FlowRemovedReason::HardTimeout,
        FlowRemovedReason::Deleted => pb::FlowRemovedReason::Deleted,
        FlowRemovedReason::Evicted => pb::FlowRemovedReason::Evicted,
        FlowRemovedReason::NextHopRemoved => pb::FlowRemovedReason::NextHopRemoved,
    };
    pb::FlowRemoved {
        key: Some(encode_key(&r.key)),
        reason: reason as i32,
        packets: r.packets,
        bytes: r.bytes,
        duration_ms: r.duration.as_millis() as u64,
        request_id: r.request_id,
        idle_timeout_ms: timeout_ms(r.idle_timeout),
        hard_timeout_ms: timeout_ms(r.hard_timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_timeouts_decode_zero_as_none_and_list_back_as_given() {
        let f = pb::Flow {
            request_id: 9,
            action: pb::FlowAction::Drop as i32,
            hard_timeout_ms: 2500,
            ..Default::default()
        };
        let spec = decode_flow("flows[0]", f).unwrap();
        assert_eq!((spec.idle_timeout, spec.hard_timeout), (None, Some(Duration::from_millis(2500))));
        let view = FlowView {
            key: FlowKey {
                vrf: 0,
                src: "2001:db8::1".parse().unwrap(),
                dst: "2001:db8::2".parse().unwrap(),
                proto: 6,
                sport: 1,
                dport: 2,
            },
            action: Some(FlowAction::Drop),
            request_id: 0,
            packets: 0,
            bytes: 0,
            idle: Duration::ZERO,
            idle_timeout: Some(Duration::from_secs(1)),
            hard_timeout: None,
        };
        let listed = encode_flow(&view);
        assert_eq!((listed.idle_timeout_ms, listed.hard_timeout_ms), (1000, 0));
    }

    #[test]
    fn flow_removed_encodes_each_reason_by_its_proto_name_with_counters_and_times() {
        let key = FlowKey {
            vrf: 3,
            src: "192.0.2.1".parse().unwrap(),
            dst: "198.51.100.1".parse().unwrap(),
            proto: 17,
            sport: 10,
            dport: 20,
        };
        let reasons = [
            (FlowRemovedReason::IdleTimeout, "FLOW_REMOVED_REASON_IDLE_TIMEOUT"),
            (FlowRemovedReason::HardTimeout, "FLOW_REMOVED_REASON_HARD_TIMEOUT"),
            (FlowRemovedReason::Deleted, "FLOW_REMOVED_REASON_DELETED"),
            (FlowRemovedReason::Evicted, "FLOW_REMOVED_REASON_EVICTED"),
            (FlowRemovedReason::NextHopRemoved, "FLOW_REMOVED_REASON_NEXT_HOP_REMOVED"),
        ];
        for (reason, name) in reasons {
            let r = FlowRemoved {
                key,
                reason,
                packets: 5,
                bytes: 500,
                duration: Duration::from_micros(1_234_567),
                request_id: 42,
                idle_timeout: Some(Duration::from_secs(1)),
                hard_timeout: None,
            };
            let m = encode_flow_removed(&r);
            assert_eq!(m.reason().as_str_name(), name);
            assert_eq!(m.key, Some(encode_key(&key)));
            assert_eq!(
                (m.packets, m.bytes, m.duration_ms, m.request_id, m.idle_timeout_ms, m.hard_timeout_ms),
                (5, 500, 1234, 42, 1000, 0)
            );
        }
    }
}
