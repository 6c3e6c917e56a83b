//! One node: connect (with backoff), resync (BeginResync, replay everything, EndResync), then
//! answer its flow misses and apply each new version of the file as a diff, until the
//! connection breaks (a server restart shows as the miss stream ending) and it starts over.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tonic::{Code, Status};
use tracing::{debug, info, warn};

use super::{
    desired::{Desired, NodeDesired, Verdict},
    plan::{self, Step},
    status::{now_ms, Shared},
};
use crate::{code_name, pb, Client};

/// Reconnect delays: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Most misses answered by one InstallFlows.
const MISS_BATCH: usize = 256;

/// Most flows remembered for re-deciding (beyond, new flows are installed but not remembered).
const TRACK_MAX: usize = 1 << 20;
/// Flows per InstallFlows when re-deciding.
const REDECIDE_BATCH: usize = 1024;

/// (VRF, source, destination, protocol, source port, destination port).
type FlowTuple = (u32, String, String, u32, u32, u32);

fn tuple(k: &pb::FlowKey) -> FlowTuple {
    (k.vrf, k.src.clone(), k.dst.clone(), k.protocol, k.src_port, k.dst_port)
}

fn key((vrf, src, dst, protocol, src_port, dst_port): &FlowTuple) -> pb::FlowKey {
    pb::FlowKey {
        vrf: *vrf,
        src: src.clone(),
        dst: dst.clone(),
        protocol: *protocol,
        src_port: *src_port,
        dst_port: *dst_port,
    }
}

/// The flows this controller decided (by their forward key), with the interface the miss came
/// in on and what was installed: when the rules or routes change, each is decided again and
/// rewritten if the answer changed.
#[derive(Default)]
pub struct Tracked {
    flows: std::collections::HashMap<FlowTuple, (String, pb::Flow)>,
    full_warned: bool,
}

impl Tracked {
    fn remember(&mut self, name: &str, k: &pb::FlowKey, interface: &str, flow: &pb::Flow) {
        if self.flows.len() >= TRACK_MAX && !self.flows.contains_key(&tuple(k)) {
            if !self.full_warned {
                warn!(
                    node = %name,
                    max = TRACK_MAX,
                    "too many flows to remember: new ones will not be re-decided on rule changes"
                );
                self.full_warned = true;
            }
            return;
        }
        let flow = pb::Flow { request_id: 0, key: None, ..flow.clone() };
        self.flows.insert(tuple(k), (interface.to_owned(), flow));
    }
}

fn same_decision(a: &pb::Flow, b: &pb::Flow) -> bool {
    (a.action, a.next_hop, a.reverse_action, a.reverse_next_hop)
        == (b.action, b.next_hop, b.reverse_action, b.reverse_next_hop)
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("connecting: {0}")]
    Connect(#[from] crate::ConnectError),
    #[error("{rpc}: {code}: {message}")]
    Rpc { rpc: &'static str, code: &'static str, message: String },
    #[error("the flow-miss stream ended (server stopped?)")]
    StreamEnded,
    #[error("the node's server address changed")]
    ServerChanged,
}

fn rpc_error(rpc: &'static str) -> impl FnOnce(Status) -> SessionError {
    move |s| SessionError::Rpc { rpc, code: code_name(s.code()), message: s.message().to_owned() }
}

/// Runs node `name` until it leaves the file.
pub async fn run(name: String, mut desired: watch::Receiver<Arc<Desired>>, status: Shared) {
    let mut delay = BACKOFF_FIRST;
    // Kept across sessions: a restarted server keeps its flows.
    let mut tracked = Tracked::default();
    loop {
        let Some(node) = desired.borrow_and_update().nodes.get(&name).cloned() else {
            info!(node = %name, "node left the file: no longer managed (its state stays as it is)");
            return;
        };
        status.node(&name, |n| {
            n.state = "connecting".into();
            n.server = node.server.to_string();
        });
        let started = std::time::Instant::now();
        match session(&name, node, &mut desired, &status, &mut tracked).await {
            Ok(()) => return,
            Err(e) => {
                warn!(node = %name, error = %e, "node session ended");
                status.node(&name, |n| {
                    n.state = "disconnected".into();
                    n.connected = false;
                    n.last_error = Some(e.to_string());
                    n.last_error_ms = now_ms();
                });
            }
        }
        // A session that ran a while starts the backoff over.
        if started.elapsed() > Duration::from_secs(10) {
            delay = BACKOFF_FIRST;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            // A new file (another address, say) is worth trying at once.
            r = desired.changed() => if r.is_err() { return },
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

async fn session(
    name: &str,
    node: NodeDesired,
    desired: &mut watch::Receiver<Arc<Desired>>,
    status: &Shared,
    tracked: &mut Tracked,
) -> Result<(), SessionError> {
    let mut client = Client::connect(&node.server).await?;
    // Subscribed before the resync, so no miss falls between the two.
    let mut misses = client
        .flows
        .subscribe_flow_misses(pb::SubscribeFlowMissesRequest::default())
        .await
        .map_err(rpc_error("SubscribeFlowMisses"))?
        .into_inner();
    status.node(name, |n| {
        n.state = "resyncing".into();
        n.connected = true;
    });
    let mut applied = node;
    resync(name, &mut client, &applied, status).await?;
    status.node(name, |n| {
        n.state = "ready".into();
        n.sessions += 1;
        n.connected_since_ms = now_ms();
    });
    decide_held(name, &mut client, &applied, status, tracked).await?;

    loop {
        tokio::select! {
            msg = misses.message() => {
                let first = msg.map_err(rpc_error("SubscribeFlowMisses"))?.ok_or(SessionError::StreamEnded)?;
                let mut batch = vec![first];
                // Whatever else is already here goes in the same InstallFlows.
                while batch.len() < MISS_BATCH {
                    match tokio::time::timeout(Duration::ZERO, misses.message()).await {
                        Ok(Ok(Some(m))) => batch.push(m),
                        Ok(Ok(None)) => return Err(SessionError::StreamEnded),
                        Ok(Err(e)) => return Err(rpc_error("SubscribeFlowMisses")(e)),
                        Err(_) => break,
                    }
                }
                let mut lagged = false;
                let mut found = Vec::new();
                for m in batch {
                    match m.kind {
                        Some(pb::flow_miss_message::Kind::Miss(miss)) => found.push(miss),
                        Some(pb::flow_miss_message::Kind::Lagged(n)) => {
                            warn!(
                                node = %name,
                                lost = n,
                                "flow-miss stream lagged; deciding held flows from the node's table"
                            );
                            status.node(name, |s| { s.flows.lagged += n; s.flows.lag_resyncs += 1; });
                            lagged = true;
                        }
                        None => {}
                    }
                }
                answer(name, &mut client, &applied, found, status, tracked).await?;
                if lagged {
                    decide_held(name, &mut client, &applied, status, tracked).await?;
                }
            }
            changed = desired.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let Some(next) = desired.borrow_and_update().nodes.get(name).cloned() else { return Ok(()) };
                if next.server != applied.server {
                    return Err(SessionError::ServerChanged);
                }
                if next == applied {
                    continue;
                }
                apply(name, &mut client, &applied, &next, status).await?;
                if next.flow_rules != applied.flow_rules || next.routes != applied.routes {
                    redecide(name, &mut client, &next, status, tracked).await?;
                }
                applied = next;
            }
        }
    }
}

/// BeginResync, the whole desired state, EndResync; then the flow modes.
async fn resync(name: &str, client: &mut Client, d: &NodeDesired, status: &Shared) -> Result<(), SessionError> {
    let before = client
        .system
        .begin_resync(pb::BeginResyncRequest {})
        .await
        .map_err(rpc_error("BeginResync"))?
        .into_inner()
        .generation;
    let steps = plan::replay(d);
    for step in &steps {
        // A failure leaves the resync open (the next BeginResync starts it over): ending it
        // now would remove everything not replayed yet.
        execute(client, step).await?;
    }
    let report = client.system.end_resync(pb::EndResyncRequest {}).await.map_err(rpc_error("EndResync"))?.into_inner();
    if !report.kept.is_empty() {
        warn!(node = %name, kept = ?report.kept, "resync kept stale objects something still uses");
    }
    let mut generation = report.generation;
    for step in plan::flow_modes(d) {
        generation = generation.max(execute(client, &step).await?);
    }
    info!(
        node = %name,
        rpcs = steps.len() + 2,
        removed_routes = report.routes,
        removed_next_hops = report.next_hops,
        removed_policies = report.policies,
        removed_attachments = report.policy_attachments,
        removed_interfaces = report.interfaces,
        removed_vrfs = report.vrfs,
        generation_before = before,
        generation,
        "resynced"
    );
    status.node(name, |n| {
        n.generation = generation;
        n.resyncs += 1;
        n.last_resync = Some(super::status::ResyncReport {
            at_ms: now_ms(),
            generation_before: before,
            generation_after: generation,
            removed: report.routes
                + report.next_hops
                + report.policies
                + report.policy_attachments
                + report.interfaces
                + report.vrfs,
            kept: report.kept,
        });
    });
    Ok(())
}

/// Writes the diff from `old` to `new`; if any step fails, a resync converges instead.
async fn apply(
    name: &str,
    client: &mut Client,
    old: &NodeDesired,
    new: &NodeDesired,
    status: &Shared,
) -> Result<(), SessionError> {
    let steps = plan::diff(old, new);
    let objects: usize = steps.iter().map(Step::objects).sum();
    let mut generation = None;
    for step in &steps {
        match execute(client, step).await {
            Ok(g) => generation = Some(g),
            Err(e) => {
                warn!(node = %name, rpc = step.name(), error = %e, "applying the change failed; resyncing the node");
                status.node(name, |n| {
                    n.last_error = Some(e.to_string());
                    n.last_error_ms = now_ms();
                });
                return resync(name, client, new, status).await;
            }
        }
    }
    info!(node = %name, rpcs = steps.len(), objects, generation = ?generation, "applied the file's change");
    status.node(name, |n| {
        if let Some(g) = generation {
            n.generation = g;
        }
        n.applies += 1;
        n.last_apply = Some(super::status::ApplyReport { at_ms: now_ms(), rpcs: steps.len(), objects, generation });
    });
    Ok(())
}

/// Runs one step; returns the generation the server reported.
pub async fn execute(client: &mut Client, step: &Step) -> Result<u64, SessionError> {
    debug!(rpc = step.name(), objects = step.objects(), "write");
    let name = step.name();
    // Every write answers with the node's generation.
    macro_rules! call {
        ($service:ident . $rpc:ident ($request:expr)) => {
            client.$service.$rpc($request).await.map_err(rpc_error(name))?.into_inner().generation
        };
    }
    Ok(match step.clone() {
        Step::AddVrf(r) => call!(routing.add_vrf(r)),
        Step::DeleteVrf(id) => call!(routing.delete_vrf(pb::DeleteVrfRequest { id })),
        Step::AddInterface(r) => call!(interfaces.add_interface(r)),
        Step::DeleteInterface(n) => call!(interfaces.delete_interface(pb::DeleteInterfaceRequest { name: n })),
        Step::AddNextHops(r) => call!(routing.add_next_hops(r)),
        Step::DeleteNextHops(ids) => {
            call!(routing.delete_next_hops(pb::DeleteNextHopsRequest { ids, ..Default::default() }))
        }
        Step::AddRoutes(r) => call!(routing.add_routes(r)),
        Step::DeleteRoutes(routes) => {
            call!(routing.delete_routes(pb::DeleteRoutesRequest { routes, ..Default::default() }))
        }
        Step::PutPolicy(r) => call!(policy.put_policy(r)),
        Step::DeletePolicy(n) => call!(policy.delete_policy(pb::DeletePolicyRequest { name: n })),
        Step::AttachPolicy(r) => call!(policy.attach_policy(r)),
        Step::DetachPolicy(interface, direction) => {
            call!(policy.detach_policy(pb::DetachPolicyRequest { interface, direction }))
        }
        Step::SetFlowMode(r) => call!(flows.set_flow_mode(r)),
    })
}

/// Decides misses and installs them (each with its reverse) in one InstallFlows; if the batch
/// is refused (one held miss expired, say), one call per flow, so the others still land.
async fn answer(
    name: &str,
    client: &mut Client,
    node: &NodeDesired,
    misses: Vec<pb::FlowMiss>,
    status: &Shared,
    tracked: &mut Tracked,
) -> Result<(), SessionError> {
    let mut flows = Vec::new();
    let mut decided = Vec::new();
    let mut keys = Vec::new();
    for m in misses {
        if m.reason != "miss" {
            // A PUNT policy rule's copy: the packet went on to the kernel; nothing is held.
            status.node(name, |s| s.flows.punts += 1);
            continue;
        }
        let Some(key) = m.key.as_ref() else { continue };
        let (mut flow, rule, no_route) = match node.decide(&m.interface, key) {
            Verdict::Install { flow, rule } => (flow, rule, false),
            Verdict::NoRoute { flow, rule } => (flow, Some(rule), true),
        };
        flow.request_id = m.request_id;
        keys.push((key.clone(), m.interface.clone()));
        debug!(
            node = %name,
            request_id = m.request_id,
            interface = %m.interface,
            ?key,
            action = flow.action,
            next_hop = flow.next_hop,
            ?rule,
            "flow decided"
        );
        decided.push((flow.action == pb::FlowAction::Forward as i32, rule, no_route));
        flows.push(flow);
    }
    if flows.is_empty() {
        return Ok(());
    }
    let flows_sent = flows.clone();
    let outcome: Vec<Result<(), Code>> =
        match client.flows.install_flows(pb::InstallFlowsRequest { flows: flows.clone() }).await {
            Ok(_) => vec![Ok(()); flows.len()],
            Err(s) if s.code() == Code::Unavailable || s.code() == Code::Cancelled => {
                return Err(rpc_error("InstallFlows")(s))
            }
            Err(_) => {
                let mut out = Vec::with_capacity(flows.len());
                for f in flows {
                    out.push(
                        client
                            .flows
                            .install_flows(pb::InstallFlowsRequest { flows: vec![f] })
                            .await
                            .map(|_| ())
                            .map_err(|s| s.code()),
                    );
                }
                out
            }
        };
    for (((k, interface), flow), result) in keys.iter().zip(&flows_sent).zip(&outcome) {
        if result.is_ok() {
            tracked.remember(name, k, interface, flow);
        }
    }
    status.node(name, |s| {
        for ((forward, rule, no_route), result) in decided.into_iter().zip(outcome) {
            s.flows.misses += 1;
            match result {
                Ok(()) if forward => s.flows.forwarded += 1,
                Ok(()) if no_route => s.flows.no_route += 1,
                Ok(()) => s.flows.dropped += 1,
                // Expired or answered already (by a lag resync, another controller).
                Err(Code::NotFound) => s.flows.stale += 1,
                Err(_) => s.flows.failed += 1,
            }
            match rule {
                Some(r) => {
                    if s.rule_hits.len() <= r {
                        s.rule_hits.resize(r + 1, 0);
                    }
                    s.rule_hits[r] += 1;
                }
                None => s.flows.no_rule += 1,
            }
        }
    });
    Ok(())
}

/// Answers the held misses in the node's flow table (after a lag, or left from before this
/// session). The table does not say which interface a held flow arrived on: it is taken to be
/// the first interface of the flow's VRF with flow mode on (rules naming no interface, the
/// usual case, do not care).
async fn decide_held(
    name: &str,
    client: &mut Client,
    node: &NodeDesired,
    status: &Shared,
    tracked: &mut Tracked,
) -> Result<(), SessionError> {
    let held: Vec<pb::Flow> =
        list_flows(client).await?.into_iter().filter(|f| f.action == pb::FlowAction::Hold as i32).collect();
    if held.is_empty() {
        return Ok(());
    }
    info!(node = %name, held = held.len(), "deciding held flow misses from the node's table");
    let misses = held
        .into_iter()
        .filter_map(|f| {
            let key = f.key?;
            let interface = node
                .interfaces
                .iter()
                .filter(|(i, d)| d.vrf == key.vrf && node.flow_modes.get(*i).is_some_and(|m| m.enabled))
                .map(|(i, _)| i.clone())
                .next()
                .unwrap_or_default();
            Some(pb::FlowMiss {
                request_id: f.request_id,
                interface,
                key: Some(key),
                reason: "miss".into(),
                ..Default::default()
            })
        })
        .collect();
    answer(name, client, node, misses, status, tracked).await
}

/// After the flow rules or routes changed: decides every remembered flow again and rewrites
/// those whose answer changed (by key: InstallFlows replaces), dropping the reply direction of
/// a flow that no longer has one. Flows the node aged out are forgotten first.
async fn redecide(
    name: &str,
    client: &mut Client,
    node: &NodeDesired,
    status: &Shared,
    tracked: &mut Tracked,
) -> Result<(), SessionError> {
    if tracked.flows.is_empty() {
        return Ok(());
    }
    let present: std::collections::HashSet<FlowTuple> =
        list_flows(client).await?.iter().filter_map(|f| f.key.as_ref()).map(tuple).collect();
    tracked.flows.retain(|k, _| present.contains(k));
    let mut installs = Vec::new();
    let mut reverse_gone = Vec::new();
    for (k, (interface, installed)) in tracked.flows.iter_mut() {
        let fk = key(k);
        let (Verdict::Install { flow, .. } | Verdict::NoRoute { flow, .. }) = node.decide(interface, &fk);
        if same_decision(&flow, installed) {
            continue;
        }
        if installed.reverse_action != 0 && flow.reverse_action == 0 {
            reverse_gone.push(pb::FlowKey {
                src: fk.dst.clone(),
                dst: fk.src.clone(),
                src_port: fk.dst_port,
                dst_port: fk.src_port,
                ..fk.clone()
            });
        }
        installs.push(pb::Flow { key: Some(fk), ..flow.clone() });
        *installed = flow;
    }
    let (mut done, mut failed) = (0u64, 0u64);
    for chunk in installs.chunks(REDECIDE_BATCH) {
        match client.flows.install_flows(pb::InstallFlowsRequest { flows: chunk.to_vec() }).await {
            Ok(_) => done += chunk.len() as u64,
            Err(e) => {
                warn!(node = %name, error = %e, flows = chunk.len(), "rewriting re-decided flows failed");
                failed += chunk.len() as u64;
            }
        }
    }
    for k in reverse_gone {
        // Gone already (aged out) is as good.
        if let Err(e) = client.flows.delete_flows(pb::DeleteFlowsRequest { keys: vec![k] }).await {
            if e.code() != Code::NotFound {
                warn!(node = %name, error = %e, "removing a reply direction failed");
            }
        }
    }
    info!(
        node = %name,
        remembered = tracked.flows.len(),
        rewritten = done,
        failed,
        "flows decided again after a change of rules or routes"
    );
    status.node(name, |s| {
        s.flows.redecided += done;
        s.flows.failed += failed;
    });
    Ok(())
}

/// Every flow of the node (ListFlows streams them in chunks).
async fn list_flows(client: &mut Client) -> Result<Vec<pb::Flow>, SessionError> {
    let mut stream =
        client.flows.list_flows(pb::ListFlowsRequest::default()).await.map_err(rpc_error("ListFlows"))?.into_inner();
    let mut flows = Vec::new();
    while let Some(chunk) = stream.message().await.map_err(rpc_error("ListFlows"))? {
        flows.extend(chunk.flows);
    }
    Ok(flows)
}
