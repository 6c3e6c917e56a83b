//! BPF_PROG_TEST_RUN of the loaded programs, for benchmarks and diagnostics: the programs run in
//! the kernel against the live maps, as received on the caller's loopback device (an XDP test
//! run without `ctx_in` reports the netns loopback as the ingress interface).

use std::time::Duration;

use aya::{
    maps::{Array, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use dataplane_common::{maps as names, programs, BenchFrame, BENCH_FRAME_LEN};

use super::{loader::program_mut, DataplaneError, KernelDataplane};

/// What [`KernelDataplane::test_run`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestProgram {
    /// `dp_xdp_ingress`, the attached program, on the frame as given. A repeated run hands it
    /// its own output again, so use [`TestProgram::HarnessedIngress`] to measure it.
    Ingress,
    /// `dp_bench_pass`: XDP_PASS and nothing else.
    Pass,
    /// `dp_bench_redirect`: MAC swap + `TX_PORTS[0]` redirect.
    BareRedirect,
    /// `dp_bench_harness` restoring the frame head, then tail-calling `dp_xdp_ingress`.
    HarnessedIngress,
    /// `dp_bench_harness` tail-calling `dp_bench_pass`: the harness's own cost.
    HarnessedPass,
    /// `dp_bench_route_v4`: the route stage's IPv4 lookup alone (VRF 0).
    RouteLookupV4,
    /// `dp_bench_trie_v4`: the same in `ROUTES_V4`, as for a VRF without a flat table.
    TrieLookupV4,
    /// `dp_bench_lpm_v4`: a plain kernel LPM trie lookup (`BENCH_LPM_V4`).
    PlainLpmV4,
}

/// Result of one BPF_PROG_TEST_RUN.
#[derive(Clone, Debug)]
pub struct TestRunOutcome {
    /// The XDP action of the last repetition.
    pub verdict: u32,
    /// Mean time per repetition, as the kernel measured it.
    pub per_run: Duration,
    /// The frame as the last repetition left it.
    pub frame: Vec<u8>,
}

impl KernelDataplane {
    /// Runs `program` `repeat` times on `frame` (BPF_PROG_TEST_RUN). Benchmark programs are
    /// loaded into the kernel on first use; they share every map with the attached programs.
    pub fn test_run(&self, program: TestProgram, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, DataplaneError> {
        let mut inner = self.lock();
        let ebpf = &mut inner.ebpf;
        let (entry, target) = match program {
            TestProgram::Ingress => (programs::XDP_INGRESS, None),
            TestProgram::Pass => (programs::BENCH_PASS, None),
            TestProgram::BareRedirect => (programs::BENCH_REDIRECT, None),
            TestProgram::HarnessedIngress => (programs::BENCH_HARNESS, Some(programs::XDP_INGRESS)),
            TestProgram::HarnessedPass => (programs::BENCH_HARNESS, Some(programs::BENCH_PASS)),
            TestProgram::RouteLookupV4 => (programs::BENCH_ROUTE_V4, None),
            TestProgram::PlainLpmV4 => (programs::BENCH_LPM_V4, None),
            TestProgram::TrieLookupV4 => (programs::BENCH_TRIE_V4, None),
        };
        for name in [Some(entry), target].into_iter().flatten() {
            let xdp: &mut Xdp = program_mut(ebpf, name)?;
            if xdp.fd().is_err() {
                xdp.load().map_err(DataplaneError::program(name, "load"))?;
            }
        }
        if let Some(target) = target {
            if frame.len() < BENCH_FRAME_LEN {
                return Err(DataplaneError::FrameTooShort { len: frame.len(), min: BENCH_FRAME_LEN });
            }
            let mut bytes = [0u8; BENCH_FRAME_LEN];
            bytes.copy_from_slice(&frame[..BENCH_FRAME_LEN]);
            let map = ebpf
                .map_mut(names::BENCH_FRAME)
                .ok_or(DataplaneError::Missing { what: "map", name: names::BENCH_FRAME })?;
            let mut head: Array<_, BenchFrame> =
                Array::try_from(map).map_err(DataplaneError::map(names::BENCH_FRAME, "open"))?;
            head.set(0, BenchFrame { bytes }, 0).map_err(DataplaneError::map(names::BENCH_FRAME, "update"))?;

            let xdp: &mut Xdp = program_mut(ebpf, target)?;
            let fd = xdp.fd().map_err(DataplaneError::program(target, "fd"))?;
            let fd =
                fd.try_clone().map_err(|source| DataplaneError::Io { path: "program fd".into(), op: "dup", source })?;
            let map = ebpf
                .map_mut(names::BENCH_TARGETS)
                .ok_or(DataplaneError::Missing { what: "map", name: names::BENCH_TARGETS })?;
            let mut targets = ProgramArray::try_from(map).map_err(DataplaneError::map(names::BENCH_TARGETS, "open"))?;
            targets.set(0, &fd, 0).map_err(DataplaneError::map(names::BENCH_TARGETS, "update"))?;
        }
        let xdp: &mut Xdp = program_mut(ebpf, entry)?;
        // Room for any frame the program could grow this one into.
        let mut out = vec![0u8; frame.len() + 256];
        let result = xdp
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat, ..Default::default() })
            .map_err(DataplaneError::program(entry, "test run"))?;
        out.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome { verdict: result.return_value, per_run: result.duration, frame: out })
    }
}

impl KernelDataplane {
    /// Adds IPv4 prefixes to `ROUTES_V4` under VRF [`programs::BENCH_TRIE_VRF`] (which the
    /// domain never has), for `dp_bench_trie_v4`: the trie a VRF without a flat table uses.
    pub fn bench_trie_v4_insert(&self, prefixes: &[(std::net::Ipv4Addr, u8)]) -> Result<(), DataplaneError> {
        let routes: Vec<(u32, crate::net::Prefix, u32)> = prefixes
            .iter()
            .map(|(a, len)| {
                (programs::BENCH_TRIE_VRF, crate::net::Prefix::containing(std::net::IpAddr::V4(*a), *len), 0)
            })
            .collect();
        self.lock().routes.insert_many(&routes).map_err(|(_, e)| e)
    }

    /// Adds IPv4 prefixes to the benchmark's plain LPM trie (`BENCH_LPM_V4`).
    pub fn bench_lpm_v4_insert(&self, prefixes: &[(std::net::Ipv4Addr, u8)]) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        let map = inner
            .ebpf
            .map_mut(names::BENCH_LPM_V4)
            .ok_or(DataplaneError::Missing { what: "map", name: names::BENCH_LPM_V4 })?;
        let mut trie: aya::maps::LpmTrie<_, [u8; 4], u32> =
            aya::maps::LpmTrie::try_from(map).map_err(DataplaneError::map(names::BENCH_LPM_V4, "open"))?;
        for (addr, len) in prefixes {
            trie.insert(&aya::maps::lpm_trie::Key::new(u32::from(*len), addr.octets()), 1, 0)
                .map_err(DataplaneError::map(names::BENCH_LPM_V4, "insert"))?;
        }
        Ok(())
    }
}

/// `struct xdp_md` as BPF_PROG_TEST_RUN takes it in `ctx_in`.
#[repr(C)]
#[derive(Default)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

impl KernelDataplane {
    /// Runs `dp_xdp_ingress` on `frame` as received on `ifindex`, without live frames: the
    /// verdict and the frame as the program left it (nothing is transmitted).
    pub(super) fn test_run_at(&self, ifindex: u32, frame: &[u8]) -> Result<(u32, Vec<u8>), DataplaneError> {
        let inner = self.lock();
        let ctx = XdpMd { data_end: frame.len() as u32, ingress_ifindex: ifindex, ..Default::default() };
        // SAFETY: XdpMd is plain repr(C) data; viewed as its bytes.
        let ctx_bytes =
            unsafe { std::slice::from_raw_parts(&ctx as *const XdpMd as *const u8, std::mem::size_of::<XdpMd>()) };
        // Room for any frame the program could grow this one into (an ICMP error).
        let mut out = vec![0u8; frame.len().max(128) + 256];
        let result = inner
            .xdp
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(ctx_bytes),
                repeat: 1,
                ..Default::default()
            })
            .map_err(DataplaneError::program(programs::XDP_INGRESS, "test run"))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, out))
    }

    /// Runs `dp_xdp_ingress` on `frame` as received on `ifindex`, with live frames: a redirect
    /// is transmitted and XDP_PASS hands the frame to the stack, as for a real packet.
    pub(super) fn test_run_live(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError> {
        let inner = self.lock();
        // The attached program itself.
        let xdp = &inner.xdp;
        let ctx = XdpMd { data_end: frame.len() as u32, ingress_ifindex: ifindex, ..Default::default() };
        // SAFETY: XdpMd is plain repr(C) data; viewed as its bytes.
        let ctx_bytes =
            unsafe { std::slice::from_raw_parts(&ctx as *const XdpMd as *const u8, std::mem::size_of::<XdpMd>()) };
        let result = xdp
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(ctx_bytes),
                repeat: 1,
                attrs: aya::programs::TestRunAttrs::new().xdp_live_frames(1),
                ..Default::default()
            })
            .map_err(DataplaneError::program(programs::XDP_INGRESS, "live test run"))?;
        Ok(result.return_value)
    }
}
