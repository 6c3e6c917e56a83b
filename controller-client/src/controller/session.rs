//! One node: connect (with backoff), open a controller session (`Controller/Session`) with this
//! controller's role and election id and wait to be its primary, resync (BeginResync, replay
//! everything, EndResync, written with the session's election id), then answer the misses the
//! session streams with decisions on the same stream and apply each new version of the file as
//! a diff, until the session ends (a server restart, a controller with a higher id taking
//! over) and it starts over.

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tonic::{Code, Status};
use tracing::{debug, info, warn};

use super::{
    desired::{Desired, NodeDesired, Verdict},
    plan::{self, Step},
    status::{now_ms, Shared},
};
use crate::{
    code_name, pb,
    stream_channel::{SessionSender, StreamChannel},
    Client,
};

/// Who this controller is to the nodes' servers: its arbitration role and election id.
#[derive(Clone, Debug)]
pub struct Identity {
    pub role: String,
    pub election_id: u128,
}

/// Reconnect delays: doubling from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(3);
/// Most misses per batch the session streams (and so per decision batch).
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
    #[error("the session's stream ended (server stopped?)")]
    StreamEnded,
    #[error("another controller (election id {primary}) is now the node's primary")]
    Deposed { primary: u128 },
    #[error("the node's server address changed")]
    ServerChanged,
}

fn rpc_error(rpc: &'static str) -> impl FnOnce(Status) -> SessionError {
    move |s| SessionError::Rpc { rpc, code: code_name(s.code()), message: s.message().to_owned() }
}

/// Runs node `name` until it leaves the file.
pub async fn run(name: String, mut desired: watch::Receiver<Arc<Desired>>, status: Shared, identity: Identity) {
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
        match session(&name, node, &mut desired, &status, &mut tracked, &identity).await {
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
    identity: &Identity,
) -> Result<(), SessionError> {
    let base = Client::connect(&node.server).await?;
    // Opened before the resync, so no miss falls between the two.
    let config = pb::SessionConfig { max_batch: MISS_BATCH as u32, ..Default::default() };
    let mut channel =
        StreamChannel::open(&base, &identity.role, identity.election_id, config).await.map_err(rpc_error("Session"))?;
    let instance = channel.arbitration.instance_id.clone();
    let mut primary = channel.arbitration.primary;
    status.node(name, |n| {
        n.instance_id = instance.clone();
        n.connected = true;
    });
    // A backup programs nothing: it waits until it is the primary (the primary went away, or
    // this one raised its id).
    while !primary {
        status.node(name, |n| n.state = "standby".into());
        match channel.next().await.map_err(rpc_error("Session"))? {
            Some(pb::session_response::Kind::Arbitration(a)) => primary = a.primary,
            Some(_) => {}
            None => return Err(SessionError::StreamEnded),
        }
    }
    info!(node = %name, election_id = identity.election_id, instance = %instance, "primary for the node");
    let mut client = channel.client();
    let sender = channel.sender.clone();
    let mut pending = Pending::default();
    status.node(name, |n| n.state = "resyncing".into());
    let mut applied = node;
    resync(name, &mut client, &applied, status).await?;
    status.node(name, |n| {
        n.state = "ready".into();
        n.sessions += 1;
        n.connected_since_ms = now_ms();
    });
    decide_held(name, &mut client, &sender, &applied, status, &mut pending).await?;

    loop {
        tokio::select! {
            msg = channel.next() => {
                use pb::session_response::Kind;
                match msg.map_err(rpc_error("Session"))?.ok_or(SessionError::StreamEnded)? {
                    Kind::Misses(b) => answer(name, &sender, &applied, b.misses, status, &mut pending).await?,
                    Kind::DecisionResult(r) => pending.settle(name, r, status, tracked),
                    Kind::PacketIn(_) => status.node(name, |s| s.flows.punts += 1),
                    Kind::Lost(l) if l.misses > 0 => {
                        warn!(node = %name, lost = l.misses, "the session lost misses; deciding held flows from the node's table");
                        status.node(name, |s| { s.flows.lagged += l.misses; s.flows.lag_resyncs += 1; });
                        decide_held(name, &mut client, &sender, &applied, status, &mut pending).await?;
                    }
                    Kind::Lost(_) => {}
                    Kind::FlowsRemoved(r) => {
                        for f in &r.flows {
                            if let Some(k) = &f.key {
                                tracked.flows.remove(&tuple(k));
                            }
                        }
                        status.node(name, |s| s.flows.removed += r.flows.len() as u64);
                    }
                    Kind::Arbitration(a) if !a.primary => {
                        let primary = a.primary_election_id.as_ref().map(crate::stream_channel::from_uint128).unwrap_or(0);
                        return Err(SessionError::Deposed { primary });
                    }
                    Kind::Arbitration(_) => {}
                    Kind::Error(e) => warn!(node = %name, about = %e.about, id = e.id, code = e.code, message = %e.message, "session error"),
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

/// Decisions sent and not answered yet, by their id: what each entry was, for the bookkeeping
/// when its `DecisionResult` arrives.
#[derive(Default)]
struct Pending {
    next_id: u64,
    batches: std::collections::HashMap<u64, Vec<Decided>>,
}

/// One decision sent: the miss's key and interface, the flow, and what the rules said.
struct Decided {
    key: pb::FlowKey,
    interface: String,
    flow: pb::Flow,
    forward: bool,
    rule: Option<usize>,
    no_route: bool,
}

impl Pending {
    /// Records a result: the flows installed are remembered for re-deciding; every entry counts.
    fn settle(&mut self, name: &str, r: pb::DecisionResult, status: &Shared, tracked: &mut Tracked) {
        let Some(batch) = self.batches.remove(&r.id) else { return };
        let failed: std::collections::HashMap<usize, i32> =
            r.failed.iter().map(|e| (e.index as usize, e.code)).collect();
        for (i, d) in batch.iter().enumerate() {
            if !failed.contains_key(&i) {
                tracked.remember(name, &d.key, &d.interface, &d.flow);
            }
        }
        status.node(name, |s| {
            if r.generation > s.generation {
                s.generation = r.generation;
            }
            for (i, d) in batch.iter().enumerate() {
                s.flows.misses += 1;
                match failed.get(&i).map(|c| Code::from(*c)) {
                    None if d.forward => s.flows.forwarded += 1,
                    None if d.no_route => s.flows.no_route += 1,
                    None => s.flows.dropped += 1,
                    // Expired or answered already (by a lag resync, another controller).
                    Some(Code::NotFound) => s.flows.stale += 1,
                    Some(_) => s.flows.failed += 1,
                }
                match d.rule {
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

/// Decides misses and sends the decisions (each with its reverse) as one batch on the session
/// stream, CONTINUE_ON_ERROR: a held miss that expired meanwhile fails alone. The result is
/// settled when its `DecisionResult` comes back.
async fn answer(
    name: &str,
    sender: &SessionSender,
    node: &NodeDesired,
    misses: Vec<pb::FlowMiss>,
    status: &Shared,
    pending: &mut Pending,
) -> Result<(), SessionError> {
    let mut flows = Vec::new();
    let mut decided = Vec::new();
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
        decided.push(Decided {
            key: key.clone(),
            interface: m.interface.clone(),
            flow: flow.clone(),
            forward: flow.action == pb::FlowAction::Forward as i32,
            rule,
            no_route,
        });
        flows.push(flow);
    }
    if flows.is_empty() {
        return Ok(());
    }
    pending.next_id += 1;
    let id = pending.next_id;
    pending.batches.insert(id, decided);
    sender.decide(id, flows, pb::Atomicity::ContinueOnError).await.map_err(|_| SessionError::StreamEnded)
}

/// Answers the held misses in the node's flow table (after a lag, or left from before this
/// session). The table does not say which interface a held flow arrived on: it is taken to be
/// the first interface of the flow's VRF with flow mode on (rules naming no interface, the
/// usual case, do not care).
async fn decide_held(
    name: &str,
    client: &mut Client,
    sender: &SessionSender,
    node: &NodeDesired,
    status: &Shared,
    pending: &mut Pending,
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
    answer(name, sender, node, misses, status, pending).await
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
        match client.flows.install_flows(pb::InstallFlowsRequest { flows: chunk.to_vec(), ..Default::default() }).await
        {
            Ok(_) => done += chunk.len() as u64,
            Err(e) => {
                warn!(node = %name, error = %e, flows = chunk.len(), "rewriting re-decided flows failed");
                failed += chunk.len() as u64;
            }
        }
    }
    for k in reverse_gone {
        // Gone already (aged out) is as good.
        if let Err(e) = client.flows.delete_flows(pb::DeleteFlowsRequest { keys: vec![k], ..Default::default() }).await
        {
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
