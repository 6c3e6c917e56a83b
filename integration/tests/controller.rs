//! The reference controller (`dataplane-controller`) programming two nodes from one file:
//!
//! ```text
//!  h1 [eth0 192.0.2.2] -- [a0] node A [a1 203.0.113.1] -- [b0 203.0.113.2] node B [b1] -- [eth0 198.51.100.2] h2
//! ```
//!
//! Each node is a router namespace with kernel forwarding off and its own dataplane server;
//! the controller runs outside both, reaching them over their unix sockets. Node A has flow
//! mode on a0 (from h1): its flow rules admit TCP 5001 and UDP 7000 and drop everything else.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use controller_client::{
    controller::{config, desired::NodeDesired, status::ControllerStatus},
    pb, Client,
};
use integration::{bin, enter_netns, unique, Netns, Server, UdpStream};

const H1: &str = "192.0.2.2";
const H2: &str = "198.51.100.2";

/// Two router namespaces with a server each, two hosts, and a scratch directory.
struct TwoNodes {
    h1: Netns,
    h2: Netns,
    a: Server,
    b: Server,
    // Dropped after the servers: their namespaces go last.
    na: Netns,
    _nb: Netns,
    dir: PathBuf,
    macs: Macs,
    /// Node A's address as the file gives it (its unix socket unless set otherwise).
    a_server: String,
}

struct Macs {
    h1: String,
    h2: String,
    a1: String,
    b0: String,
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn veth(ns: &Netns, name: &str, peer_ns: &Netns, peer: &str) -> Result<()> {
    let tmp = unique("vp");
    ns.exec("ip", &["link", "add", name, "type", "veth", "peer", "name", &tmp])?;
    ns.exec("ip", &["link", "set", &tmp, "netns", &peer_ns.name])?;
    peer_ns.exec("ip", &["link", "set", &tmp, "name", peer])?;
    ns.exec("ip", &["link", "set", name, "up"])?;
    peer_ns.exec("ip", &["link", "set", peer, "up"])?;
    Ok(())
}

impl TwoNodes {
    fn new() -> Result<Self> {
        Self::with_node_a_args(&[])
    }

    /// [`TwoNodes::new`] with extra arguments for node A's server.
    fn with_node_a_args(a_args: &[&str]) -> Result<Self> {
        let h1 = Netns::new("cth1-")?;
        let na = Netns::new("ctna-")?;
        let nb = Netns::new("ctnb-")?;
        let h2 = Netns::new("cth2-")?;
        veth(&na, "a0", &h1, "eth0")?;
        veth(&na, "a1", &nb, "b0")?;
        veth(&nb, "b1", &h2, "eth0")?;
        na.exec("ip", &["addr", "add", "192.0.2.1/24", "dev", "a0"])?;
        na.exec("ip", &["addr", "add", "203.0.113.1/30", "dev", "a1"])?;
        nb.exec("ip", &["addr", "add", "203.0.113.2/30", "dev", "b0"])?;
        nb.exec("ip", &["addr", "add", "198.51.100.1/24", "dev", "b1"])?;
        h1.exec("ip", &["addr", "add", "192.0.2.2/24", "dev", "eth0"])?;
        h2.exec("ip", &["addr", "add", "198.51.100.2/24", "dev", "eth0"])?;
        h1.exec("ip", &["route", "add", "default", "via", "192.0.2.1"])?;
        h2.exec("ip", &["route", "add", "default", "via", "198.51.100.1"])?;
        for h in [&h1, &h2] {
            // Complete checksums from the hosts (an XDP redirect loses veth's checksum offload
            // state), and GRO so a veth accepts redirected frames.
            h.exec("ethtool", &["-K", "eth0", "gro", "on", "tx", "off"])?;
        }
        for n in [&na, &nb] {
            n.exec("sysctl", &["-qw", "net.ipv4.ip_forward=0"])?;
        }
        let macs = Macs { h1: h1.mac("eth0")?, h2: h2.mac("eth0")?, a1: na.mac("a1")?, b0: nb.mac("b0")? };
        let a = Server::start_with(&na, a_args)?;
        let b = Server::start(&nb)?;
        let dir = std::env::temp_dir().join(format!("dataplane-controller-test-{}", unique("c")));
        std::fs::create_dir_all(&dir)?;
        let a_server = a.address();
        Ok(Self { h1, h2, a, b, na, _nb: nb, dir, macs, a_server })
    }

    /// The controller's file for this topology. `extra_a_route` adds a route on node A;
    /// `guard_rules` are the rules of node A's ingress policy.
    fn file(&self, extra_a_route: bool, guard_rules: &[&str]) -> String {
        let m = &self.macs;
        let extra = if extra_a_route { "      - {prefix: 203.0.113.128/25, next_hop: 4}\n" } else { "" };
        let rules: String = guard_rules.iter().map(|r| format!("        - {r}\n")).collect();
        format!(
            r#"# two nodes, one file
nodes:
  node-a:
    server: {sa}
    interfaces:
      - {{name: a0, flows: true, ingress_policy: guard}}
      - {{name: a1}}
    next_hops:
      - {{id: 1, interface: a1, dst_mac: "{b0}"}}
      - {{id: 2, interface: a0, dst_mac: "{h1}"}}
      - {{id: 3, receive: true}}
      - {{id: 4, discard: true}}
    routes:
      - {{prefix: 198.51.100.0/24, next_hop: 1}}
      - {{prefix: 192.0.2.0/24, next_hop: 2}}
      - {{prefix: 192.0.2.1/32, next_hop: 3}}
      - {{prefix: 203.0.113.1/32, next_hop: 3}}
{extra}    policies:
      guard:
{rules}    flow_rules:
      - {{protocol: tcp, dst: 198.51.100.0/24, dst_ports: 5001, action: forward}}
      - {{protocol: udp, dst_ports: 7000, action: forward}}
      - {{action: drop}}
  node-b:
    server: {sb}
    interfaces:
      - {{name: b0}}
      - {{name: b1}}
    next_hops:
      - {{id: 1, interface: b1, dst_mac: "{h2}"}}
      - {{id: 2, interface: b0, dst_mac: "{a1}"}}
      - {{id: 3, receive: true}}
    routes:
      - {{prefix: 198.51.100.0/24, next_hop: 1}}
      - {{prefix: 192.0.2.0/24, next_hop: 2}}
      - {{prefix: 198.51.100.1/32, next_hop: 3}}
      - {{prefix: 203.0.113.2/32, next_hop: 3}}
"#,
            sa = self.a_server,
            sb = self.b.address(),
            b0 = m.b0,
            h1 = m.h1,
            h2 = m.h2,
            a1 = m.a1,
        )
    }

    fn default_file(&self) -> String {
        self.file(
            false,
            &[
                "{priority: 10, protocol: tcp, dst_ports: 23, action: deny}",
                "{priority: 20, protocol: tcp, dst_ports: 24, action: deny}",
            ],
        )
    }
}

/// A `dataplane-controller run` process; SIGKILLed on drop.
struct Controller {
    child: Option<Child>,
    file: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// Network namespace to run in (the root one when `None`).
    netns: Option<String>,
    /// Arguments after `run --file F --status-socket S`.
    extra: Vec<String>,
}

impl Controller {
    fn start(file: &Path, dir: &Path) -> Result<Self> {
        Self::start_in(file, dir, None)
    }

    /// [`Controller::start`] inside network namespace `netns` (to reach a node over TCP on its
    /// loopback; unix sockets are reached from anywhere).
    fn start_in(file: &Path, dir: &Path, netns: Option<&Netns>) -> Result<Self> {
        let mut c = Self {
            child: None,
            file: file.to_owned(),
            socket: dir.join("status.sock"),
            log: dir.join("controller.log"),
            netns: netns.map(|n| n.name.clone()),
            extra: Vec::new(),
        };
        c.spawn()?;
        Ok(c)
    }

    /// A replica: [`Controller::start`] with its own directory under `dir` (status socket, log)
    /// and session election id.
    fn start_replica(file: &Path, dir: &Path, name: &str, election_id: u128) -> Result<Self> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut c = Self {
            child: None,
            file: file.to_owned(),
            socket: dir.join("status.sock"),
            log: dir.join("controller.log"),
            netns: None,
            extra: vec!["--election-id".into(), election_id.to_string()],
        };
        c.spawn()?;
        Ok(c)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(bin("dataplane-controller"));
                c
            }
            None => Command::new(bin("dataplane-controller")),
        };
        let child = cmd
            .args(["run", "--file"])
            .arg(&self.file)
            .arg("--status-socket")
            .arg(&self.socket)
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning dataplane-controller")?;
        self.child = Some(child);
        Ok(())
    }

    fn kill9(&mut self) -> Result<()> {
        let mut c = self.child.take().context("controller not running")?;
        c.kill()?;
        c.wait()?;
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn status(&self) -> Result<ControllerStatus> {
        let out = Command::new(bin("dataplane-controller"))
            .args(["status", "-o", "json", "--status-socket"])
            .arg(&self.socket)
            .output()?;
        ensure!(out.status.success(), "status: {}", String::from_utf8_lossy(&out.stderr));
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Waits until `done` holds for the status (10 s at most).
    fn wait_for(&self, what: &str, done: impl Fn(&ControllerStatus) -> bool) -> Result<ControllerStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(s) = self.status() {
                if done(&s) {
                    return Ok(s);
                }
                if Instant::now() > deadline {
                    bail!("controller: {what} not reached: {s:#?}\n{}", self.log_text());
                }
            } else if Instant::now() > deadline {
                bail!("controller: no status: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every node has completed `sessions` resynced sessions and is ready.
    fn wait_ready(&self, sessions: u64) -> Result<ControllerStatus> {
        self.wait_for(&format!("all nodes ready after {sessions} session(s)"), |s| {
            s.nodes.len() == 2 && s.nodes.values().all(|n| n.state == "ready" && n.sessions >= sessions)
        })
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A node's state through the List RPCs, in the desired state's form (counters and
/// output-only fields left out), and its generation.
async fn node_state(c: &mut Client) -> Result<(NodeDesired, u64)> {
    let mut d = NodeDesired::default();
    for v in c.routing.list_vrfs(pb::ListVrfsRequest {}).await?.into_inner().vrfs {
        if v.id != 0 {
            d.vrfs.insert(v.id, (pb::VrfMode::try_from(v.mode)?, v.kernel_table));
        }
    }
    for i in c.interfaces.list_interfaces(pb::ListInterfacesRequest::default()).await?.into_inner().interfaces {
        d.interfaces.insert(
            i.name.clone(),
            controller_client::controller::desired::IfaceDesired {
                vrf: i.vrf,
                xdp_mode: pb::XdpMode::try_from(i.requested_xdp_mode)?,
            },
        );
    }
    for n in c.routing.list_next_hops(pb::ListNextHopsRequest {}).await?.into_inner().next_hops {
        d.next_hops.insert(n.id, n.kind.context("next hop without kind")?);
    }
    let mut routes = c.routing.list_routes(pb::ListRoutesRequest::default()).await?.into_inner();
    while let Some(chunk) = routes.message().await? {
        for r in chunk.routes {
            d.routes.insert((r.vrf, r.prefix.parse().map_err(anyhow::Error::msg)?), r.next_hop);
        }
    }
    for p in c.policy.list_policies(pb::ListPoliciesRequest::default()).await?.into_inner().policies {
        let rules = p.rules.into_iter().map(|r| pb::Rule { packets: 0, bytes: 0, ..r }).collect();
        d.policies.insert(p.name.clone(), rules);
        for a in p.attachments {
            d.attachments
                .insert((a.interface, a.direction), (p.name.clone(), a.default_action == pb::Action::Deny as i32));
        }
    }
    let generation = c.system.get_status(pb::GetStatusRequest {}).await?.into_inner().generation;
    Ok((d, generation))
}

/// Asserts the node's state is exactly the file's (flow modes and rules are not listed).
async fn assert_matches_file(c: &mut Client, file: &str, node: &str) -> Result<u64> {
    let want = config::parse("test.yaml", file)?.nodes.remove(node).context("node in file")?;
    let (have, generation) = node_state(c).await?;
    ensure!(have.vrfs == want.vrfs, "{node} vrfs: {:?} != {:?}", have.vrfs, want.vrfs);
    ensure!(have.interfaces == want.interfaces, "{node} interfaces: {:?} != {:?}", have.interfaces, want.interfaces);
    ensure!(have.next_hops == want.next_hops, "{node} next hops: {:?} != {:?}", have.next_hops, want.next_hops);
    ensure!(have.routes == want.routes, "{node} routes: {:?} != {:?}", have.routes, want.routes);
    ensure!(have.policies == want.policies, "{node} policies: {:?} != {:?}", have.policies, want.policies);
    ensure!(
        have.attachments == want.attachments,
        "{node} attachments: {:?} != {:?}",
        have.attachments,
        want.attachments
    );
    Ok(generation)
}

/// A TCP echo server on `addr:port` inside `ns`, until dropped.
struct EchoServer(Arc<AtomicBool>);

impl EchoServer {
    fn start(ns: &Netns, addr: &str, port: u16) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let (name, addr, flag) = (ns.name.clone(), addr.parse::<IpAddr>()?, stop.clone());
        std::thread::spawn(move || -> Result<()> {
            enter_netns(&name)?;
            let l = TcpListener::bind((addr, port))?;
            l.set_nonblocking(true)?;
            let _ = tx.send(());
            while !flag.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false)?;
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        let mut buf = [0u8; 64];
                        if let Ok(n) = s.read(&mut buf) {
                            let _ = s.write_all(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            Ok(())
        });
        rx.recv_timeout(Duration::from_secs(5)).context("echo server did not start")?;
        Ok(Self(stop))
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Connects from `ns` to `addr:port`, sends a line and reads the echo (3 s per step).
fn tcp_echo(ns: &Netns, addr: &str, port: u16) -> Result<()> {
    let (name, to) = (ns.name.clone(), SocketAddr::new(addr.parse()?, port));
    std::thread::spawn(move || -> Result<()> {
        enter_netns(&name)?;
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.write_all(b"hello\n")?;
        let mut buf = [0u8; 6];
        s.read_exact(&mut buf)?;
        ensure!(&buf == b"hello\n", "echo {buf:?}");
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    // Write + rename, as editors and config management do: the controller never reads half.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_two_nodes_follow_file_admit_one_port_and_apply_edits_as_diffs() -> Result<()> {
    let t = TwoNodes::new()?;
    let file = t.dir.join("nodes.yaml");
    let text = t.default_file();
    write_file(&file, &text)?;
    let ctl = Controller::start(&file, &t.dir)?;
    ctl.wait_ready(1)?;
    let mut ca = t.a.client().await?;
    let mut cb = t.b.client().await?;
    assert_matches_file(&mut ca, &text, "node-a").await?;
    assert_matches_file(&mut cb, &text, "node-b").await?;

    // Flow rules on node A: TCP 5001 admitted, 5002 refused (its SYN's flow is DROP).
    let _e1 = EchoServer::start(&t.h2, H2, 5001)?;
    let _e2 = EchoServer::start(&t.h2, H2, 5002)?;
    tcp_echo(&t.h1, H2, 5001).context("TCP 5001 must be admitted")?;
    ensure!(tcp_echo(&t.h1, H2, 5002).is_err(), "TCP 5002 must be refused by the flow rules");
    let s = ctl.wait_for("decisions counted", |s| {
        s.nodes["node-a"].flows.forwarded >= 1 && s.nodes["node-a"].flows.dropped >= 1
    })?;
    let a = &s.nodes["node-a"];
    ensure!(a.rule_hits.first().copied().unwrap_or(0) >= 1 && a.rule_hits.get(2).copied().unwrap_or(0) >= 1, "{a:?}");
    ensure!(s.nodes["node-b"].flows.misses == 0, "node B has no flow mode: {s:?}");
    let flows: Vec<pb::Flow> = {
        let mut st = ca.flows.list_flows(pb::ListFlowsRequest::default()).await?.into_inner();
        let mut v = Vec::new();
        while let Some(c) = st.message().await? {
            v.extend(c.flows);
        }
        v
    };
    let port = |p: u32, action: pb::FlowAction| {
        flows
            .iter()
            .any(|f| f.key.as_ref().is_some_and(|k| k.dst_port == p && k.src == H1) && f.action == action as i32)
    };
    ensure!(port(5001, pb::FlowAction::Forward) && port(5002, pb::FlowAction::Drop), "{flows:?}");
    // The admitted flow's reply direction was installed too.
    ensure!(flows.iter().any(|f| f.key.as_ref().is_some_and(|k| k.src_port == 5001 && k.dst == H1)), "{flows:?}");
    // Node B forwards by routes: h1 <-> h2 works through both nodes' XDP.
    let stats = cb.interfaces.list_interfaces(pb::ListInterfacesRequest { name: "b0".into() }).await?.into_inner();
    ensure!(stats.interfaces[0].counters.as_ref().is_some_and(|c| c.rx_packets > 0), "{stats:?}");

    // Edit: one route added on A, one rule removed from A's policy. Applied within a second,
    // and only those two written: A's generation moves by 2, B's not at all.
    let (_, ga) = node_state(&mut ca).await?;
    let (_, gb) = node_state(&mut cb).await?;
    let edited = t.file(true, &["{priority: 10, protocol: tcp, dst_ports: 23, action: deny}"]);
    let t0 = Instant::now();
    write_file(&file, &edited)?;
    loop {
        let (have, _) = node_state(&mut ca).await?;
        if have.routes.len() == 5 && have.policies["guard"].len() == 1 {
            break;
        }
        ensure!(t0.elapsed() < Duration::from_secs(5), "edit not applied: {}", ctl.log_text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = t0.elapsed();
    eprintln!("file edit visible on node A after {took:?}");
    ensure!(took < Duration::from_secs(1), "edit applied after {took:?}");
    let ga2 = assert_matches_file(&mut ca, &edited, "node-a").await?;
    let gb2 = assert_matches_file(&mut cb, &edited, "node-b").await?;
    ensure!(ga2 == ga + 2, "node A generation {ga} -> {ga2}: expected +2 (one AddRoutes, one PutPolicy)");
    ensure!(gb2 == gb, "node B generation {gb} -> {gb2}: nothing of B changed");
    let s = ctl.status()?;
    let last = s.nodes["node-a"].last_apply.clone().context("no apply recorded")?;
    ensure!((last.rpcs, last.objects) == (2, 2), "{last:?}");

    // A malformed edit: refused with file:line:column:field, nothing on either node changes.
    let broken = edited.replace("{prefix: 203.0.113.128/25, next_hop: 4}", "{prefix: 203.0.113.128/25, next_hop: 9}");
    write_file(&file, &broken)?;
    let s = ctl.wait_for("the broken file refused", |s| s.file_error.is_some())?;
    let err = s.file_error.unwrap();
    let line = broken.lines().position(|l| l.contains("next_hop: 9")).unwrap() + 1;
    ensure!(
        err.starts_with(&format!("{}:{line}:", file.display()))
            && err.contains("nodes.node-a.routes[4].next_hop: next hop 9 is not declared"),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    ensure!(assert_matches_file(&mut ca, &edited, "node-a").await? == ga2, "node A changed");
    ensure!(assert_matches_file(&mut cb, &edited, "node-b").await? == gb2, "node B changed");
    // The same through `check`, and a controller started on it refuses to start.
    let out = Command::new(bin("dataplane-controller")).args(["check", "--file"]).arg(&file).output()?;
    ensure!(out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).trim() == err, "{out:?}");
    let out = Command::new(bin("dataplane-controller"))
        .args(["run", "--file"])
        .arg(&file)
        .arg("--status-socket")
        .arg(t.dir.join("second.sock"))
        .output()?;
    ensure!(out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains(&err), "{out:?}");
    ensure!(assert_matches_file(&mut ca, &edited, "node-a").await? == ga2, "node A changed");

    // Fixed again: applied, and the error cleared.
    let fixed = edited.replace("{prefix: 203.0.113.128/25, next_hop: 4}", "{prefix: 203.0.113.128/25, next_hop: 3}");
    write_file(&file, &fixed)?;
    ctl.wait_for("the fixed file applied", |s| s.file_error.is_none() && s.file_version == 3)?;

    // A second controller on the same status socket refuses to start (two would fight over the
    // nodes), and leaves the first one's socket alone.
    // (Under `timeout`: were it to start, it would run until killed.)
    let out = Command::new("timeout")
        .arg("10")
        .arg(bin("dataplane-controller"))
        .args(["run", "--file"])
        .arg(&file)
        .arg("--status-socket")
        .arg(&ctl.socket)
        .output()?;
    ensure!(
        out.status.code() == Some(2) && String::from_utf8_lossy(&out.stderr).contains("another controller is running"),
        "{out:?}"
    );
    ensure!(ctl.status().is_ok(), "the first controller's status socket is gone");

    // The rules change: TCP 5001 is refused from now on. The flow admitted earlier is decided
    // again: DROP, its reply direction removed; the 5002 flow (DROP already) is not rewritten.
    let refuse = fixed.replace("dst_ports: 5001, action: forward}", "dst_ports: 5001, action: drop}");
    write_file(&file, &refuse)?;
    let s = ctl.wait_for("flows decided again", |s| s.nodes["node-a"].flows.redecided >= 1)?;
    ensure!(s.nodes["node-a"].flows.redecided == 1, "{:?}", s.nodes["node-a"].flows);
    let mut st = ca.flows.list_flows(pb::ListFlowsRequest::default()).await?.into_inner();
    let mut flows = Vec::new();
    while let Some(c) = st.message().await? {
        flows.extend(c.flows);
    }
    let to_5001: Vec<&pb::Flow> =
        flows.iter().filter(|f| f.key.as_ref().is_some_and(|k| k.dst_port == 5001 && k.src == H1)).collect();
    ensure!(!to_5001.is_empty() && to_5001.iter().all(|f| f.action == pb::FlowAction::Drop as i32), "{flows:?}");
    ensure!(
        !flows.iter().any(|f| f.key.as_ref().is_some_and(|k| k.src_port == 5001 && k.dst == H1)),
        "reply direction left: {flows:?}"
    );
    ensure!(tcp_echo(&t.h1, H2, 5001).is_err(), "TCP 5001 must be refused now");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_sigkill_under_udp_stream_loses_nothing_and_restart_resyncs_to_file() -> Result<()> {
    let t = TwoNodes::new()?;
    let file = t.dir.join("nodes.yaml");
    let text = t.default_file();
    write_file(&file, &text)?;
    let mut ctl = Controller::start(&file, &t.dir)?;
    ctl.wait_ready(1)?;
    let mut ca = t.a.client().await?;
    let mut cb = t.b.client().await?;

    // One datagram first, so the stream's flow (UDP 7000 from port 47000) is decided and
    // installed before the stream starts: every datagram of it then hits the flow.
    {
        let name = t.h1.name.clone();
        std::thread::spawn(move || -> Result<()> {
            enter_netns(&name)?;
            std::net::UdpSocket::bind((H1, 47000))?.send_to(b"prime", (H2, 7000))?;
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("prime thread"))??;
    }
    ctl.wait_for("the stream's flow installed", |s| s.nodes["node-a"].flows.forwarded >= 1)?;
    let stream = UdpStream::start_from_port(&t.h1, &t.h2, H2.parse()?, 7000, 47000, 4000)?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    ctl.kill9()?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, ga) = node_state(&mut ca).await?;
    let (_, gb) = node_state(&mut cb).await?;

    // Restarted: it resyncs both nodes; nothing differs from the file, so nothing is written.
    ctl.spawn()?;
    let s = ctl.wait_ready(1)?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let report = stream.stop()?;
    eprintln!("stream across the controller's SIGKILL and restart: {report:?}");
    ensure!(report.lost == 0 && report.sent > 5000, "{report:?}");
    ensure!(assert_matches_file(&mut ca, &text, "node-a").await? == ga, "node A written by an unchanged resync");
    ensure!(assert_matches_file(&mut cb, &text, "node-b").await? == gb, "node B written by an unchanged resync");
    for (name, n) in &s.nodes {
        let r = n.last_resync.as_ref().context("no resync")?;
        ensure!(r.removed == 0 && r.generation_before == r.generation_after, "{name}: {r:?}");
    }
    Ok(())
}

/// One UDP datagram from h1 (source port `port`) to h2's port 7000: a new flow, a miss at node A.
fn datagram(t: &TwoNodes, port: u16) -> Result<()> {
    let name = t.h1.name.clone();
    std::thread::spawn(move || -> Result<()> {
        enter_netns(&name)?;
        std::net::UdpSocket::bind((H1, port))?.send_to(b"new flow", (H2, 7000))?;
        Ok(())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("datagram thread"))?
}

/// Two replicas of the controller on the same file: the higher election id is every node's
/// primary and answers the misses, the other stands by; when the primary dies the standby is
/// told by the nodes, takes over, resyncs without writing (nothing differs from the file) and
/// answers the misses from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_two_replicas_standby_takes_over_when_primary_dies() -> Result<()> {
    let t = TwoNodes::new()?;
    let file = t.dir.join("nodes.yaml");
    let text = t.default_file();
    write_file(&file, &text)?;
    let mut high = Controller::start_replica(&file, &t.dir, "high", 2)?;
    high.wait_ready(1)?;
    let low = Controller::start_replica(&file, &t.dir, "low", 1)?;
    low.wait_for("standby on both nodes", |s| s.nodes.len() == 2 && s.nodes.values().all(|n| n.state == "standby"))?;
    let mut ca = t.a.client().await?;

    datagram(&t, 47100)?;
    high.wait_for("the primary decided the miss", |s| s.nodes["node-a"].flows.forwarded >= 1)?;
    let (_, generation) = node_state(&mut ca).await?;
    let s = low.status()?;
    ensure!(s.nodes["node-a"].flows.forwarded == 0, "the standby decided a miss: {:?}", s.nodes["node-a"].flows);

    high.kill9()?;
    let s = low.wait_ready(1)?;
    for (name, n) in &s.nodes {
        let r = n.last_resync.as_ref().context("no resync")?;
        ensure!(r.removed == 0 && r.generation_before == r.generation_after, "{name}: {r:?}");
    }
    ensure!(node_state(&mut ca).await?.1 == generation, "node A written by the takeover's resync");
    datagram(&t, 47101)?;
    low.wait_for("the new primary decided the miss", |s| s.nodes["node-a"].flows.forwarded >= 1)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_node_server_restart_reconnects_and_resync_removes_stray_state() -> Result<()> {
    let mut t = TwoNodes::new()?;
    let file = t.dir.join("nodes.yaml");
    let text = t.default_file();
    write_file(&file, &text)?;
    let ctl = Controller::start(&file, &t.dir)?;
    ctl.wait_ready(1)?;

    // The controller is node B's primary: a write from anyone else is refused...
    let out = t.b.dpctl(&["route", "add", "203.0.113.64/26", "--nexthop", "3"]);
    ensure!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("PERMISSION_DENIED"), "{out:?}");
    // ...so someone who knows its election id adds state the file does not have, behind its back.
    let out = t.b.dpctl(&["--election-id", "1", "route", "add", "203.0.113.64/26", "--nexthop", "3"]);
    ensure!(out.status.success(), "{out:?}");
    let out = t.b.dpctl(&["--election-id", "1", "nexthop", "add", "99", "--discard"]);
    ensure!(out.status.success(), "{out:?}");

    // Node B's server crashes and comes back: the controller notices (its miss stream ends),
    // reconnects, and the resync takes B back to exactly the file.
    let stream = UdpStream::start_from_port(&t.h2, &t.h1, H1.parse()?, 7001, 47001, 2000)?;
    t.b.kill9()?;
    ctl.wait_for("node B seen down", |s| s.nodes["node-b"].state != "ready")?;
    t.b.restart()?;
    let s = ctl.wait_for("node B resynced again", |s| {
        let b = &s.nodes["node-b"];
        b.state == "ready" && b.sessions >= 2 && s.nodes["node-a"].state == "ready"
    })?;
    let b = &s.nodes["node-b"];
    ensure!(b.sessions == 2 && s.nodes["node-a"].sessions == 1, "{s:?}");
    let r = b.last_resync.as_ref().context("no resync")?;
    ensure!(r.removed == 2, "the stray route and next hop removed: {r:?}");
    let mut cb = t.b.client().await?;
    assert_matches_file(&mut cb, &text, "node-b").await?;
    // h2 -> h1 is routed by both nodes (no flow mode on that way in): the stream never
    // stopped, server down or not.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = stream.stop()?;
    eprintln!("stream across node B's server crash and restart: {report:?}");
    ensure!(report.lost == 0 && report.sent > 1000, "{report:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_lagged_miss_stream_decides_held_flows_from_the_table() -> Result<()> {
    // Node A keeps 2 misses per subscriber: a burst of new flows overflows the controller's
    // queue, it gets `lagged`, and must find the held flows in the node's table instead. The
    // controller reaches node A over TCP here (gRPC on node A's loopback, the controller in its
    // namespace) and node B over its unix socket.
    let mut t = TwoNodes::with_node_a_args(&["--flow-miss-queue", "2", "--grpc-listen", "127.0.0.1:50151"])?;
    t.a_server = "http://127.0.0.1:50151".into();
    let file = t.dir.join("nodes.yaml");
    write_file(&file, &t.default_file())?;
    let ctl = Controller::start_in(&file, &t.dir, Some(&t.na))?;
    let s = ctl.wait_ready(1)?;
    ensure!(s.nodes["node-a"].server == "http://127.0.0.1:50151", "node A not over TCP: {s:?}");
    let mut ca = t.a.client().await?;

    // Bursts of 40 new UDP 7000 flows (one datagram each, distinct source ports) until the
    // controller has lagged at least once.
    let h2 = t.h2.name.clone();
    let receiver = std::thread::spawn(move || -> Result<usize> {
        enter_netns(&h2)?;
        let sock = std::net::UdpSocket::bind((H2, 7000))?;
        sock.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut seen = std::collections::HashSet::new();
        let mut buf = [0u8; 16];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            seen.insert(from.port());
        }
        Ok(seen.len())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut sent = 0u16;
    for burst in 0..5u16 {
        let name = t.h1.name.clone();
        std::thread::spawn(move || -> Result<()> {
            enter_netns(&name)?;
            let socks: Vec<std::net::UdpSocket> = (0..40)
                .map(|i| std::net::UdpSocket::bind((H1, 20000 + burst * 40 + i)))
                .collect::<std::io::Result<_>>()?;
            for s in &socks {
                s.send_to(b"first", (H2, 7000))?;
            }
            Ok(())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("burst thread"))??;
        sent += 40;
        let s = ctl.wait_for("the burst decided", |s| s.nodes["node-a"].flows.misses >= u64::from(sent))?;
        if s.nodes["node-a"].flows.lagged > 0 {
            break;
        }
    }
    let s = ctl.status()?;
    let a = &s.nodes["node-a"];
    eprintln!("{sent} new flows; controller counters: {:?}", a.flows);
    ensure!(a.flows.lagged > 0 && a.flows.lag_resyncs > 0, "the controller never lagged: {:?}", a.flows);
    // Every flow was decided (the lost events through the table) and forwarded: each flow's
    // held first datagram reached h2.
    ensure!(a.flows.forwarded == u64::from(sent) && a.flows.failed == 0, "{:?}", a.flows);
    let mut st = ca.flows.list_flows(pb::ListFlowsRequest::default()).await?.into_inner();
    let mut forward = 0;
    while let Some(c) = st.message().await? {
        forward += c
            .flows
            .iter()
            .filter(|f| {
                f.key.as_ref().is_some_and(|k| k.dst_port == 7000) && f.action == pb::FlowAction::Forward as i32
            })
            .count();
    }
    ensure!(forward == usize::from(sent), "{forward} forward flows for {sent} sent");
    let received = receiver.join().map_err(|_| anyhow::anyhow!("receiver"))??;
    ensure!(received == usize::from(sent), "h2 got the first datagram of {received} of {sent} flows");
    Ok(())
}
