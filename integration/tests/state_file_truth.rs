//! The pinned kernel state is the truth at a restart (issue 18, item 1): a server started with
//! its state file deleted, cut short, stale, or another server's keeps every interface attached
//! and every route forwarding (traffic checked, both families, under a counted UDP stream), lists
//! what the kernel forwards, and reports the disagreement in GetStatus.

use std::time::Duration;

use controller_client::{pb, Client};
use dataplane_server::dataplane::loader::links_running;
use integration::*;

const STREAM_PORT: u16 = 7002;
const STREAM_PPS: u32 = 2000;

/// Routes as (vrf, prefix), what must survive any state file.
async fn routes(c: &mut Client) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut s = c.routing.list_routes(pb::ListRoutesRequest::default()).await.unwrap().into_inner();
    while let Some(chunk) = s.message().await.unwrap() {
        out.extend(chunk.routes.iter().map(|r| (r.vrf, r.prefix.clone())));
    }
    out.sort();
    out
}

async fn status(c: &mut Client) -> pb::GetStatusResponse {
    c.system.get_status(pb::GetStatusRequest {}).await.unwrap().into_inner()
}

fn ping_both(topo: &Topology, what: &str) {
    topo.ping_h1_to_h2(3).unwrap_or_else(|e| panic!("{what}: IPv4 does not forward: {e}"));
    topo.h1
        .exec("ping", &["-6", "-c", "3", "-i", "0.1", "-W", "2", "-q", H2_ADDR6])
        .unwrap_or_else(|e| panic!("{what}: IPv6 does not forward: {e}"));
}

/// A programmed router under a stream; `damage` does what it does to the stopped server's state
/// file; the restarted server must forward as before and report `state_file` (a prefix).
async fn restart_after(
    damage: impl FnOnce(&Server),
    state_file: &str,
) -> (Topology, Server, Client, pb::RestoreStatus) {
    let topo = Topology::routed().unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    ping_both(&topo, "before");
    let before = routes(&mut c).await;
    let generation = status(&mut c).await.generation;
    let xdp = status(&mut c).await.programs[0].kernel_id;
    let stream = UdpStream::start(&topo.h1, &topo.h2, H2_ADDR.parse().unwrap(), STREAM_PORT, STREAM_PPS).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    server.stop().unwrap();
    damage(&server);
    server.restart().unwrap();

    let mut c = server.client().await.unwrap();
    let st = status(&mut c).await;
    let restore = st.restore.clone().expect("GetStatus reports the restore");
    assert!(restore.state_file.starts_with(state_file), "{restore:?}\n{}", server.log_text());
    assert_eq!(links_running(xdp), 2, "an interface lost its XDP link: {restore:?}");
    assert_eq!(st.attachments.len(), 4, "both interfaces, both hooks: {:?}", st.attachments);
    assert_eq!(routes(&mut c).await, before, "the routes listed changed: {restore:?}");
    assert!(restore.dropped.is_empty(), "{restore:?}");
    ping_both(&topo, "after the restart");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = stream.stop().unwrap();
    assert!(r.sent > 500, "the stream hardly ran: {r:?}");
    assert_eq!(r.lost, 0, "packets lost across the restart: {r:?}");
    if !restore.adopted.is_empty() || !restore.disagreements.is_empty() {
        assert!(st.generation > generation, "adopted state did not move the generation: {restore:?}");
    }
    (topo, server, c, restore)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_state_file_deleted_keeps_forwarding_adopts_kernel_and_reports() {
    let (_topo, mut server, mut c, restore) =
        restart_after(|s| std::fs::remove_file(&s.state_file).unwrap(), "missing").await;
    assert!(restore.adopted.iter().filter(|a| a.starts_with("interface ")).count() == 2, "{restore:?}");
    // The three next hops, adopted under ids of the adopted range, the routes through them.
    let nhs = c.routing.list_next_hops(pb::ListNextHopsRequest {}).await.unwrap().into_inner().next_hops;
    assert_eq!(nhs.len(), 3, "{nhs:?}");
    assert!(nhs.iter().all(|n| n.id >= 0x8000_0000 && n.routes > 0), "{nhs:?}");
    // The file written back names the pins: the next restart reads it and agrees.
    server.stop().unwrap();
    server.restart().unwrap();
    let mut c = server.client().await.unwrap();
    let restore = status(&mut c).await.restore.unwrap();
    assert_eq!(restore.state_file, "read");
    assert!(restore.adopted.is_empty() && restore.disagreements.is_empty(), "{restore:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_state_file_truncated_keeps_forwarding_and_keeps_the_file_aside() {
    let mut kept = std::path::PathBuf::new();
    let (_topo, _server, _c, restore) = restart_after(
        |s| {
            let text = std::fs::read(&s.state_file).unwrap();
            std::fs::write(&s.state_file, &text[..text.len() / 3]).unwrap();
            kept = s.state_file.with_extension("json.damaged");
        },
        "damaged (kept as ",
    )
    .await;
    assert!(kept.exists(), "the damaged file was not kept: {restore:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_state_file_of_another_server_keeps_forwarding_and_sets_it_aside() {
    // Another dataplane, in a namespace of its own, with its own pins, interfaces and next hops.
    let (_ns, mut other, _oc) = server_forwarding_via_lo("dpo-").await.unwrap();
    other.stop().unwrap();
    let theirs = std::fs::read(&other.state_file).unwrap();
    let (_topo, _server, _c, restore) =
        restart_after(|s| std::fs::write(&s.state_file, &theirs).unwrap(), "foreign: it describes pins ").await;
    assert!(restore.adopted.iter().any(|a| a.starts_with("interface ")), "{restore:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_state_file_stale_keeps_what_came_after_it_forwarding() {
    let topo = Topology::routed().unwrap();
    topo.h2.exec("ip", &["-6", "addr", "add", "2001:db8:99::2/128", "dev", "eth0", "nodad"]).unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    let stale = std::fs::read(&server.state_file).unwrap();
    // After the copy: a next hop and a route through it, which only the kernel will know.
    let nh = encap_nexthop(40, &topo.r1, &topo.h2.mac("eth0").unwrap());
    c.routing
        .add_next_hops(pb::AddNextHopsRequest { next_hops: vec![nh], replace: false, ..Default::default() })
        .await
        .unwrap();
    let r = pb::Route { vrf: 0, prefix: "2001:db8:99::/64".into(), next_hop: 40 };
    c.routing.add_routes(pb::AddRoutesRequest { routes: vec![r], replace: false, ..Default::default() }).await.unwrap();
    let ping99 = |what: &str| {
        topo.h1
            .exec("ping", &["-6", "-c", "3", "-i", "0.1", "-W", "2", "-q", "2001:db8:99::2"])
            .unwrap_or_else(|e| panic!("{what}: the route added after the copy does not forward: {e}"));
    };
    ping99("before");
    let before = routes(&mut c).await;

    server.stop().unwrap();
    std::fs::write(&server.state_file, &stale).unwrap();
    server.restart().unwrap();

    let mut c = server.client().await.unwrap();
    let restore = status(&mut c).await.restore.unwrap();
    assert_eq!(restore.state_file, "read");
    assert_eq!(routes(&mut c).await, before, "{restore:?}");
    assert!(restore.adopted.iter().any(|a| a.starts_with("next hop 214748")), "{restore:?}");
    ping99("after the restart");
    ping_both(&topo, "after the restart");
    // The file's next hops keep their ids.
    let nhs = c.routing.list_next_hops(pb::ListNextHopsRequest {}).await.unwrap().into_inner().next_hops;
    assert!([1, 2, 3].iter().all(|id| nhs.iter().any(|n| n.id == *id)), "{nhs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_state_file_deleted_attached_policy_read_back_keeps_filtering_until_replaced() {
    let topo = Topology::routed().unwrap();
    let mut server = Server::start(&topo.rtr).unwrap();
    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    // ICMP to h2's IPv4 address denied at r0; everything else allowed.
    let rule = pb::Rule {
        priority: 10,
        dst_prefix: format!("{H2_ADDR}/32"),
        protocol: Some(1),
        action: pb::Action::Deny.into(),
        ..Default::default()
    };
    c.policy.put_policy(pb::PutPolicyRequest { name: "edge".into(), rules: vec![rule] }).await.unwrap();
    let attach = |policy: &str| pb::AttachPolicyRequest {
        policy: policy.into(),
        interface: topo.r0.clone(),
        direction: pb::Direction::Ingress.into(),
        default_action: pb::Action::Allow.into(),
    };
    c.policy.attach_policy(attach("edge")).await.unwrap();
    let filtered = |what: &str| {
        assert!(topo.ping_h1_to_h2(1).is_err(), "{what}: the policy no longer denies");
        topo.h1
            .exec("ping", &["-6", "-c", "2", "-i", "0.1", "-W", "2", "-q", H2_ADDR6])
            .unwrap_or_else(|e| panic!("{what}: IPv6 does not forward: {e}"));
    };
    filtered("before");

    for round in 0..2 {
        // First without a state file, then with the one the first restart wrote.
        server.stop().unwrap();
        if round == 0 {
            std::fs::remove_file(&server.state_file).unwrap();
        }
        server.restart().unwrap();
        let mut c = server.client().await.unwrap();
        let restore = status(&mut c).await.restore.unwrap();
        let pols = c.policy.list_policies(pb::ListPoliciesRequest::default()).await.unwrap().into_inner().policies;
        assert_eq!(pols.len(), 1, "round {round}: {pols:?} {restore:?}");
        assert!(pols[0].name.starts_with("adopted-table-"), "round {round}: {pols:?}");
        assert_eq!(pols[0].attachments.len(), 1, "round {round}: {pols:?}");
        filtered(&format!("round {round}"));
    }
    // The controller's resync: its own policy replaces the adopted one, which it deletes.
    let mut c = server.client().await.unwrap();
    let adopted = c.policy.list_policies(pb::ListPoliciesRequest::default()).await.unwrap().into_inner().policies;
    c.policy.put_policy(pb::PutPolicyRequest { name: "open".into(), rules: vec![] }).await.unwrap();
    c.policy.attach_policy(attach("open")).await.unwrap();
    c.policy.delete_policy(pb::DeletePolicyRequest { name: adopted[0].name.clone() }).await.unwrap();
    ping_both(&topo, "after the adopted policy was replaced");
}
