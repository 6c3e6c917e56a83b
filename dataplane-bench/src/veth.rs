//! Forwarding on veth: a generator namespace -> a router namespace -> a sink namespace, 64-byte
//! UDP frames from one generator for every variant, at the same offered load:
//!
//! 1. Linux forwarding: `ip_forward=1` in the router, no XDP;
//! 2. our XDP router: a `dataplane-server` in the router namespace, programmed over gRPC
//!    (interfaces, an ENCAP next hop to the sink's MAC, a route), kernel forwarding off;
//! 3. the bare redirect baseline: `dp_bench_redirect` (MAC swap + `TX_PORTS[0]`) attached
//!    natively to the router's ingress veth, `TX_PORTS[0]` = the egress veth.
//!
//! The generator is an AF_PACKET socket (`PACKET_QDISC_BYPASS`, `sendmmsg` of 64 frames) on the
//! generator's veth, writing whole Ethernet/IPv4/UDP frames with correct checksums addressed to
//! the router's MAC, so the router's kernel stack accepts them. The sink drops every frame in a
//! two-instruction XDP program (an XDP program on the peer is what lets an XDP_REDIRECT into a veth
//! deliver at all) and counts them in its `rx_packets`.
//!
//! CPUs: the generator thread is pinned to CPU 0. The router's ingress veth runs its NAPI in a
//! kernel thread (GRO on, so veth has a NAPI instance without XDP too; `threaded` = 1) pinned to
//! CPU 1, so the router has a CPU of its own as it would on real hardware. The router's CPU per
//! packet is that thread's run time (`/proc/<tid>/schedstat`, ns, exact), plus ksoftirqd's on the
//! router CPU, over packets delivered. It includes the sink's XDP_DROP (the egress veth's NAPI is
//! scheduled from the router's thread), the same in every variant.
//!
//! Every figure is refused if the path was not the one named: Linux must show the router's
//! `Ip: ForwDatagrams` moving with the delivered count, the XDP variants must show it still and
//! the ingress veth's `xdp_redirect` moving with it (and, for our router, its `forwarded` counter).

use std::{
    ffi::CString,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc, Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use controller_client::{pb, Client};
use dataplane_common::{maps as names, programs};
use integration::packet::{udp, Eth, Ipv4, ETH_P_IPV4, IPPROTO_UDP};

use crate::{
    flows::start_server,
    netns::{join, pin_to_cpu, NetNs},
    rawmap::{bpf, set32, set64},
};

pub struct Config {
    pub runs: usize,
    /// Measured time per run and variant.
    pub duration: Duration,
    /// Traffic before the measured time (NAPI and caches warm, queues at their steady state).
    pub warmup: Duration,
}

/// One variant's samples, one per run.
pub struct Variant {
    pub case: &'static str,
    /// Frames the generator sent per second (Mpps).
    pub offered: Vec<f64>,
    /// Frames the sink received per second (Mpps).
    pub delivered: Vec<f64>,
    /// The router CPU's time per delivered frame (ns).
    pub cpu_ns: Vec<f64>,
    /// sendmmsg calls veth refused per second (ENOBUFS: the router's ring full).
    pub refused: Vec<f64>,
}

impl Variant {
    fn new(case: &'static str) -> Self {
        Self { case, offered: vec![], delivered: vec![], cpu_ns: vec![], refused: vec![] }
    }
}

pub struct Results {
    pub runs: usize,
    pub seconds: f64,
    pub linux: Variant,
    pub xdp: Variant,
    pub bare: Variant,
    /// The floor: XDP_DROP on the router's ingress veth ("delivered" = dropped there).
    pub floor: Variant,
    /// Generator and router on CPUs of their own (false on a 1-CPU machine).
    pub pinned: bool,
}

const GEN_MAC: [u8; 6] = [0x02, 0xdb, 0, 0, 0, 0x01];
const RI_MAC: [u8; 6] = [0x02, 0xdb, 0, 0, 0, 0x02];
const RO_MAC: [u8; 6] = [0x02, 0xdb, 0, 0, 0, 0x03];
const SINK_MAC: [u8; 6] = [0x02, 0xdb, 0, 0, 0, 0x04];
const GEN_IP: [u8; 4] = [192, 0, 2, 2];
const DST_IP: [u8; 4] = [203, 0, 113, 10];
const GEN_DEV: &str = "g0";
const RO: &str = "ro0";
const SINK_DEV: &str = "s0";
const GEN_CPU: usize = 0;
const ROUTER_CPU: usize = 1;
/// Frames per sendmmsg call.
const BATCH: usize = 64;

fn mac(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// The three namespaces, joined by veth pairs, with the sink's XDP_DROP attached. Fields drop in
/// order: the sink's program, then the namespaces (with every interface in them).
struct Topology {
    _sink_drop: XdpDrop,
    gen: NetNs,
    rtr: NetNs,
    sink: NetNs,
    /// The router's ingress veth: `bi<pid>`, unique, because its NAPI thread is found by name.
    ri: String,
}

impl Topology {
    fn build() -> Result<Self> {
        let gen = NetNs::create("gen")?;
        let rtr = NetNs::create("rtr")?;
        let sink = NetNs::create("sink")?;
        eprintln!("namespaces: {} {} {}", gen.name(), rtr.name(), sink.name());
        let ri = format!("bi{}", std::process::id() % 1_000_000);
        let (ri_mac, gen_mac, ro_mac, sink_mac) = (mac(RI_MAC), mac(GEN_MAC), mac(RO_MAC), mac(SINK_MAC));
        rtr.ip(&[
            "link",
            "add",
            &ri,
            "address",
            &ri_mac,
            "type",
            "veth",
            "peer",
            "name",
            GEN_DEV,
            "address",
            &gen_mac,
            "netns",
            gen.name(),
        ])?;
        rtr.ip(&[
            "link",
            "add",
            RO,
            "address",
            &ro_mac,
            "type",
            "veth",
            "peer",
            "name",
            SINK_DEV,
            "address",
            &sink_mac,
            "netns",
            sink.name(),
        ])?;
        gen.ip(&["addr", "add", "192.0.2.2/24", "dev", GEN_DEV])?;
        rtr.ip(&["addr", "add", "192.0.2.1/24", "dev", &ri])?;
        rtr.ip(&["addr", "add", "198.51.100.1/24", "dev", RO])?;
        sink.ip(&["addr", "add", "198.51.100.2/24", "dev", SINK_DEV])?;
        gen.ip(&["link", "set", GEN_DEV, "up"])?;
        rtr.ip(&["link", "set", &ri, "up"])?;
        rtr.ip(&["link", "set", RO, "up"])?;
        sink.ip(&["link", "set", SINK_DEV, "up"])?;
        // The sink answers no ARP (its XDP drops everything): its MAC is configured.
        rtr.ip(&["neigh", "replace", "198.51.100.2", "lladdr", &sink_mac, "dev", RO, "nud", "permanent"])?;
        rtr.ip(&["route", "add", "203.0.113.0/24", "via", "198.51.100.2", "dev", RO])?;
        rtr.sysctl("net/ipv4/ip_forward", "0")?;
        // NAPI on the ingress veth in every variant (GRO on gives veth one without XDP too; no
        // UDP is coalesced when forwarding), run by a kernel thread we can pin and time.
        rtr.exec(&["ethtool", "-K", &ri, "gro", "on"])?;
        // veth hands a frame to the peer's NAPI only if it cannot be aggregated by TSO on the
        // sending side (veth_skb_is_eligible_for_gro), otherwise to netif_rx's backlog on the
        // sender's CPU; attaching XDP turns the peer's TSO off by itself. Off for every variant.
        gen.exec(&["ethtool", "-K", GEN_DEV, "tso", "off"])?;
        rtr.exec_sysfs(&format!("echo 1 > /sys/class/net/{ri}/threaded"))?;
        let sink_drop = XdpDrop::attach(&sink, SINK_DEV)?;
        Ok(Self { _sink_drop: sink_drop, gen, rtr, sink, ri })
    }

    fn snapshot(&self, gen: &Generator, cpu_threads: &[i32], count_at: CountAt) -> Result<Snapshot> {
        let at = Instant::now();
        let sent = gen.sent.load(Ordering::Relaxed);
        let delivered = match count_at {
            CountAt::Sink => self.sink.rx_packets(SINK_DEV)?,
            CountAt::RouterIngress => self.rtr.rx_packets(&self.ri)?,
        };
        let forwarded = self.rtr.ip_forwarded()?;
        let cpu_ns = cpu_threads.iter().map(|&t| schedstat_ns(t)).sum::<Result<u64>>()?;
        Ok(Snapshot { at, sent, delivered, forwarded, cpu_ns })
    }
}

struct Snapshot {
    at: Instant,
    sent: u64,
    delivered: u64,
    forwarded: u64,
    cpu_ns: u64,
}

/// What one measured run saw.
struct Sample {
    offered_mpps: f64,
    delivered_mpps: f64,
    cpu_ns: f64,
    delivered: u64,
    /// Router kernel's forwarded datagrams over the run.
    forwarded: u64,
    /// sendmmsg calls refused (ENOBUFS: the router's ring full) over the run.
    refused: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Linux,
    Xdp,
    Bare,
    Floor,
}

/// Where a variant's packets are counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CountAt {
    /// Received by the sink.
    Sink,
    /// Received (and dropped) by the router's ingress veth.
    RouterIngress,
}

pub fn run(config: &Config) -> Result<Results> {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let pinned = cpus >= 2;
    let topo = Topology::build()?;
    let frame = udp_frame();

    // Our router: a server in the router namespace; the interfaces, next hop and route are
    // programmed for each of its runs and removed after (so no program of ours sits on the
    // egress veth during the other variants).
    let server = start_server("router", Some(topo.rtr.name()))?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut client = rt.block_on(server.connect())?;
    // The bare redirect program, loaded once; attached for each of its runs.
    let mut bare = BareRedirect::load(&topo)?;

    let mut results = Results {
        runs: config.runs,
        seconds: config.duration.as_secs_f64(),
        linux: Variant::new("Linux forwarding (ip_forward=1)"),
        xdp: Variant::new("XDP router (dataplane-server)"),
        bare: Variant::new("bare redirect (dp_bench_redirect)"),
        floor: Variant::new("XDP_DROP on the router's ingress (floor)"),
        pinned,
    };
    let kinds = [Kind::Linux, Kind::Xdp, Kind::Bare, Kind::Floor];
    for run in 0..config.runs {
        // Rotated order, so no variant always runs first (or right after the same one).
        for i in 0..kinds.len() {
            let kind = kinds[(run + i) % kinds.len()];
            let s = match kind {
                Kind::Linux => {
                    topo.rtr.sysctl("net/ipv4/ip_forward", "1")?;
                    let s = measure(&topo, &frame, config, pinned, CountAt::Sink);
                    topo.rtr.sysctl("net/ipv4/ip_forward", "0")?;
                    let s = s?;
                    // The kernel forwarded what the sink got (a few frames of slack: the two
                    // counters are read a moment apart).
                    ensure!(
                        s.delivered > 0 && s.forwarded as f64 >= 0.95 * s.delivered as f64,
                        "Linux forwarding: the router's kernel forwarded {} datagrams, the sink got {}: not the path measured",
                        s.forwarded,
                        s.delivered
                    );
                    s
                }
                Kind::Xdp => {
                    rt.block_on(program_router(&mut client, &topo.ri, true))?;
                    let before = (
                        rt.block_on(forwarded_by_server(&mut client, &topo.ri))?,
                        topo.rtr.ethtool_rx_stat(&topo.ri, "xdp_redirect")?,
                    );
                    let s = measure(&topo, &frame, config, pinned, CountAt::Sink);
                    let after = (
                        rt.block_on(forwarded_by_server(&mut client, &topo.ri)),
                        topo.rtr.ethtool_rx_stat(&topo.ri, "xdp_redirect"),
                    );
                    rt.block_on(program_router(&mut client, &topo.ri, false))?;
                    let (s, after) = (s?, (after.0?, after.1?));
                    check_xdp("XDP router", &s, after.1 - before.1)?;
                    ensure!(
                        (after.0 - before.0) as f64 >= 0.99 * s.delivered as f64,
                        "XDP router: its forwarded counter moved by {}, the sink got {}: not the path measured",
                        after.0 - before.0,
                        s.delivered
                    );
                    s
                }
                Kind::Bare => {
                    bare.attach(&topo)?;
                    let before = topo.rtr.ethtool_rx_stat(&topo.ri, "xdp_redirect");
                    let s = measure(&topo, &frame, config, pinned, CountAt::Sink);
                    let after = topo.rtr.ethtool_rx_stat(&topo.ri, "xdp_redirect");
                    bare.detach()?;
                    let s = s?;
                    check_xdp("bare redirect", &s, after? - before?)?;
                    s
                }
                Kind::Floor => {
                    let drop = XdpDrop::attach(&topo.rtr, &topo.ri)?;
                    let before = (topo.rtr.ethtool_rx_stat(&topo.ri, "xdp_drops")?, topo.sink.rx_packets(SINK_DEV)?);
                    let s = measure(&topo, &frame, config, pinned, CountAt::RouterIngress);
                    let after = (topo.rtr.ethtool_rx_stat(&topo.ri, "xdp_drops"), topo.sink.rx_packets(SINK_DEV));
                    drop_now(drop);
                    let (s, after) = (s?, (after.0?, after.1?));
                    ensure!(
                        s.delivered > 0 && (after.0 - before.0) as f64 >= 0.99 * s.delivered as f64 && after.1 == before.1,
                        "floor: the ingress veth's XDP dropped {} of {} received, the sink got {}: not the path measured",
                        after.0 - before.0,
                        s.delivered,
                        after.1 - before.1
                    );
                    s
                }
            };
            let v = match kind {
                Kind::Linux => &mut results.linux,
                Kind::Xdp => &mut results.xdp,
                Kind::Bare => &mut results.bare,
                Kind::Floor => &mut results.floor,
            };
            eprintln!(
                "  veth run {run}, {}: offered {:.3} Mpps, delivered {:.3} Mpps, router CPU {:.0} ns/packet, {} sends refused",
                v.case, s.offered_mpps, s.delivered_mpps, s.cpu_ns, s.refused
            );
            v.offered.push(s.offered_mpps);
            v.delivered.push(s.delivered_mpps);
            v.cpu_ns.push(s.cpu_ns);
            v.refused.push(s.refused as f64 / config.duration.as_secs_f64());
        }
    }
    drop(bare);
    drop(client);
    drop(rt);
    drop(server);
    drop(topo);
    Ok(results)
}

/// An XDP variant: the router's kernel forwarded nothing and the ingress veth's XDP redirected
/// (at least) what the sink received.
fn check_xdp(what: &str, s: &Sample, redirected: u64) -> Result<()> {
    ensure!(s.delivered > 0, "{what}: nothing reached the sink");
    ensure!(s.forwarded == 0, "{what}: the router's kernel forwarded {} datagrams: not the path measured", s.forwarded);
    ensure!(
        redirected as f64 >= 0.99 * s.delivered as f64,
        "{what}: the ingress veth's XDP redirected {redirected}, the sink got {}: not the path measured",
        s.delivered
    );
    Ok(())
}

fn drop_now<T>(t: T) {
    drop(t)
}

/// One run: the generator for warm-up + duration, counters read at the start and the end of the
/// measured part.
fn measure(topo: &Topology, frame: &[u8], config: &Config, pinned: bool, count_at: CountAt) -> Result<Sample> {
    let gen = Generator::start(&topo.gen, GEN_DEV, frame.to_vec(), pinned.then_some(GEN_CPU))?;
    std::thread::sleep(config.warmup);
    let napi = napi_thread(&topo.ri)?;
    if pinned {
        pin_to_cpu(napi, ROUTER_CPU)?;
    }
    let mut threads = vec![napi];
    threads.extend(ksoftirqd(pinned.then_some(ROUTER_CPU))?);
    let a = topo.snapshot(&gen, &threads, count_at)?;
    let refused_before = gen.failed.load(Ordering::Relaxed);
    std::thread::sleep(config.duration);
    let b = topo.snapshot(&gen, &threads, count_at)?;
    let failed = gen.stop()?;
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let delivered = b.delivered - a.delivered;
    ensure!(b.sent > a.sent, "the generator sent nothing ({failed} sends failed)");
    Ok(Sample {
        offered_mpps: (b.sent - a.sent) as f64 / secs / 1e6,
        delivered_mpps: delivered as f64 / secs / 1e6,
        cpu_ns: (b.cpu_ns - a.cpu_ns) as f64 / delivered.max(1) as f64,
        delivered,
        forwarded: b.forwarded - a.forwarded,
        refused: failed - refused_before,
    })
}

/// Programs (or unprograms) our router: both veths, a next hop to the sink's MAC, the route.
async fn program_router(c: &mut Client, ri: &str, on: bool) -> Result<()> {
    let route = pb::Route { vrf: 0, prefix: "203.0.113.0/24".into(), next_hop: 1 };
    if on {
        for name in [ri, RO] {
            let r = c
                .interfaces
                .add_interface(pb::AddInterfaceRequest {
                    name: name.into(),
                    xdp_mode: pb::XdpMode::Native as i32,
                    vrf: 0,
                })
                .await?
                .into_inner();
            let mode = r.interface.map(|i| i.xdp_mode).unwrap_or_default();
            ensure!(mode == pb::XdpMode::Native as i32, "{name}: XDP mode {mode}, not native");
        }
        let nh = pb::NextHop {
            id: 1,
            kind: Some(pb::next_hop::Kind::Encap(pb::EncapNextHop {
                interface: RO.into(),
                dst_mac: mac(SINK_MAC),
                src_mac: String::new(),
                gateway: String::new(),
            })),
            ..Default::default()
        };
        c.routing
            .add_next_hops(pb::AddNextHopsRequest { next_hops: vec![nh], replace: false, ..Default::default() })
            .await?;
        c.routing
            .add_routes(pb::AddRoutesRequest { routes: vec![route], replace: false, ..Default::default() })
            .await?;
    } else {
        c.routing.delete_routes(pb::DeleteRoutesRequest { routes: vec![route], ..Default::default() }).await?;
        c.routing.delete_next_hops(pb::DeleteNextHopsRequest { ids: vec![1], ..Default::default() }).await?;
        for name in [ri, RO] {
            c.interfaces.delete_interface(pb::DeleteInterfaceRequest { name: name.into() }).await?;
        }
    }
    Ok(())
}

/// The `forwarded` counter of our router's ingress interface.
async fn forwarded_by_server(c: &mut Client, ri: &str) -> Result<u64> {
    let r = c.interfaces.list_interfaces(pb::ListInterfacesRequest { name: ri.into() }).await?.into_inner();
    let counters =
        r.interfaces.first().and_then(|i| i.counters.clone()).context("no counters for the ingress interface")?;
    Ok(counters.reasons.iter().find(|r| r.reason == "forwarded").map(|r| r.packets).unwrap_or(0))
}

/// `dp_bench_redirect` from the server's own object, with a `TX_PORTS` of its own whose slot 0 is
/// the router's egress veth.
struct BareRedirect {
    ebpf: aya::Ebpf,
    link: Option<aya::programs::xdp::XdpLinkId>,
    ri_index: u32,
}

impl BareRedirect {
    fn load(topo: &Topology) -> Result<Self> {
        let ri = topo.ri.clone();
        topo.rtr.enter(move || {
            let mut ebpf = aya::EbpfLoader::new()
                .verifier_log_level(aya::VerifierLogLevel::STATS)
                .load(dataplane_server::dataplane::loader::EBPF_OBJECT)
                .context("loading the eBPF object")?;
            // The devmap resolves the ifindex in the caller's namespace: this thread's, the router's.
            let map = ebpf.map_mut(names::TX_PORTS).context("no TX_PORTS")?;
            let mut tx = aya::maps::DevMap::try_from(map)?;
            tx.set(0, ifindex(RO)?, None, 0).context("TX_PORTS[0]")?;
            let prog: &mut aya::programs::Xdp =
                ebpf.program_mut(programs::BENCH_REDIRECT).context("no dp_bench_redirect")?.try_into()?;
            prog.load().context("loading dp_bench_redirect")?;
            Ok(Self { ebpf, link: None, ri_index: ifindex(&ri)? })
        })
    }

    fn attach(&mut self, topo: &Topology) -> Result<()> {
        let index = self.ri_index;
        let ebpf = &mut self.ebpf;
        let link = topo.rtr.enter(move || {
            let prog: &mut aya::programs::Xdp =
                ebpf.program_mut(programs::BENCH_REDIRECT).context("no dp_bench_redirect")?.try_into()?;
            prog.attach_to_if_index(index, aya::programs::xdp::XdpMode::Driver)
                .context("attaching dp_bench_redirect natively")
        })?;
        self.link = Some(link);
        Ok(())
    }

    fn detach(&mut self) -> Result<()> {
        if let Some(link) = self.link.take() {
            let prog: &mut aya::programs::Xdp =
                self.ebpf.program_mut(programs::BENCH_REDIRECT).context("no dp_bench_redirect")?.try_into()?;
            prog.detach(link)?;
        }
        Ok(())
    }
}

fn ifindex(dev: &str) -> Result<u32> {
    let c = CString::new(dev)?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    ensure!(i != 0, "no interface {dev}");
    Ok(i)
}

/// A two-instruction XDP program (`r0 = XDP_DROP; exit`) loaded with bpf(2) and attached
/// natively through a bpf link; detached when dropped.
struct XdpDrop {
    _link: OwnedFd,
    _prog: OwnedFd,
}

impl XdpDrop {
    fn attach(ns: &NetNs, dev: &str) -> Result<Self> {
        const BPF_PROG_LOAD: libc::c_long = 5;
        const BPF_LINK_CREATE: libc::c_long = 28;
        const BPF_PROG_TYPE_XDP: u32 = 6;
        const BPF_XDP: u32 = 37;
        const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
        ns.enter(|| {
            // BPF_ALU64 | BPF_MOV | BPF_K into r0, imm 1 (XDP_DROP); BPF_JMP | BPF_EXIT.
            let insns: [u64; 2] =
                [u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]), u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0])];
            let license = b"GPL\0";
            let mut name = [0u8; 16];
            name[..13].copy_from_slice(b"dpb_sink_drop");
            let mut attr = [0u64; 16];
            set32(&mut attr, 0, BPF_PROG_TYPE_XDP);
            set32(&mut attr, 4, insns.len() as u32);
            set64(&mut attr, 8, insns.as_ptr() as u64);
            set64(&mut attr, 16, license.as_ptr() as u64);
            set64(&mut attr, 48, u64::from_le_bytes(name[..8].try_into().unwrap()));
            set64(&mut attr, 56, u64::from_le_bytes(name[8..].try_into().unwrap()));
            set32(&mut attr, 68, BPF_XDP);
            let prog = bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD of the sink's XDP_DROP")?;
            // SAFETY: a new fd nothing else owns.
            let prog = unsafe { OwnedFd::from_raw_fd(prog as i32) };
            let mut attr = [0u64; 16];
            set32(&mut attr, 0, prog.as_raw_fd() as u32);
            set32(&mut attr, 4, ifindex(dev)?);
            set32(&mut attr, 8, BPF_XDP);
            set32(&mut attr, 12, XDP_FLAGS_DRV_MODE);
            let link = bpf(BPF_LINK_CREATE, &mut attr).context("attaching the sink's XDP_DROP")?;
            // SAFETY: as above.
            let link = unsafe { OwnedFd::from_raw_fd(link as i32) };
            Ok(Self { _link: link, _prog: prog })
        })
    }
}

/// The AF_PACKET generator: one thread in the generator namespace sending `frame` as fast as it
/// can until stopped.
struct Generator {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Generator {
    fn start(ns: &NetNs, dev: &str, frame: Vec<u8>, cpu: Option<usize>) -> Result<Self> {
        let file = ns.file()?;
        let dev = dev.to_owned();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let (stop2, sent2, failed2) = (stop.clone(), sent.clone(), failed.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let setup = || -> Result<OwnedFd> {
                join(&file)?;
                if let Some(cpu) = cpu {
                    pin_to_cpu(0, cpu)?;
                }
                packet_socket(&dev)
            };
            let fd = match setup() {
                Ok(fd) => {
                    let _ = ready_tx.send(Ok(()));
                    fd
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return Ok(());
                }
            };
            let mut iov = libc::iovec { iov_base: frame.as_ptr() as *mut libc::c_void, iov_len: frame.len() };
            let mut msgs: Vec<libc::mmsghdr> = (0..BATCH)
                .map(|_| {
                    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
                    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                    m.msg_hdr.msg_iov = &mut iov;
                    m.msg_hdr.msg_iovlen = 1;
                    m
                })
                .collect();
            while !stop2.load(Ordering::Relaxed) {
                // SAFETY: `msgs` holds BATCH headers, each pointing at `iov` -> `frame`, all alive.
                let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
                if n > 0 {
                    sent2.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => {
                            failed2.fetch_add(1, Ordering::Relaxed);
                        }
                        _ => return Err(e).context("sendmmsg"),
                    }
                }
            }
            Ok(())
        });
        ready_rx.recv().context("generator thread")??;
        Ok(Self { stop, sent, failed, thread: Some(thread) })
    }

    /// Stops the thread; the number of failed sends.
    fn stop(mut self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow::anyhow!("generator panicked"))??;
        }
        Ok(self.failed.load(Ordering::Relaxed))
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// An AF_PACKET raw socket bound to `dev` (protocol 0: it receives nothing), bypassing the qdisc.
fn packet_socket(dev: &str) -> Result<OwnedFd> {
    const PACKET_QDISC_BYPASS: libc::c_int = 20;
    // SAFETY: plain syscalls on a socket this function owns; the option and address are valid
    // for the sizes given.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        if libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            PACKET_QDISC_BYPASS,
            &one as *const _ as *const libc::c_void,
            4,
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("PACKET_QDISC_BYPASS");
        }
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex(dev)? as i32;
        if libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
        }
        Ok(fd)
    }
}

/// The NAPI kernel thread of `dev` (`napi/<dev>-<napi id>`).
fn napi_thread(dev: &str) -> Result<i32> {
    let prefix = format!("napi/{dev}-");
    let found = threads_named(|c| c.starts_with(&prefix))?;
    match found[..] {
        [t] => Ok(t),
        [] => bail!("no NAPI thread for {dev} (threaded NAPI not on?)"),
        _ => bail!("{} NAPI threads named {prefix}*", found.len()),
    }
}

/// ksoftirqd of `cpu`, or of every CPU.
fn ksoftirqd(cpu: Option<usize>) -> Result<Vec<i32>> {
    let want = cpu.map(|c| format!("ksoftirqd/{c}"));
    threads_named(|c| match &want {
        Some(w) => c == w,
        None => c.starts_with("ksoftirqd/"),
    })
}

/// Kernel threads (children of kthreadd, pid 2) whose name passes `f`.
fn threads_named(f: impl Fn(&str) -> bool) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the last ')' ends it.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid == Some("2") && f(&stat[open + 1..close]) {
            out.push(pid);
        }
    }
    Ok(out)
}

/// Time thread `tid` has run, ns (first field of `/proc/<tid>/schedstat`).
fn schedstat_ns(tid: i32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/schedstat")).with_context(|| format!("schedstat of {tid}"))?;
    s.split_whitespace().next().and_then(|v| v.parse().ok()).context("bad schedstat")
}

/// 64 bytes: Ethernet (to the router's ingress MAC) + IPv4 (192.0.2.2 -> 203.0.113.10, TTL 64,
/// DF) + UDP (12345 -> 9) + 22 bytes of payload, both checksums correct.
fn udp_frame() -> Vec<u8> {
    let ip = Ipv4::new(GEN_IP.into(), DST_IP.into(), IPPROTO_UDP).id(1).dont_fragment();
    let f = Eth::new(RI_MAC, GEN_MAC, ETH_P_IPV4).frame(&ip.build_udp_checksummed(&udp(12345, 9, &[0x5a; 22])));
    debug_assert_eq!(f.len(), 64);
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use integration::checksum;

    #[test]
    fn frame_is_64_bytes_with_valid_checksums() {
        let f = udp_frame();
        assert_eq!(f.len(), 64);
        // A correct header sums to 0xffff, i.e. its checksum over itself is 0.
        assert_eq!(checksum::internet(&f[14..34]), 0);
        let pseudo = checksum::pseudo_v4(GEN_IP.into(), DST_IP.into(), IPPROTO_UDP, 30);
        assert_eq!(!checksum::ones_sum(&f[34..], pseudo), 0);
    }
}
