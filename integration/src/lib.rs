//! Test support, shared by the end-to-end tests and `dataplane-bench`: the one test kit
//! ([`packet`] builder, [`checksum`], [`rng`], [`counters`] deltas, test-run [`harness`]) and RAII
//! guards for network namespaces, veth topologies and server processes, each with a unique name
//! so tests run in parallel and leave nothing behind, also when they fail.

pub mod checksum;
pub mod counters;
pub mod harness;
pub mod packet;

pub use counters::{counted_once, delta, describe_stats, reason};
/// The one seeded RNG of tests and benchmarks (shared with the server's unit tests).
pub use dataplane_common::rng::{self, Rng};
pub use harness::Harness;
pub use packet::{l4_frame, udp_frame};

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `a` with all but its first `len` bits cleared.
pub fn mask4(a: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        a & (u32::MAX << (32 - u32::from(len)))
    }
}

/// `a` with all but its first `len` bits cleared.
pub fn mask6(a: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        a & (u128::MAX << (128 - u32::from(len)))
    }
}

/// A name no other test (in this process or another) uses: `<prefix><pid>x<n>`, at most 15
/// bytes so it is also a valid interface name.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}x{n}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "unique name {name} too long for an interface");
    name
}

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd).args(args).output().with_context(|| format!("spawning {cmd}"))?;
    if !out.status.success() {
        bail!("{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted (with every process still in it killed) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace with IPv6 off: no router solicitations or MLD reports, so packet counts in
    /// tests are exact.
    pub fn new(prefix: &str) -> Result<Self> {
        let ns = Self::with_ipv6(prefix)?;
        ns.exec("sysctl", &["-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        ns.exec("sysctl", &["-qw", "net.ipv6.conf.default.disable_ipv6=1"])?;
        Ok(ns)
    }

    /// A namespace with IPv6 on (duplicate address detection off, so addresses work at once).
    pub fn with_ipv6(prefix: &str) -> Result<Self> {
        let name = unique(prefix);
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        ns.exec("sysctl", &["-qw", "net.ipv6.conf.all.accept_dad=0"])?;
        ns.exec("sysctl", &["-qw", "net.ipv6.conf.default.accept_dad=0"])?;
        Ok(ns)
    }

    /// The MAC address of `dev` in this namespace.
    pub fn mac(&self, dev: &str) -> Result<String> {
        let l = self.exec("ip", &["-o", "link", "show", "dev", dev])?;
        l.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_owned)
            .context("no link/ether address")
    }

    /// Runs a command inside the namespace (network namespace only, see [`Netns::command`]).
    pub fn exec(&self, cmd: &str, args: &[&str]) -> Result<String> {
        let out = self.command(cmd, args).output().with_context(|| format!("spawning {cmd}"))?;
        if !out.status.success() {
            bail!("[{}] {cmd} {}: {}", self.name, args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A command entering only the network namespace (`nsenter --net`), so it keeps the root
    /// mount namespace and with it /sys/fs/bpf (`ip netns exec` remounts /sys).
    pub fn command(&self, cmd: &str, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name)).arg("--").arg(cmd).args(args);
        c
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Ok(pids) = run("ip", &["netns", "pids", &self.name]) {
            for pid in pids.split_whitespace() {
                let _ = run("kill", &["-KILL", pid]);
            }
        }
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Three namespaces: `h1 -- rtr -- h2`, joined by veth pairs.
///
/// ```text
///  h1 [eth0 192.0.2.2/24] ---- [r0 192.0.2.1/24] rtr [r1 198.51.100.1/24] ---- [eth0 198.51.100.2/24] h2
/// ```
/// The router forwards with the kernel (ip_forward=1); hosts route everything via the router.
pub struct Topology {
    pub h1: Netns,
    pub rtr: Netns,
    pub h2: Netns,
    /// The router's interface names (unique per topology, since the names show up in pins and
    /// logs of parallel tests).
    pub r0: String,
    pub r1: String,
}

pub const H1_ADDR: &str = "192.0.2.2";
pub const H1_ADDR6: &str = "2001:db8:1::2";
pub const R0_ADDR6: &str = "2001:db8:1::1";
pub const R1_ADDR6: &str = "2001:db8:2::1";
pub const H2_ADDR6: &str = "2001:db8:2::2";
pub const R0_ADDR: &str = "192.0.2.1";
pub const R1_ADDR: &str = "198.51.100.1";
pub const H2_ADDR: &str = "198.51.100.2";

impl Topology {
    pub fn new() -> Result<Self> {
        let h1 = Netns::new("dph1-")?;
        let rtr = Netns::new("dprt-")?;
        let h2 = Netns::new("dph2-")?;
        let r0 = unique("r0-");
        let r1 = unique("r1-");
        Self::wire(&rtr, &r0, R0_ADDR, &h1, H1_ADDR, None)?;
        Self::wire(&rtr, &r1, R1_ADDR, &h2, H2_ADDR, None)?;
        rtr.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        h1.exec("ip", &["route", "add", "default", "via", R0_ADDR])?;
        h2.exec("ip", &["route", "add", "default", "via", R1_ADDR])?;
        Ok(Self { h1, rtr, h2, r0, r1 })
    }

    /// The same shape, dual-stack, for the dataplane to route: the router's kernel forwarding
    /// is OFF for both families, so whatever crosses it was forwarded by XDP. The hosts' veths
    /// get GRO, without which a veth drops frames redirected into it by XDP (no XDP program on
    /// the receiving end).
    pub fn routed() -> Result<Self> {
        Self::routed_at(None)
    }

    /// [`Topology::routed`] with the router's interfaces at ifindexes `index` and `index + 1`
    /// (e.g. past the dataplane's direct ifindex array).
    pub fn routed_at(index: Option<u32>) -> Result<Self> {
        let h1 = Netns::with_ipv6("dph1-")?;
        let rtr = Netns::with_ipv6("dprt-")?;
        let h2 = Netns::with_ipv6("dph2-")?;
        let r0 = unique("r0-");
        let r1 = unique("r1-");
        Self::wire(&rtr, &r0, R0_ADDR, &h1, H1_ADDR, index)?;
        Self::wire(&rtr, &r1, R1_ADDR, &h2, H2_ADDR, index.map(|i| i + 1))?;
        for (ns, dev, addr) in [
            (&rtr, r0.as_str(), R0_ADDR6),
            (&rtr, r1.as_str(), R1_ADDR6),
            (&h1, "eth0", H1_ADDR6),
            (&h2, "eth0", H2_ADDR6),
        ] {
            ns.exec("ip", &["-6", "addr", "add", &format!("{addr}/64"), "dev", dev, "nodad"])?;
        }
        rtr.exec("sysctl", &["-qw", "net.ipv4.ip_forward=0"])?;
        rtr.exec("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=0"])?;
        h1.exec("ip", &["route", "add", "default", "via", R0_ADDR])?;
        h2.exec("ip", &["route", "add", "default", "via", R1_ADDR])?;
        h1.exec("ip", &["-6", "route", "add", "default", "via", R0_ADDR6])?;
        h2.exec("ip", &["-6", "route", "add", "default", "via", R1_ADDR6])?;
        for h in [&h1, &h2] {
            // tx checksum offload off: a veth hands its peer packets whose L4 checksum is left
            // for "hardware" to fill in, and an XDP redirect loses that state, so they would
            // arrive with bad checksums. Real hosts behind real NICs send complete checksums.
            h.exec("ethtool", &["-K", "eth0", "gro", "on", "tx", "off"])?;
        }
        Ok(Self { h1, rtr, h2, r0, r1 })
    }

    /// veth `rtr_if` in `rtr` <-> `eth0` in `host`, both /24 and up.
    fn wire(
        rtr: &Netns,
        rtr_if: &str,
        rtr_addr: &str,
        host: &Netns,
        host_addr: &str,
        index: Option<u32>,
    ) -> Result<()> {
        let tmp = unique("vt-");
        let index = index.map(|i| i.to_string());
        let mut add = vec!["link", "add", rtr_if];
        if let Some(i) = &index {
            add.extend(["index", i.as_str()]);
        }
        add.extend(["type", "veth", "peer", "name", &tmp]);
        rtr.exec("ip", &add)?;
        rtr.exec("ip", &["link", "set", &tmp, "netns", &host.name])?;
        host.exec("ip", &["link", "set", &tmp, "name", "eth0"])?;
        rtr.exec("ip", &["addr", "add", &format!("{rtr_addr}/24"), "dev", rtr_if])?;
        host.exec("ip", &["addr", "add", &format!("{host_addr}/24"), "dev", "eth0"])?;
        rtr.exec("ip", &["link", "set", rtr_if, "up"])?;
        host.exec("ip", &["link", "set", "eth0", "up"])?;
        Ok(())
    }

    /// `count` pings from h1 to h2, 100 ms apart; fails unless every one is answered.
    pub fn ping_h1_to_h2(&self, count: u32) -> Result<()> {
        self.h1.exec("ping", &["-c", &count.to_string(), "-i", "0.1", "-W", "2", "-q", H2_ADDR]).map(|_| ())
    }
}

/// Directory holding the workspace's built binaries (target/debug), found from the test
/// executable's own location (target/debug/deps/<test>).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("target dir").to_owned()
}

/// Path of a workspace binary; the README's test command builds them before running tests.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(p.exists(), "{} not built: run `cargo build` before `cargo test` (scripts/test does)", p.display());
    p
}

/// A `dataplane-server` process inside a namespace, with its own socket and bpffs directory.
/// Dropping it sends SIGTERM, waits, and removes whatever it left.
pub struct Server {
    child: Option<Child>,
    pub socket: PathBuf,
    pub bpffs: PathBuf,
    pub log: PathBuf,
    pub state_file: PathBuf,
    /// Scratch directory of this server (socket, log, state file); removed on drop.
    pub run_dir: PathBuf,
    /// Network namespace and extra arguments, to start it again.
    netns: String,
    extra: Vec<String>,
    /// A command the server runs under (e.g. `setpriv ... --`), empty for none.
    wrapper: Vec<String>,
}

impl Server {
    pub fn start(ns: &Netns) -> Result<Self> {
        Self::start_with(ns, &[])
    }

    /// [`Server::start`] with extra command-line arguments.
    pub fn start_with(ns: &Netns, extra: &[&str]) -> Result<Self> {
        Self::start_wrapped(ns, &[], extra)
    }

    /// [`Server::start_with`], the server run by `wrapper` (a command that execs the rest of its
    /// arguments, as `setpriv --bounding-set ...` does).
    pub fn start_wrapped(ns: &Netns, wrapper: &[&str], extra: &[&str]) -> Result<Self> {
        let id = unique("srv");
        let run_dir = std::env::temp_dir().join(format!("dataplane-test-{id}"));
        std::fs::create_dir_all(&run_dir)?;
        let socket = run_dir.join("dataplane.sock");
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/dataplane-test-{id}"));
        let log = run_dir.join("server.log");
        let state_file = run_dir.join("state.json");
        let mut s = Self {
            child: None,
            socket,
            bpffs,
            log,
            state_file,
            run_dir,
            netns: ns.name.clone(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
            wrapper: wrapper.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn()?;
        Ok(s)
    }

    fn spawn(&mut self) -> Result<()> {
        // Appended: a restarted server's log follows the previous one's.
        let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let server = bin("dataplane-server");
        let mut args = vec![
            "--grpc-socket".to_owned(),
            self.socket.display().to_string(),
            "--bpffs".to_owned(),
            self.bpffs.display().to_string(),
            "--state-file".to_owned(),
            self.state_file.display().to_string(),
        ];
        args.extend(self.extra.iter().cloned());
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.netns))
            .arg("--")
            .args(&self.wrapper)
            .arg(server)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .context("spawning dataplane-server")?;
        self.child = Some(child);
        let r = self.wait_ready();
        if r.is_err() {
            if let Some(mut c) = self.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        r
    }

    /// Waits for a server that is exiting by itself (after a Reset); SIGTERM if it has not after
    /// 10 s.
    pub fn stop_or_wait(&mut self) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.as_mut().context("server not running")?.try_wait()? {
                self.child = None;
                return Ok(st);
            }
            if Instant::now() > deadline {
                return self.stop();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash: nothing of the server's own cleanup runs.
    pub fn kill9(&mut self) -> Result<()> {
        let mut child = self.child.take().context("server not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// SIGKILL and, without waiting for the process to be gone, start the server again on the
    /// same socket, pins and state file: a supervisor restarting a crashed server at once.
    pub fn kill9_and_restart_at_once(&mut self) -> Result<()> {
        let mut old = self.child.take().context("server not running")?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(old.id() as i32, libc::SIGKILL) };
        let started = self.spawn();
        old.wait()?;
        started
    }

    /// The server process's pid (nsenter execs it, so the child's pid is the server's).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the server again on the same socket, pins and state file (after `kill9` or
    /// `stop`).
    pub fn restart(&mut self) -> Result<()> {
        anyhow::ensure!(self.child.is_none(), "server still running");
        self.spawn()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // The socket is bound before the programs load; ready means answering RPCs.
            if self.socket.exists() && self.dpctl(&["status"]).status.success() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!("server exited early ({status}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("server not ready after 20 s: {}", self.log_text())
    }

    pub fn address(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("server already stopped")?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("server did not exit within 10 s of SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs dpctl against this server.
    pub fn dpctl(&self, args: &[&str]) -> Output {
        Command::new(bin("dpctl")).arg("--server").arg(self.address()).args(args).output().expect("spawning dpctl")
    }

    pub async fn client(&self) -> Result<controller_client::Client> {
        let addr: controller_client::ServerAddress = self.address().parse()?;
        Ok(controller_client::Client::connect(&addr).await?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        // A crashed server leaves pins; never let them outlive the test.
        let _ = std::fs::remove_dir_all(&self.bpffs);
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

/// An ENCAP next hop out of `interface` to `dst_mac` (source MAC: the interface's).
pub fn encap_nexthop(id: u32, interface: &str, dst_mac: &str) -> controller_client::pb::NextHop {
    use controller_client::pb;
    pb::NextHop {
        id,
        kind: Some(pb::next_hop::Kind::Encap(pb::EncapNextHop {
            interface: interface.into(),
            dst_mac: dst_mac.into(),
            src_mac: String::new(),
            gateway: String::new(),
        })),
        ..Default::default()
    }
}

/// Programs the router of a [`Topology::routed`] the way a controller would: both router
/// interfaces attached; next hop 1 towards h2, 2 towards h1, 3 RECEIVE; routes to both host
/// subnets (IPv4 and IPv6) and RECEIVE routes for the router's own addresses.
pub async fn program_router(topo: &Topology, client: &mut controller_client::Client) -> Result<()> {
    use controller_client::pb;
    for name in [&topo.r0, &topo.r1] {
        client.interfaces.add_interface(pb::AddInterfaceRequest { name: name.clone(), ..Default::default() }).await?;
    }
    let receive = pb::NextHop { id: 3, kind: Some(pb::next_hop::Kind::Receive(pb::Receive {})), ..Default::default() };
    let next_hops = vec![
        encap_nexthop(1, &topo.r1, &topo.h2.mac("eth0")?),
        encap_nexthop(2, &topo.r0, &topo.h1.mac("eth0")?),
        receive,
    ];
    client.routing.add_next_hops(pb::AddNextHopsRequest { next_hops, replace: false, ..Default::default() }).await?;
    let routes = [
        ("198.51.100.0/24".to_owned(), 1),
        ("2001:db8:2::/64".to_owned(), 1),
        ("192.0.2.0/24".to_owned(), 2),
        ("2001:db8:1::/64".to_owned(), 2),
        (format!("{R0_ADDR}/32"), 3),
        (format!("{R1_ADDR}/32"), 3),
        (format!("{R0_ADDR6}/128"), 3),
        (format!("{R1_ADDR6}/128"), 3),
    ]
    .map(|(prefix, next_hop)| pb::Route { vrf: 0, prefix, next_hop })
    .to_vec();
    client.routing.add_routes(pb::AddRoutesRequest { routes, replace: false, ..Default::default() }).await?;
    Ok(())
}

/// A server in a namespace of its own that forwards everything out of its loopback (default
/// routes, both families, to next hop 1: ENCAP via `lo` to 02:00:00:00:00:01). A test run of
/// the ingress program over its pins then answers REDIRECT for what it forwards.
pub async fn server_forwarding_via_lo(prefix: &str) -> Result<(Netns, Server, controller_client::Client)> {
    server_forwarding_via_lo_with(prefix, &[]).await
}

/// Attaches, at `interface`'s ingress, a policy `name` of one rule: UDP to `port` is punted (its
/// packets reported to the server, and on to the kernel stack).
pub async fn punt_udp_port(c: &mut controller_client::Client, name: &str, interface: &str, port: u32) -> Result<()> {
    use controller_client::pb;
    let rule = pb::Rule {
        priority: 1,
        protocol: Some(17),
        dst_ports: Some(pb::PortRange { first: port, last: port }),
        action: pb::Action::Punt as i32,
        ..Default::default()
    };
    c.policy.put_policy(pb::PutPolicyRequest { name: name.into(), rules: vec![rule] }).await?;
    let attach = pb::AttachPolicyRequest {
        policy: name.into(),
        interface: interface.into(),
        direction: pb::Direction::Ingress as i32,
        default_action: 0,
    };
    c.policy.attach_policy(attach).await?;
    Ok(())
}

/// [`server_forwarding_via_lo`] with a server started with `args`.
pub async fn server_forwarding_via_lo_with(
    prefix: &str,
    args: &[&str],
) -> Result<(Netns, Server, controller_client::Client)> {
    use controller_client::pb;
    let ns = Netns::new(prefix)?;
    let server = Server::start_with(&ns, args)?;
    let mut c = server.client().await?;
    c.interfaces.add_interface(pb::AddInterfaceRequest { name: "lo".into(), ..Default::default() }).await?;
    c.routing
        .add_next_hops(pb::AddNextHopsRequest {
            next_hops: vec![encap_nexthop(1, "lo", "02:00:00:00:00:01")],
            replace: false,
            ..Default::default()
        })
        .await?;
    let routes = ["0.0.0.0/0", "::/0"].map(|p| pb::Route { vrf: 0, prefix: p.into(), next_hop: 1 }).to_vec();
    c.routing.add_routes(pb::AddRoutesRequest { routes, replace: false, ..Default::default() }).await?;
    Ok((ns, server, c))
}

/// A steady one-way stream of sequence-numbered UDP datagrams from one namespace to another,
/// with the loss counted at the receiver: the measure of "no packet lost" across crashes,
/// restarts and upgrades.
pub struct UdpStream {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sender: Option<std::thread::JoinHandle<Result<u64>>>,
    receiver: Option<std::thread::JoinHandle<Result<std::collections::HashSet<u64>>>>,
}

/// What a stream saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamReport {
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
}

/// Moves the calling thread into network namespace `name`.
pub fn enter_netns(name: &str) -> Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{name}"))?;
    // SAFETY: setns on an fd we own; it only changes this thread's network namespace.
    if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) } != 0 {
        bail!("setns {name}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn force_buffer(sock: &std::net::UdpSocket, opt: libc::c_int) {
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on a socket we own with a c_int value.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(sock),
            libc::SOL_SOCKET,
            opt,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
    }
}

impl UdpStream {
    /// Starts sending to `dst:port` from `from` at about `pps` datagrams per second, received in
    /// `to` (which must hold `dst`).
    pub fn start(from: &Netns, to: &Netns, dst: std::net::IpAddr, port: u16, pps: u32) -> Result<Self> {
        Self::start_from_port(from, to, dst, port, 0, pps)
    }

    /// [`UdpStream::start`] from source port `src_port` (0: any), so the stream's 5-tuple is
    /// known in advance (a flow can be set up for it first).
    pub fn start_from_port(
        from: &Netns,
        to: &Netns,
        dst: std::net::IpAddr,
        port: u16,
        src_port: u16,
        pps: u32,
    ) -> Result<Self> {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let to_name = to.name.clone();
        let stop_r = stop.clone();
        let receiver = std::thread::spawn(move || -> Result<std::collections::HashSet<u64>> {
            enter_netns(&to_name)?;
            let sock = std::net::UdpSocket::bind((dst, port))?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            // 16 MiB of receive buffer: a receiver thread descheduled for a while (two CPUs,
            // servers restarting) must not be the one that drops datagrams.
            force_buffer(&sock, libc::SO_RCVBUFFORCE);
            let _ = ready_tx.send(());
            let mut seen = std::collections::HashSet::new();
            let mut buf = [0u8; 64];
            let mut quiet_since: Option<Instant> = None;
            loop {
                match sock.recv(&mut buf) {
                    Ok(n) if n >= 8 => {
                        seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                        quiet_since = None;
                    }
                    Ok(_) => {}
                    Err(_) => {
                        // Stopped, and nothing more in flight for a while: done.
                        if stop_r.load(Ordering::Relaxed) {
                            let q = *quiet_since.get_or_insert_with(Instant::now);
                            if q.elapsed() > Duration::from_millis(500) {
                                return Ok(seen);
                            }
                        }
                    }
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(5)).context("receiver did not start")?;
        let from_name = from.name.clone();
        let stop_s = stop.clone();
        let gap = Duration::from_secs(1) / pps.max(1);
        let sender = std::thread::spawn(move || -> Result<u64> {
            enter_netns(&from_name)?;
            let any: std::net::IpAddr = if dst.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            let sock = std::net::UdpSocket::bind((any, src_port))?;
            force_buffer(&sock, libc::SO_SNDBUFFORCE);
            let mut seq = 0u64;
            let start = Instant::now();
            while !stop_s.load(Ordering::Relaxed) {
                let mut payload = [0u8; 32];
                payload[..8].copy_from_slice(&seq.to_be_bytes());
                // A send error (no route yet, buffer full) is a lost datagram like any other.
                let _ = sock.send_to(&payload, (dst, port));
                seq += 1;
                let due = start + gap * seq as u32;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(seq)
        });
        Ok(Self { stop, sender: Some(sender), receiver: Some(receiver) })
    }

    /// Stops sending, waits for what is in flight, and reports.
    pub fn stop(mut self) -> Result<StreamReport> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = self.sender.take().unwrap().join().map_err(|_| anyhow::anyhow!("sender panicked"))??;
        let seen = self.receiver.take().unwrap().join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
        let received = seen.iter().filter(|s| **s < sent).count() as u64;
        Ok(StreamReport { sent, received, lost: sent - received })
    }
}

impl Drop for UdpStream {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A flow controller process (`integration/clients/...`) started against `socket`, installing
/// flows via next hop 1 for its first `count` misses, once it has printed "ready" (the primary of
/// its controller session).
/// Its further stdout lines (a JSON summary at the end) are read from `out`.
pub struct FlowController {
    pub child: Child,
    pub out: std::io::BufReader<std::process::ChildStdout>,
}

impl FlowController {
    pub fn start(cmd: &str, script: &str, socket: &Path, count: u32) -> Result<Self> {
        let mut child = Command::new(cmd)
            .args([script, socket.to_str().context("socket path")?, "1", &count.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {cmd} {script}"))?;
        let mut out = std::io::BufReader::new(child.stdout.take().context("controller stdout")?);
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line)?;
        anyhow::ensure!(line.trim() == "ready", "{cmd} controller did not start: {line:?}");
        // The subscription is live once the server has the stream; give it a moment.
        std::thread::sleep(Duration::from_millis(700));
        Ok(Self { child, out })
    }
}
