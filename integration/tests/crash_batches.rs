//! A batch is all or nothing across a crash: the server SIGKILLed at many instants spread over a
//! large AddRoutes, DeleteRoutes, AddNextHops, DeleteNextHops, PutPolicy, InstallFlows and
//! DeleteFlows call (the call's duration measured first, the kills at fractions of it), and over
//! UpgradePrograms. After each restart the batch is entirely present or entirely absent (the
//! listings), the generation says which (one more: present), and a retry gets a clear answer:
//! with `replace` (or a replace by nature) it applies after a rollback and changes nothing after
//! a commit. Some kills must land between the batch's first and last kernel write (the restart
//! logs a rollback): without the crash journal those left part of the batch. Meanwhile a UDP
//! stream through routes no batch touches loses no packet.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use controller_client::{pb, Client};
use dataplane_server::dataplane::loader::links_running;
use integration::*;
use tonic::{Code, Status};

const STREAM_PORT: u16 = 7002;
const STREAM_PPS: u32 = 2000;
/// Kill instants per batch kind.
const KILLS: u32 = 20;
/// What the restarted server logs when it rolled a batch back.
const ROLLED_BACK: &str = "a batch cut short by a crash was rolled back";

/// Where a batch is after a kill and a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    Absent,
    Present,
}

/// A kill's outcome.
#[derive(Clone, Copy, Debug)]
struct Outcome {
    found: Found,
    /// The restart rolled the batch back (the kill came between its first and last write).
    rolled_back: bool,
    /// The generation before the call.
    g0: u64,
}

/// Per batch kind: how the kills ended.
#[derive(Debug, Default)]
struct Tally {
    absent: u32,
    rolled_back: u32,
    present: u32,
}

impl Tally {
    fn add(&mut self, o: Outcome) {
        match o.found {
            Found::Absent => self.absent += 1,
            Found::Present => self.present += 1,
        }
        self.rolled_back += u32::from(o.rolled_back);
    }

    /// Some kill came in the middle of the kernel writes (else the test proved nothing).
    fn assert_exercised(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert!(self.rolled_back >= 1, "{what}: no kill landed between the batch's writes: {self:?}");
    }
}

/// How many of a batch's entries the server has.
#[derive(Clone, Copy)]
enum Probe {
    /// Routes of the VRFs in the range.
    Routes(u32, u32),
    /// Next hops from id 1000.
    NextHops,
    Flows,
    /// The big policy: [`RULES`] if its rules are variant `want`, 0 if the other.
    Policy {
        want: u32,
        other: u32,
    },
}

/// The routed topology with its router programmed, the server in the router's namespace, and a
/// stream from h1 to h2 running through routes (VRF 0) no batch of these tests touches.
struct Rig {
    topo: Topology,
    server: Server,
    stream: Option<UdpStream>,
}

impl Rig {
    async fn new() -> Self {
        let topo = Topology::routed().unwrap();
        let server = Server::start(&topo.rtr).unwrap();
        let mut c = server.client().await.unwrap();
        program_router(&topo, &mut c).await.unwrap();
        let stream = UdpStream::start(&topo.h1, &topo.h2, H2_ADDR.parse().unwrap(), STREAM_PORT, STREAM_PPS).unwrap();
        Self { topo, server, stream: Some(stream) }
    }

    async fn client(&self) -> Client {
        self.server.client().await.unwrap()
    }

    async fn generation(&self) -> u64 {
        let mut c = self.client().await;
        c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().generation
    }

    fn rollbacks(&self) -> usize {
        self.server.log_text().matches(ROLLED_BACK).count()
    }

    /// Starts `call` on a client of its own, SIGKILLs the server `after` into it and restarts
    /// it. The batch must then be whole or absent: `probe` finds 0 or `full` of its entries
    /// (`adds`: the batch adds them, else it removes them); the generation must say which; a
    /// call answered before the kill must be present.
    async fn kill_during<F, Fut>(
        &mut self,
        (what, n): (&str, usize),
        when: When,
        call: F,
        (probe, full, adds): (Probe, usize, bool),
    ) -> Outcome
    where
        F: FnOnce(Client) -> Fut,
        Fut: Future<Output = Result<u64, Status>> + Send + 'static,
    {
        let g0 = self.generation().await;
        let rollbacks = self.rollbacks();
        let call = tokio::spawn(call(self.client().await));
        match when {
            When::At(after) => tokio::time::sleep(after).await,
            When::AfterIntent(after) => {
                // The intent is on disk from before the first kernel write to the commit.
                let intent = dataplane_server::domain::intent::path_for(&self.server.state_file);
                while !intent.exists() && !call.is_finished() {
                    std::thread::sleep(Duration::from_micros(100));
                }
                std::thread::sleep(after);
            }
        }
        self.server.kill9().unwrap();
        let answered = call.await.unwrap();
        self.server.restart().unwrap();
        let rolled_back = self.rollbacks() > rollbacks;
        let have = self.count(probe, what, n).await;
        let found = match (have, adds) {
            (0, true) => Found::Absent,
            (0, false) => Found::Present,
            (h, true) if h == full => Found::Present,
            (h, false) if h == full => Found::Absent,
            (h, _) => panic!(
                "{what} kill {n}: {h} of the batch's {full} entries after the restart\n{}",
                self.server.log_text()
            ),
        };
        let g = self.generation().await;
        match found {
            Found::Absent => assert_eq!(g, g0, "{what} kill {n}: the batch is absent, the generation moved"),
            Found::Present => {
                assert_eq!(g, g0 + 1, "{what} kill {n}: the batch is present, the generation did not move")
            }
        }
        if let Ok(answered) = answered {
            assert_eq!((found, answered), (Found::Present, g0 + 1), "{what} kill {n}: answered before the kill");
        }
        if rolled_back {
            assert_eq!(found, Found::Absent, "{what} kill {n}: rolled back, yet present");
        }
        // GetStatus says the same, and the state file and the kernel agree on everything else.
        let restore =
            self.client().await.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner().restore;
        let restore = restore.expect("GetStatus reports the restore");
        assert_eq!(restore.rolled_back.map(|r| r.generation), rolled_back.then_some(g0 + 1), "{what} kill {n}");
        assert!(
            restore.adopted.is_empty() && restore.disagreements.is_empty(),
            "{what} kill {n}: the state file and the kernel disagree after the restart: {restore:?}"
        );
        Outcome { found, rolled_back, g0 }
    }

    async fn count(&self, probe: Probe, what: &str, n: usize) -> usize {
        let mut c = self.client().await;
        match probe {
            Probe::Routes(from, to) => {
                let vrfs = c.routing.list_vrfs(pb::ListVrfsRequest {}).await.unwrap().into_inner().vrfs;
                vrfs.iter().filter(|v| (from..to).contains(&v.id)).map(|v| v.routes as usize).sum()
            }
            Probe::NextHops => {
                let nhs = c.routing.list_next_hops(pb::ListNextHopsRequest {}).await.unwrap().into_inner().next_hops;
                nhs.iter().filter(|h| h.id >= 1000).count()
            }
            Probe::Flows => {
                let mut s = c.flows.list_flows(pb::ListFlowsRequest::default()).await.unwrap().into_inner();
                let mut have = 0;
                while let Some(chunk) = s.message().await.unwrap() {
                    have += chunk.flows.len();
                }
                have
            }
            Probe::Policy { want, other } => {
                let req = pb::ListPoliciesRequest { name: "big".into() };
                let p = c.policy.list_policies(req).await.unwrap().into_inner().policies.remove(0);
                assert_eq!(p.attachments.len(), 1, "{what} kill {n}: the policy's attachment");
                let variant = policy_variant(&p.rules);
                match variant {
                    Some(v) if v == want => RULES as usize,
                    Some(v) if v == other => 0,
                    _ => panic!("{what} kill {n}: rules of neither version: {variant:?}, {} rules", p.rules.len()),
                }
            }
        }
    }

    /// The stream lost nothing, the router still answers pings.
    fn finish(mut self, what: &str) {
        self.topo.ping_h1_to_h2(1).unwrap();
        let r = self.stream.take().unwrap().stop().unwrap();
        assert!(r.sent > 1000, "{what}: the stream hardly ran: {r:?}");
        assert_eq!(r.lost, 0, "{what}: forwarding for untouched routes lost packets: {r:?}");
    }
}

/// When to kill a call.
#[derive(Clone, Copy, Debug)]
enum When {
    /// This long after it started.
    At(Duration),
    /// This long after its intent appeared (its kernel writes began): the window a kill at
    /// fixed instants may miss where the writes take a small part of the call.
    AfterIntent(Duration),
}

/// When to kill a call lasting `duration`: `KILLS` instants spread over it, then a few right
/// after its intent appeared.
fn instants(duration: Duration) -> impl Iterator<Item = (usize, When)> {
    let spread = (0..KILLS).map(move |i| When::At(duration.mul_f64((f64::from(i) + 0.5) / f64::from(KILLS))));
    let targeted = [0, 1, 3].map(|ms| When::AfterIntent(Duration::from_millis(ms)));
    spread.chain(targeted).enumerate()
}

/// Whether to check a retry after a kill that left the batch absent (each such check costs a
/// whole call, and one to undo it): a few per kind.
fn check_retry(n: usize) -> bool {
    n % 7 == 3
}

// --- routes ---------------------------------------------------------------------------------

/// VRFs of the big route batch (none has an interface: nothing forwards by them); the delete
/// kills use the first `DELETE_VRFS` of them.
const ROUTE_VRFS: (u32, u32) = (100, 164);
const DELETE_VRFS: u32 = 16;

/// Every prefix of length 24..=32 inside the three IPv4 documentation /24s (1,533).
fn v4_doc_prefixes() -> Vec<String> {
    let mut out = Vec::new();
    for base in ["192.0.2", "198.51.100", "203.0.113"] {
        for len in 24u32..=32 {
            for host in (0..256u32).step_by(1 << (32 - len)) {
                out.push(format!("{base}.{host}/{len}"));
            }
        }
    }
    out
}

/// Every IPv4 documentation prefix in each VRF of `vrfs` and `v6` IPv6 /64s of 2001:db8::/32
/// (in the first VRF), all to next hop 3 (RECEIVE).
fn routes(vrfs: (u32, u32), v6: u32) -> Vec<pb::Route> {
    let v4 = v4_doc_prefixes();
    let mut routes = Vec::new();
    for vrf in vrfs.0..vrfs.1 {
        routes.extend(v4.iter().map(|p| pb::Route { vrf, prefix: p.clone(), next_hop: 3 }));
    }
    for i in 0..v6 {
        let prefix = format!("2001:db8:{:x}:{:x}::/64", 0x100 + (i >> 16), i & 0xffff);
        routes.push(pb::Route { vrf: vrfs.0, prefix, next_hop: 3 });
    }
    routes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_sigkill_during_200k_add_and_50k_delete_batch_whole_or_absent() {
    let mut rig = Rig::new().await;
    let mut c = rig.client().await;
    for vrf in ROUTE_VRFS.0..ROUTE_VRFS.1 {
        c.routing.add_vrf(pb::AddVrfRequest { id: vrf, ..Default::default() }).await.unwrap();
    }
    // ~200,000 routes: 98,112 IPv4 (64 VRFs) and 100,000 IPv6.
    let big = routes(ROUTE_VRFS, 100_000);
    let total = big.len();
    let add = pb::AddRoutesRequest { routes: big.clone(), replace: true, ..Default::default() };
    let del_all = pb::DeleteRoutesRequest { routes: big, ..Default::default() };
    let t = Instant::now();
    c.routing.add_routes(add.clone()).await.unwrap();
    let d_add = t.elapsed();
    let t = Instant::now();
    c.routing.delete_routes(del_all.clone()).await.unwrap();
    eprintln!("AddRoutes of {total}: {d_add:?}; DeleteRoutes of them: {:?}", t.elapsed());

    let probe = (Probe::Routes(ROUTE_VRFS.0, ROUTE_VRFS.1), total, true);
    let mut tally = Tally::default();
    let mut plain_retry_checked = false;
    for (n, at) in instants(d_add) {
        let req = add.clone();
        let call = |mut c: Client| async move { c.routing.add_routes(req).await.map(|r| r.into_inner().generation) };
        let o = rig.kill_during(("AddRoutes", n), at, call, probe).await;
        tally.add(o);
        if o.found == Found::Absent && !check_retry(n) {
            continue;
        }
        let mut c = rig.client().await;
        if o.found == Found::Present && !plain_retry_checked {
            // A plain retry of a batch that committed: ALREADY_EXISTS naming the first route.
            let plain = pb::AddRoutesRequest { replace: false, ..add.clone() };
            let e = c.routing.add_routes(plain).await.unwrap_err();
            assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
            assert!(e.message().starts_with("routes[0]"), "{}", e.message());
            plain_retry_checked = true;
        }
        // With replace: applies after a rollback, changes nothing after a commit.
        let g = c.routing.add_routes(add.clone()).await.unwrap().into_inner().generation;
        assert_eq!(g, o.g0 + 1, "AddRoutes kill {n}: the retry's generation ({:?} after the restart)", o.found);
        assert_eq!(rig.count(probe.0, "AddRoutes retry", n).await, total);
        c.routing.delete_routes(del_all.clone()).await.unwrap();
    }
    tally.assert_exercised("AddRoutes");

    // DeleteRoutes of ~50,000 (24,528 IPv4 in 16 VRFs, 25,000 IPv6), from present.
    let some = routes((ROUTE_VRFS.0, ROUTE_VRFS.0 + DELETE_VRFS), 25_000);
    let total = some.len();
    let add = pb::AddRoutesRequest { routes: some.clone(), replace: false, ..Default::default() };
    let del = pb::DeleteRoutesRequest { routes: some, ..Default::default() };
    let mut c = rig.client().await;
    c.routing.add_routes(add.clone()).await.unwrap();
    let t = Instant::now();
    c.routing.delete_routes(del.clone()).await.unwrap();
    let d_del = t.elapsed();
    c.routing.add_routes(add.clone()).await.unwrap();
    eprintln!("DeleteRoutes of {total}: {d_del:?}");
    let probe = (Probe::Routes(ROUTE_VRFS.0, ROUTE_VRFS.1), total, false);
    let mut tally = Tally::default();
    for (n, at) in instants(d_del) {
        let req = del.clone();
        let call = |mut c: Client| async move { c.routing.delete_routes(req).await.map(|r| r.into_inner().generation) };
        let o = rig.kill_during(("DeleteRoutes", n), at, call, probe).await;
        tally.add(o);
        if o.found == Found::Absent && !check_retry(n) {
            continue;
        }
        // A retry: applies after a rollback; after a commit, NOT_FOUND naming the first route.
        let mut c = rig.client().await;
        match (o.found, c.routing.delete_routes(del.clone()).await) {
            (Found::Absent, Ok(r)) => assert_eq!(r.into_inner().generation, o.g0 + 1),
            (Found::Present, Err(e)) => {
                assert_eq!(e.code(), Code::NotFound, "{e:?}");
                assert!(e.message().starts_with("routes[0]"), "{}", e.message());
            }
            (f, r) => panic!("DeleteRoutes kill {n}: {f:?} after the restart, retry {r:?}"),
        }
        c.routing.add_routes(add.clone()).await.unwrap();
    }
    tally.assert_exercised("DeleteRoutes");
    rig.finish("route batches");
}

// --- next hops ------------------------------------------------------------------------------

const NEXT_HOPS: u32 = 2_500;

/// `NEXT_HOPS` next hops from id 1000: ENCAPs out of r1, DISCARDs, and ECMP groups of them.
fn big_nexthops(rig: &Rig) -> Vec<pb::NextHop> {
    let mac = rig.topo.h2.mac("eth0").unwrap();
    (0..NEXT_HOPS)
        .map(|i| {
            let id = 1000 + i;
            let kind = match i % 4 {
                0 | 1 => return encap_nexthop(id, &rig.topo.r1, &mac),
                2 => pb::next_hop::Kind::Discard(pb::Discard {}),
                _ => pb::next_hop::Kind::Ecmp(pb::EcmpNextHop { members: vec![id - 3, id - 2] }),
            };
            pb::NextHop { id, kind: Some(kind), ..Default::default() }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexthops_sigkill_during_add_and_delete_of_2500_batch_whole_or_absent() {
    let mut rig = Rig::new().await;
    let add = pb::AddNextHopsRequest { next_hops: big_nexthops(&rig), replace: true, ..Default::default() };
    let del = pb::DeleteNextHopsRequest { ids: (1000..1000 + NEXT_HOPS).collect(), ..Default::default() };
    let mut c = rig.client().await;
    let t = Instant::now();
    c.routing.add_next_hops(add.clone()).await.unwrap();
    let d_add = t.elapsed();
    let t = Instant::now();
    c.routing.delete_next_hops(del.clone()).await.unwrap();
    let d_del = t.elapsed();
    eprintln!("AddNextHops of {NEXT_HOPS}: {d_add:?}; DeleteNextHops: {d_del:?}");

    let probe = (Probe::NextHops, NEXT_HOPS as usize, true);
    let mut tally = Tally::default();
    for (n, at) in instants(d_add) {
        let req = add.clone();
        let call = |mut c: Client| async move { c.routing.add_next_hops(req).await.map(|r| r.into_inner().generation) };
        let o = rig.kill_during(("AddNextHops", n), at, call, probe).await;
        tally.add(o);
        if o.found == Found::Absent && !check_retry(n) {
            continue;
        }
        let mut c = rig.client().await;
        if o.found == Found::Present {
            let plain = pb::AddNextHopsRequest { replace: false, ..add.clone() };
            let e = c.routing.add_next_hops(plain).await.unwrap_err();
            assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
            assert!(e.message().starts_with("next_hops[0].id"), "{}", e.message());
        }
        let g = c.routing.add_next_hops(add.clone()).await.unwrap().into_inner().generation;
        assert_eq!(g, o.g0 + 1, "AddNextHops kill {n}: the retry's generation ({:?} after the restart)", o.found);
        c.routing.delete_next_hops(del.clone()).await.unwrap();
    }
    tally.assert_exercised("AddNextHops");

    rig.client().await.routing.add_next_hops(add.clone()).await.unwrap();
    let probe = (Probe::NextHops, NEXT_HOPS as usize, false);
    let mut tally = Tally::default();
    for (n, at) in instants(d_del) {
        let req = del.clone();
        let call =
            |mut c: Client| async move { c.routing.delete_next_hops(req).await.map(|r| r.into_inner().generation) };
        let o = rig.kill_during(("DeleteNextHops", n), at, call, probe).await;
        tally.add(o);
        if o.found == Found::Absent && !check_retry(n) {
            continue;
        }
        let mut c = rig.client().await;
        match (o.found, c.routing.delete_next_hops(del.clone()).await) {
            (Found::Absent, Ok(r)) => assert_eq!(r.into_inner().generation, o.g0 + 1),
            (Found::Present, Err(e)) => {
                assert_eq!(e.code(), Code::NotFound, "{e:?}");
                assert!(e.message().starts_with("ids[0]"), "{}", e.message());
            }
            (f, r) => panic!("DeleteNextHops kill {n}: {f:?} after the restart, retry {r:?}"),
        }
        c.routing.add_next_hops(add.clone()).await.unwrap();
    }
    tally.assert_exercised("DeleteNextHops");
    rig.finish("next-hop batches");
}

// --- policy ---------------------------------------------------------------------------------

const RULES: u32 = 4000;

/// A large policy: TCP from 192.0.2.x to 203.0.113.0/24, one destination port per rule, the
/// ports shifted by `variant`. Attached to r0's ingress, it never matches the stream.
fn big_policy(variant: u32) -> pb::PutPolicyRequest {
    let rules = (0..RULES)
        .map(|i| pb::Rule {
            priority: i + 1,
            src_prefix: format!("192.0.2.{}/32", i % 256),
            dst_prefix: "203.0.113.0/24".into(),
            protocol: Some(6),
            dst_ports: Some(pb::PortRange { first: 1 + i + variant, last: 1 + i + variant }),
            action: (if i % 2 == 0 { pb::Action::Deny } else { pb::Action::Allow }).into(),
            ..Default::default()
        })
        .collect();
    pb::PutPolicyRequest { name: "big".into(), rules }
}

/// The variant every rule of `rules` is of; `None` if they are not all of one.
fn policy_variant(rules: &[pb::Rule]) -> Option<u32> {
    let variant = rules.first()?.dst_ports.as_ref()?.first.checked_sub(1)?;
    let whole = rules.len() as u32 == RULES
        && rules.iter().enumerate().all(|(i, r)| r.dst_ports.as_ref().map(|p| p.first) == Some(1 + i as u32 + variant));
    whole.then_some(variant)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_sigkill_during_put_of_4000_rule_attached_policy_old_or_new_whole() {
    let mut rig = Rig::new().await;
    let mut c = rig.client().await;
    c.policy.put_policy(big_policy(0)).await.unwrap();
    c.policy
        .attach_policy(pb::AttachPolicyRequest {
            policy: "big".into(),
            interface: rig.topo.r0.clone(),
            direction: pb::Direction::Ingress.into(),
            default_action: pb::Action::Allow.into(),
        })
        .await
        .unwrap();
    let t = Instant::now();
    c.policy.put_policy(big_policy(100)).await.unwrap();
    let d = t.elapsed();
    eprintln!("PutPolicy of {RULES} rules, attached: {d:?}");

    let mut tally = Tally::default();
    let mut have = 100;
    for (n, at) in instants(d) {
        let want = 100 - have;
        let req = big_policy(want);
        let call = |mut c: Client| async move { c.policy.put_policy(req).await.map(|r| r.into_inner().generation) };
        let probe = (Probe::Policy { want, other: have }, RULES as usize, true);
        let o = rig.kill_during(("PutPolicy", n), at, call, probe).await;
        tally.add(o);
        if o.found == Found::Present {
            have = want;
        }
        if o.found == Found::Absent && !check_retry(n) {
            continue;
        }
        // A replace by nature: the retry applies after a rollback, changes nothing after a
        // commit (same generation).
        let mut c = rig.client().await;
        let g = c.policy.put_policy(big_policy(want)).await.unwrap().into_inner().generation;
        assert_eq!(g, o.g0 + 1, "PutPolicy kill {n}: the retry's generation ({:?} after the restart)", o.found);
        have = want;
    }
    tally.assert_exercised("PutPolicy");
    // The tables the killed puts had filled were given back: the policy still fits.
    let mut c = rig.client().await;
    c.policy.put_policy(big_policy(200)).await.unwrap();
    rig.finish("policy puts");
}

// --- flows ----------------------------------------------------------------------------------

const FLOWS: u32 = 5000;

/// `FLOWS` UDP flows 192.0.2.x -> 203.0.113.y (never the stream's), each with its reply.
fn big_flows() -> pb::InstallFlowsRequest {
    let flows = (0..FLOWS)
        .map(|i| pb::Flow {
            key: Some(pb::FlowKey {
                vrf: 0,
                src: format!("192.0.2.{}", 10 + i % 200),
                dst: format!("203.0.113.{}", 1 + i / 200),
                protocol: 17,
                src_port: 20_000 + i,
                dst_port: 53,
            }),
            action: pb::FlowAction::Forward.into(),
            next_hop: 1,
            reverse_action: pb::FlowAction::Drop.into(),
            ..Default::default()
        })
        .collect();
    pb::InstallFlowsRequest { flows, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_sigkill_during_install_and_delete_of_5000_flow_batch_whole_or_absent() {
    let mut rig = Rig::new().await;
    let install = big_flows();
    let keys = install
        .flows
        .iter()
        .flat_map(|f| {
            let k = f.key.clone().unwrap();
            let reply = pb::FlowKey {
                src: k.dst.clone(),
                dst: k.src.clone(),
                src_port: k.dst_port,
                dst_port: k.src_port,
                ..k.clone()
            };
            [k, reply]
        })
        .collect();
    let del = pb::DeleteFlowsRequest { keys, ..Default::default() };
    let mut c = rig.client().await;
    let t = Instant::now();
    c.flows.install_flows(install.clone()).await.unwrap();
    let d_add = t.elapsed();
    let t = Instant::now();
    c.flows.delete_flows(del.clone()).await.unwrap();
    let d_del = t.elapsed();
    eprintln!("InstallFlows of {FLOWS} (and replies): {d_add:?}; DeleteFlows: {d_del:?}");

    let full = 2 * FLOWS as usize;
    let mut tally = Tally::default();
    for (n, at) in instants(d_add) {
        let req = install.clone();
        let call = |mut c: Client| async move { c.flows.install_flows(req).await.map(|r| r.into_inner().generation) };
        let o = rig.kill_during(("InstallFlows", n), at, call, (Probe::Flows, full, true)).await;
        tally.add(o);
        if o.found == Found::Absent && !check_retry(n) {
            continue;
        }
        // A replace by nature: the retry installs the flows (after a commit, again: one more
        // generation, their counters restarted).
        let mut c = rig.client().await;
        let g = c.flows.install_flows(install.clone()).await.unwrap().into_inner().generation;
        let expected = if o.found == Found::Present { o.g0 + 2 } else { o.g0 + 1 };
        assert_eq!(g, expected, "InstallFlows kill {n}: the retry's generation ({:?} after the restart)", o.found);
        c.flows.delete_flows(del.clone()).await.unwrap();
    }
    tally.assert_exercised("InstallFlows");

    rig.client().await.flows.install_flows(install.clone()).await.unwrap();
    let mut tally = Tally::default();
    for (n, at) in instants(d_del) {
        let req = del.clone();
        let call = |mut c: Client| async move { c.flows.delete_flows(req).await.map(|r| r.into_inner().generation) };
        let o = rig.kill_during(("DeleteFlows", n), at, call, (Probe::Flows, full, false)).await;
        tally.add(o);
        if o.found == Found::Absent && !check_retry(n) {
            continue;
        }
        let mut c = rig.client().await;
        match (o.found, c.flows.delete_flows(del.clone()).await) {
            (Found::Absent, Ok(r)) => assert_eq!(r.into_inner().generation, o.g0 + 1),
            (Found::Present, Err(e)) => {
                assert_eq!(e.code(), Code::NotFound, "{e:?}");
                assert!(e.message().starts_with("keys[0]"), "{}", e.message());
            }
            (f, r) => panic!("DeleteFlows kill {n}: {f:?} after the restart, retry {r:?}"),
        }
        c.flows.install_flows(install.clone()).await.unwrap();
    }
    tally.assert_exercised("DeleteFlows");
    rig.finish("flow batches");
}

// --- upgrades -------------------------------------------------------------------------------

/// SIGKILL during UpgradePrograms (links switched one by one): the restart converges on one
/// program per hook with every link running it (a link left on the other build is switched).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_sigkill_midway_restart_converges_every_link_on_pinned_programs() {
    let mut rig = Rig::new().await;
    let mut c = rig.client().await;
    let t = Instant::now();
    c.system.upgrade_programs(pb::UpgradeProgramsRequest::default()).await.unwrap();
    let d = t.elapsed();
    eprintln!("UpgradePrograms: {d:?}");
    // Half the instants of the batches: each restart after a kill may run the verifier.
    let spread = instants(d).filter_map(|(n, w)| match w {
        When::At(at) => Some((n, at)),
        When::AfterIntent(_) => None,
    });
    for (n, at) in spread.step_by(2) {
        let mut c = rig.client().await;
        let call =
            tokio::spawn(
                async move { c.system.upgrade_programs(pb::UpgradeProgramsRequest::default()).await.map(|_| ()) },
            );
        tokio::time::sleep(at).await;
        rig.server.kill9().unwrap();
        let _ = call.await.unwrap();
        rig.server.restart().unwrap();
        let mut c = rig.client().await;
        let st = c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner();
        assert_eq!(st.programs.len(), 2, "upgrade kill {n}: {:?}", st.programs);
        for p in &st.programs {
            let links = links_running(p.kernel_id);
            assert_eq!(links, 2, "upgrade kill {n}: {} (id {}) runs on {links} links", p.name, p.kernel_id);
        }
        let mut links: Vec<u32> = st.attachments.iter().map(|a| a.link_id).collect();
        links.sort_unstable();
        links.dedup();
        assert_eq!(links.len(), 4, "upgrade kill {n}: an XDP and a TC link per interface: {:?}", st.attachments);
        rig.topo.ping_h1_to_h2(1).unwrap_or_else(|e| panic!("upgrade kill {n}: {e}"));
    }
    // And the next upgrade works.
    let mut c = rig.client().await;
    let r = c.system.upgrade_programs(pb::UpgradeProgramsRequest::default()).await.unwrap().into_inner();
    for p in &r.programs {
        assert_eq!(links_running(p.kernel_id), 2, "{}", p.name);
    }
    rig.finish("upgrades");
}
