//! The one test-run harness: `dp_xdp_ingress` from the embedded `EBPF_OBJECT`, run in the kernel
//! by BPF_PROG_TEST_RUN, with a helper per map to write what the server would write (Cilium's
//! `bpf/tests/lib/<map>.h`) and to read the counters the program writes.
//!
//! [`Harness::load`] creates fresh maps (nothing pinned or attached, so tests in one process run
//! in parallel without seeing each other's maps or counters); [`Harness::over_pins`] loads a
//! second copy of the program over a running server's pinned maps, so it sees the interfaces,
//! routes and flows the attached program sees and writes the same counters, flows and miss
//! events. A run without `ctx_in` is received on the loopback of the caller's network namespace:
//! the loopback ifindex ([`Harness::lo`]) is the ingress interface, and the only device every
//! namespace has for a redirect target.

use std::{collections::BTreeSet, net::IpAddr, path::Path, time::Duration};

use aya::{
    maps::{lpm_trie::Key, Array, DevMap, LpmTrie, PerCpuArray, ProgramArray},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp},
    Ebpf, EbpfLoader,
};
use dataplane_common::{
    flow::{FlowKeyV4, FlowValue},
    maps as names, programs,
    route::{IFACE_PRESENT, VRF_BITS},
    BenchFrame, InterfaceConfig, InterfaceStats, NextHop, NextHopStats, RouteAddrV4, RouteAddrV6, RouteValue,
    BENCH_FRAME_LEN,
};
use dataplane_server::dataplane::loader::{EBPF_OBJECT, PIN_VERSION};

use crate::counters::{delta, nexthop_delta};

/// `xdp_action::XDP_ABORTED`.
pub const XDP_ABORTED: u32 = 0;
/// `xdp_action::XDP_DROP`.
pub const XDP_DROP: u32 = 1;
/// `xdp_action::XDP_PASS`.
pub const XDP_PASS: u32 = 2;
/// `xdp_action::XDP_TX`.
pub const XDP_TX: u32 = 3;
/// `xdp_action::XDP_REDIRECT`.
pub const XDP_REDIRECT: u32 = 4;

/// The name of an XDP verdict, for failure messages.
pub fn verdict_name(v: u32) -> &'static str {
    match v {
        XDP_ABORTED => "XDP_ABORTED",
        XDP_DROP => "XDP_DROP",
        XDP_PASS => "XDP_PASS",
        XDP_TX => "XDP_TX",
        XDP_REDIRECT => "XDP_REDIRECT",
        _ => "unknown",
    }
}

/// Runs every fixture of `group` through `check` (not stopping at the first failure) and fails
/// listing every mismatch, so one run shows the whole table's state.
pub fn check_all<F, T>(group: &str, fixtures: &[F], check: impl Fn(&F) -> Result<T, String>) {
    assert!(!fixtures.is_empty(), "{group}: no fixtures");
    let failures: Vec<String> = fixtures.iter().filter_map(|fx| check(fx).err()).collect();
    assert!(
        failures.is_empty(),
        "{group}: {} of {} fixtures failed:\n  {}",
        failures.len(),
        fixtures.len(),
        failures.join("\n  ")
    );
}

/// What one run did: the verdict and output frame (or the kernel's refusal to run) and the
/// counter deltas it caused.
pub struct Observed {
    /// The verdict and the frame as the program left it.
    pub result: Result<(u32, Vec<u8>), ProgramError>,
    /// `IFACE_STATS[slot]` of the slot observed.
    pub iface: InterfaceStats,
    /// `UNKNOWN_IFACE_STATS[0]`.
    pub unknown: InterfaceStats,
    /// `(slot, delta)` of every next-hop slot written.
    pub nexthops: Vec<(u32, NextHopStats)>,
}

impl Observed {
    /// The verdict, if the kernel ran the program.
    pub fn verdict(&self) -> Option<u32> {
        self.result.as_ref().ok().map(|(v, _)| *v)
    }

    /// The output frame (empty if the kernel refused the run).
    pub fn output(&self) -> &[u8] {
        self.result.as_ref().map(|(_, o)| o.as_slice()).unwrap_or(&[])
    }

    /// The result as a failure message shows it.
    pub fn describe_result(&self) -> String {
        match &self.result {
            Ok((v, _)) => format!("verdict {v}"),
            Err(e) => format!("test run error ({e})"),
        }
    }
}

/// The loaded ingress program and its maps.
pub struct Harness {
    ebpf: Ebpf,
    /// The ifindex BPF_PROG_TEST_RUN reports as `ingress_ifindex`, and the redirect target.
    pub lo: u32,
    /// Every next-hop slot written through [`Harness::nexthop`], whose counters a check compares.
    nexthop_slots: BTreeSet<u32>,
}

impl Harness {
    /// Loads the object with fresh maps and the ingress program; nothing is written to any map.
    pub fn load() -> Self {
        let ebpf = EbpfLoader::new()
            .verifier_log_level(aya::VerifierLogLevel::STATS)
            .load(EBPF_OBJECT)
            .expect("parse and load the eBPF object");
        Self::with_ingress(ebpf).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Loads the object over the pinned maps of a server whose bpffs root is `bpffs` (its
    /// `BENCH_*` maps stay this copy's own).
    pub fn over_pins(bpffs: &Path) -> anyhow::Result<Self> {
        let dir = bpffs.join(PIN_VERSION).join("maps");
        let mut loader = EbpfLoader::new();
        // Statistics only: the full verifier log makes the load ~10x slower.
        loader.verifier_log_level(aya::VerifierLogLevel::STATS);
        for name in names::ALL {
            let pin = dir.join(name);
            // A missing pin would make the loader create (and pin) a fresh map instead.
            anyhow::ensure!(pin.exists(), "no pinned map {}", pin.display());
            loader.map_pin_path(name, pin);
        }
        let ebpf = anyhow::Context::context(loader.load(EBPF_OBJECT), "loading the eBPF object over the pins")?;
        Self::with_ingress(ebpf)
    }

    fn with_ingress(mut ebpf: Ebpf) -> anyhow::Result<Self> {
        load_program(&mut ebpf, programs::XDP_INGRESS)?;
        // SAFETY: a NUL-terminated literal; if_nametoindex only reads it.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        anyhow::ensure!(lo != 0, "no loopback device in this network namespace");
        Ok(Self { ebpf, lo, nexthop_slots: BTreeSet::new() })
    }

    /// Also loads `dp_bench_harness` tail-calling the ingress program, for [`Self::run_harnessed`].
    pub fn with_bench_harness(mut self) -> anyhow::Result<Self> {
        load_program(&mut self.ebpf, programs::BENCH_HARNESS)?;
        let ingress: &Xdp = self.ebpf.program(programs::XDP_INGRESS).expect("loaded above").try_into()?;
        let fd = ingress.fd()?.try_clone()?;
        let mut targets = ProgramArray::try_from(self.map_mut(names::BENCH_TARGETS))?;
        targets.set(0, &fd, 0)?;
        Ok(self)
    }

    fn map_mut(&mut self, name: &str) -> &mut aya::maps::Map {
        self.ebpf.map_mut(name).unwrap_or_else(|| panic!("{name} map missing from the object"))
    }

    /// `FLOWS_V4[key]`, if there is an entry.
    pub fn flow_v4(&mut self, key: FlowKeyV4) -> Option<FlowValue> {
        let flows: aya::maps::HashMap<_, FlowKeyV4, FlowValue> =
            aya::maps::HashMap::try_from(self.map_mut(names::FLOWS_V4)).expect("FLOWS_V4 is a hash of FlowValue");
        flows.get(&key, 0).ok()
    }

    /// `FLOWS_V4[key] = value`, as given (what the kernel or the server could have written).
    pub fn put_flow_v4(&mut self, key: FlowKeyV4, value: FlowValue) {
        let mut flows: aya::maps::HashMap<_, FlowKeyV4, FlowValue> =
            aya::maps::HashMap::try_from(self.map_mut(names::FLOWS_V4)).expect("FLOWS_V4 is a hash of FlowValue");
        flows.insert(key, value, 0).expect("update FLOWS_V4");
    }

    /// `INTERFACES[ifindex] = cfg`, as given.
    pub fn interface_entry(&mut self, ifindex: u32, cfg: InterfaceConfig) {
        let mut interfaces: Array<_, InterfaceConfig> = Array::try_from(self.map_mut(names::INTERFACES))
            .expect("INTERFACES is an ifindex -> InterfaceConfig array");
        interfaces.set(ifindex, cfg, 0).expect("write INTERFACES");
    }

    /// Registers the loopback as the server's attach registers an interface: `TX_PORTS[slot]` is
    /// the interface itself, `INTERFACES[lo]` its configuration (replaced as one value), marked
    /// present.
    pub fn attach_lo(&mut self, cfg: InterfaceConfig) {
        self.tx_port(cfg.slot, self.lo);
        self.interface_entry(self.lo, InterfaceConfig { flags: cfg.flags | IFACE_PRESENT, ..cfg });
    }

    /// `TX_PORTS[slot] = ifindex`; ifindex 0 is how the server clears an entry (devmaps cannot
    /// delete).
    pub fn tx_port(&mut self, slot: u32, ifindex: u32) {
        let mut ports: DevMap<_> = DevMap::try_from(self.map_mut(names::TX_PORTS)).expect("TX_PORTS is a devmap");
        ports.set(slot, ifindex, None, 0).expect("update TX_PORTS");
    }

    /// `NEXTHOPS[slot] = nh`; the slot's counters are then compared by every check.
    pub fn nexthop(&mut self, slot: u32, nh: &NextHop) {
        let mut nexthops: Array<_, NextHop> =
            Array::try_from(self.map_mut(names::NEXTHOPS)).expect("NEXTHOPS is an array of NextHop");
        nexthops.set(slot, nh, 0).expect("update NEXTHOPS");
        self.nexthop_slots.insert(slot);
    }

    /// The next-hop slots written so far.
    pub fn nexthop_slots(&self) -> &BTreeSet<u32> {
        &self.nexthop_slots
    }

    /// Route `addr/len` in `vrf` to next-hop `slot` in `ROUTES_V4` / `ROUTES_V6`, keyed as the
    /// server keys it.
    pub fn route(&mut self, vrf: u32, addr: IpAddr, len: u8, slot: u32) {
        let value = RouteValue { nexthop: slot, prefix_len: len.into() };
        let plen = VRF_BITS + u32::from(len);
        let vrf = vrf.to_be_bytes();
        match addr {
            IpAddr::V4(a) => {
                let mut routes: LpmTrie<_, RouteAddrV4, RouteValue> =
                    LpmTrie::try_from(self.map_mut(names::ROUTES_V4)).expect("ROUTES_V4 is an LPM trie");
                let key = Key::new(plen, RouteAddrV4 { vrf, addr: a.octets() });
                routes.insert(&key, value, 0).expect("insert into ROUTES_V4");
            }
            IpAddr::V6(a) => {
                let mut routes: LpmTrie<_, RouteAddrV6, RouteValue> =
                    LpmTrie::try_from(self.map_mut(names::ROUTES_V6)).expect("ROUTES_V6 is an LPM trie");
                let key = Key::new(plen, RouteAddrV6 { vrf, addr: a.octets() });
                routes.insert(&key, value, 0).expect("insert into ROUTES_V6");
            }
        }
    }

    /// Entry `index` of the per-CPU `InterfaceStats` array `map` (`IFACE_STATS`,
    /// `UNKNOWN_IFACE_STATS`), summed over CPUs.
    pub fn iface_stats(&self, map: &str, index: u32) -> InterfaceStats {
        let map = self.ebpf.map(map).unwrap_or_else(|| panic!("{map} map"));
        let array: PerCpuArray<_, InterfaceStats> =
            PerCpuArray::try_from(map).expect("a per-CPU array of InterfaceStats");
        let mut sum = InterfaceStats::ZERO;
        for cpu in array.get(&index, 0).expect("read per-CPU stats").iter() {
            sum.accumulate(cpu);
        }
        sum
    }

    /// `NEXTHOP_STATS[slot]`, summed over CPUs.
    pub fn nexthop_stats(&self, slot: u32) -> NextHopStats {
        let map = self.ebpf.map(names::NEXTHOP_STATS).expect("NEXTHOP_STATS map");
        let array: PerCpuArray<_, NextHopStats> = PerCpuArray::try_from(map).expect("a per-CPU array of NextHopStats");
        let mut sum = NextHopStats::default();
        for cpu in array.get(&slot, 0).expect("read per-CPU next-hop stats").iter() {
            sum.packets += cpu.packets;
            sum.bytes += cpu.bytes;
        }
        sum
    }

    /// `(slot, counters)` of every next-hop slot written.
    pub fn all_nexthop_stats(&self) -> Vec<(u32, NextHopStats)> {
        self.nexthop_slots.iter().map(|&s| (s, self.nexthop_stats(s))).collect()
    }

    /// One run of the ingress program: the verdict and the frame as the program left it.
    pub fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.try_run(frame).unwrap_or_else(|e| panic!("test run of {} bytes: {e}", frame.len()))
    }

    /// [`Self::run`], returning the kernel's refusal instead of panicking.
    pub fn try_run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), ProgramError> {
        self.test_run(programs::XDP_INGRESS, frame, 1).map(|(v, _, out)| (v, out))
    }

    /// One run of `frame` and what it changed in the counters of interface slot `slot`, of
    /// unknown interfaces and of every next hop written.
    pub fn observe(&self, slot: u32, frame: &[u8]) -> Observed {
        let iface0 = self.iface_stats(names::IFACE_STATS, slot);
        let unknown0 = self.iface_stats(names::UNKNOWN_IFACE_STATS, 0);
        let nh0 = self.all_nexthop_stats();
        let result = self.try_run(frame);
        let nexthops = self
            .all_nexthop_stats()
            .into_iter()
            .zip(nh0)
            .map(|((slot, after), (_, before))| (slot, nexthop_delta(&after, &before)))
            .collect();
        Observed {
            result,
            iface: delta(&self.iface_stats(names::IFACE_STATS, slot), &iface0),
            unknown: delta(&self.iface_stats(names::UNKNOWN_IFACE_STATS, 0), &unknown0),
            nexthops,
        }
    }

    /// The frame head `dp_bench_harness` restores before every repetition.
    pub fn set_harness_frame(&mut self, frame: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(frame.len() >= BENCH_FRAME_LEN, "frame shorter than the harness restores");
        let mut bytes = [0u8; BENCH_FRAME_LEN];
        bytes.copy_from_slice(&frame[..BENCH_FRAME_LEN]);
        let mut head: Array<_, BenchFrame> = Array::try_from(self.map_mut(names::BENCH_FRAME))?;
        head.set(0, BenchFrame { bytes }, 0)?;
        Ok(())
    }

    /// `repeat` repetitions of `frame` through `dp_bench_harness` (see
    /// [`Self::with_bench_harness`], [`Self::set_harness_frame`]): the verdict, the kernel's mean
    /// time per repetition, the frame as left.
    pub fn run_harnessed(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration, Vec<u8>), ProgramError> {
        self.test_run(programs::BENCH_HARNESS, frame, repeat)
    }

    /// [`Self::run_harnessed`] as received on interface `ifindex` (of the caller's network
    /// namespace) rather than on its loopback: its own receive queue's `xdp_rxq_info`, which
    /// every test run without one writes (the loopback's), so runs on another CPU do not
    /// bounce that cache line under this one's packets.
    pub fn run_harnessed_at(
        &self,
        ifindex: u32,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration, Vec<u8>), ProgramError> {
        // `struct xdp_md` as BPF_PROG_TEST_RUN takes it in `ctx_in`: data, data_end, data_meta,
        // ingress_ifindex, rx_queue_index, egress_ifindex.
        let ctx: [u32; 6] = [0, frame.len() as u32, 0, ifindex, 0, 0];
        // SAFETY: plain u32s, viewed as their bytes.
        let ctx_bytes = unsafe { std::slice::from_raw_parts(ctx.as_ptr() as *const u8, std::mem::size_of_val(&ctx)) };
        let mut out = vec![0u8; 8192];
        let r = self.program(programs::BENCH_HARNESS).test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(ctx_bytes),
            repeat,
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, r.duration, out))
    }

    fn program(&self, name: &str) -> &Xdp {
        self.ebpf
            .program(name)
            .unwrap_or_else(|| panic!("{name} missing from the object"))
            .try_into()
            .expect("an XDP program")
    }

    fn test_run(&self, program: &str, frame: &[u8], repeat: u32) -> Result<(u32, Duration, Vec<u8>), ProgramError> {
        // Room for any frame the program could grow this one into (XDP test runs are limited to
        // about a page anyway).
        let mut out = vec![0u8; 8192];
        let r = self.program(program).test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, r.duration, out))
    }
}

fn load_program(ebpf: &mut Ebpf, name: &str) -> anyhow::Result<()> {
    let xdp: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow::anyhow!("{name} missing from the object"))?
        .try_into()
        .map_err(|e| anyhow::anyhow!("{name} is not an XDP program: {e}"))?;
    xdp.load().map_err(|e| anyhow::anyhow!("loading {name} failed: {e}"))
}
