//! BPF_PROG_TEST_RUN of the loaded programs, for benchmarks and diagnostics: the programs run in
//! the kernel against the live maps, as received on the caller's loopback device (an XDP test
//! run without `ctx_in` reports the netns loopback as the ingress interface).

use std::time::Duration;

use aya::{
    maps::{Array, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use dataplane_common::{
    maps::{self as names, dir24},
    programs, BenchFrame, BENCH_FRAME_LEN,
};

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
    /// `dp_bench_route_v4`: the route lookup alone.
    RouteLookupV4,
    /// `dp_bench_lpm_v4`: a plain kernel LPM trie lookup (`BENCH_LPM_V4`).
    PlainLpmV4,
    /// `dp_bench_dir24_v4`: a DIR-24-8 lookup (`BENCH_TBL24`, `BENCH_TBL8`).
    Dir24V4,
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
            TestProgram::Dir24V4 => (programs::BENCH_DIR24_V4, None),
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
            let map = ebpf.map_mut(names::BENCH_FRAME).ok_or(DataplaneError::Missing { what: "map", name: names::BENCH_FRAME })?;
            let mut head: Array<_, BenchFrame> = Array::try_from(map).map_err(DataplaneError::map(names::BENCH_FRAME, "open"))?;
            head.set(0, BenchFrame { bytes }, 0).map_err(DataplaneError::map(names::BENCH_FRAME, "update"))?;

            let xdp: &mut Xdp = program_mut(ebpf, target)?;
            let fd = xdp.fd().map_err(DataplaneError::program(target, "fd"))?;
            let fd = fd.try_clone().map_err(|source| DataplaneError::Io {
                path: "program fd".into(),
                op: "dup",
                source,
            })?;
            let map = ebpf.map_mut(names::BENCH_TARGETS).ok_or(DataplaneError::Missing { what: "map", name: names::BENCH_TARGETS })?;
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
    /// Adds IPv4 prefixes to the benchmark's plain LPM trie (`BENCH_LPM_V4`).
    pub fn bench_lpm_v4_insert(&self, prefixes: &[(std::net::Ipv4Addr, u8)]) -> Result<(), DataplaneError> {
        let mut inner = self.lock();
        let map = inner.ebpf.map_mut(names::BENCH_LPM_V4).ok_or(DataplaneError::Missing { what: "map", name: names::BENCH_LPM_V4 })?;
        let mut trie: aya::maps::LpmTrie<_, [u8; 4], u32> =
            aya::maps::LpmTrie::try_from(map).map_err(DataplaneError::map(names::BENCH_LPM_V4, "open"))?;
        for (addr, len) in prefixes {
            trie.insert(&aya::maps::lpm_trie::Key::new(u32::from(*len), addr.octets()), 1, 0)
                .map_err(DataplaneError::map(names::BENCH_LPM_V4, "insert"))?;
        }
        Ok(())
    }
}

/// A DIR-24-8 IPv4 table built from prefixes (the benchmark's flat alternative to the trie):
/// the first level has an entry per /24, the second a group of 256 per /24 that holds a longer
/// prefix. Entries are `value + 1` (0: no route) or [`dir24::GROUP`] | group.
#[derive(Debug, Default)]
pub struct Dir24Table {
    pub tbl24: Vec<u32>,
    pub tbl8: Vec<u32>,
}

impl Dir24Table {
    /// Expands `prefixes` (each with its value), shorter ones first so longer ones overwrite
    /// them, as a longest-prefix match would choose.
    pub fn build(prefixes: &[(std::net::Ipv4Addr, u8, u32)]) -> Result<Self, DataplaneError> {
        let mut sorted: Vec<&(std::net::Ipv4Addr, u8, u32)> = prefixes.iter().collect();
        sorted.sort_by_key(|p| p.1);
        let mut t = Self { tbl24: vec![0; dataplane_common::maps::BENCH_TBL24_ENTRIES as usize], tbl8: Vec::new() };
        for &&(addr, len, value) in &sorted {
            let a = u32::from(addr);
            let entry = value + 1;
            if len <= 24 {
                let first = (a >> 8) as usize;
                let count = 1usize << (24 - len);
                // Sorted by length: no group exists yet, and longer prefixes come later.
                t.tbl24[first..first + count].fill(entry);
            } else {
                let i = (a >> 8) as usize;
                if t.tbl24[i] & dir24::GROUP == 0 {
                    let group = (t.tbl8.len() / 256) as u32;
                    if group >= dataplane_common::maps::BENCH_TBL8_GROUPS {
                        return Err(DataplaneError::BenchTableTooSmall {
                            what: names::BENCH_TBL8,
                            needed: (group as usize + 1) * 256,
                            capacity: dataplane_common::maps::BENCH_TBL8_GROUPS as usize * 256,
                        });
                    }
                    t.tbl8.extend(std::iter::repeat_n(t.tbl24[i], 256));
                    t.tbl24[i] = dir24::GROUP | group;
                }
                let g = (t.tbl24[i] & !dir24::GROUP) as usize * 256;
                let first = g + (a & 0xff) as usize;
                t.tbl8[first..first + (1usize << (32 - len))].fill(entry);
            }
        }
        Ok(t)
    }

    /// The longest-prefix match the table gives for `addr` (`None`: no route).
    pub fn lookup(&self, addr: std::net::Ipv4Addr) -> Option<u32> {
        let a = u32::from(addr);
        let mut e = self.tbl24[(a >> 8) as usize];
        if e & dir24::GROUP != 0 {
            e = self.tbl8[(((e & !dir24::GROUP) << 8) | (a & 0xff)) as usize];
        }
        e.checked_sub(1)
    }
}

impl KernelDataplane {
    /// Writes a DIR-24-8 table into `BENCH_TBL24` / `BENCH_TBL8` (the dataplane must have been
    /// loaded with `bench_tables`), with `BPF_MAP_UPDATE_BATCH`.
    pub fn bench_dir24_write(&self, t: &Dir24Table) -> Result<(), DataplaneError> {
        use std::os::fd::{AsFd, AsRawFd};
        let inner = self.lock();
        for (name, values) in [(names::BENCH_TBL24, &t.tbl24), (names::BENCH_TBL8, &t.tbl8)] {
            let map = inner.ebpf.map(name).ok_or(DataplaneError::Missing { what: "map", name })?;
            let capacity = Array::<_, u32>::try_from(map).map_err(DataplaneError::map(name, "open"))?.len() as usize;
            if capacity < values.len() {
                // Loaded without `bench_tables`.
                return Err(DataplaneError::BenchTableTooSmall { what: name, needed: values.len(), capacity });
            }
            let aya::maps::Map::Array(data) = map else { return Err(DataplaneError::Missing { what: "array map", name }) };
            let fd = data.fd().as_fd().as_raw_fd();
            for (n, chunk) in values.chunks(1 << 16).enumerate() {
                let keys: Vec<u8> = (0..chunk.len() as u32).flat_map(|i| ((n << 16) as u32 + i).to_ne_bytes()).collect();
                let vals: Vec<u8> = chunk.iter().flat_map(|v| v.to_ne_bytes()).collect();
                super::maps::update_batch(fd, &keys, &vals, chunk.len() as u32)
                    .map_err(|(_, source)| DataplaneError::Io { path: name.into(), op: "BPF_MAP_UPDATE_BATCH", source })?;
            }
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
    /// Runs `dp_xdp_ingress` on `frame` as received on `ifindex`, with live frames: a redirect
    /// is transmitted and XDP_PASS hands the frame to the stack, as for a real packet.
    pub(super) fn test_run_live(&self, ifindex: u32, frame: &[u8]) -> Result<u32, DataplaneError> {
        let inner = self.lock();
        // The attached program itself.
        let xdp = &inner.xdp;
        let ctx = XdpMd { data_end: frame.len() as u32, ingress_ifindex: ifindex, ..Default::default() };
        // SAFETY: XdpMd is plain repr(C) data; viewed as its bytes.
        let ctx_bytes = unsafe {
            std::slice::from_raw_parts(&ctx as *const XdpMd as *const u8, std::mem::size_of::<XdpMd>())
        };
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

/// A second copy of `dp_xdp_ingress` loaded over a running server's pinned maps (under
/// `<bpffs_root>/v1/maps`): it sees exactly the interfaces, routes, policies and flows the
/// attached program sees, and writes the same counters, flows and miss events. A test run
/// without `ctx_in` receives on the loopback of the caller's network namespace (ifindex 1, like
/// the server namespace's `lo`). For tests and benchmarks.
pub struct PinnedIngress {
    ebpf: aya::Ebpf,
}

impl PinnedIngress {
    pub fn load(bpffs_root: &std::path::Path) -> Result<Self, DataplaneError> {
        let dir = bpffs_root.join(super::loader::PIN_VERSION).join("maps");
        let mut loader = aya::EbpfLoader::new();
        // Statistics only: the full verifier log makes the load ~10x slower.
        loader.verifier_log_level(aya::VerifierLogLevel::STATS);
        for name in names::ALL {
            let pin = dir.join(name);
            // A missing pin would make the loader create (and pin) a fresh map instead.
            if !pin.exists() {
                return Err(DataplaneError::Missing { what: "pinned map", name });
            }
            loader.map_pin_path(name, pin);
        }
        let mut ebpf = loader.load(super::loader::EBPF_OBJECT).map_err(|e| DataplaneError::Load { source: Box::new(e) })?;
        let xdp: &mut Xdp = program_mut(&mut ebpf, programs::XDP_INGRESS)?;
        xdp.load().map_err(DataplaneError::program(programs::XDP_INGRESS, "load"))?;
        Ok(Self { ebpf })
    }

    /// One test run of `frame`: the verdict and the frame as the program left it.
    pub fn run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>), DataplaneError> {
        let xdp: &Xdp = self
            .ebpf
            .program(programs::XDP_INGRESS)
            .ok_or(DataplaneError::Missing { what: "program", name: programs::XDP_INGRESS })?
            .try_into()
            .map_err(DataplaneError::program(programs::XDP_INGRESS, "open"))?;
        let mut out = vec![0u8; frame.len() + 256];
        let r = xdp
            .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), repeat: 1, ..Default::default() })
            .map_err(DataplaneError::program(programs::XDP_INGRESS, "test run"))?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir24_table_matches_longest_prefix_for_short_24_and_long_prefixes() {
        let p = |s: &str, len: u8, v: u32| (s.parse().unwrap(), len, v);
        // Given out of order: the table must not depend on it.
        let t = Dir24Table::build(&[
            p("198.51.100.128", 25, 4),
            p("198.51.0.0", 16, 1),
            p("198.51.100.0", 24, 2),
            p("198.51.100.200", 32, 5),
            p("10.0.0.0", 8, 3),
        ])
        .unwrap();
        let at = |s: &str| t.lookup(s.parse().unwrap());
        assert_eq!(at("198.51.7.1"), Some(1));
        assert_eq!(at("198.51.100.1"), Some(2));
        assert_eq!(at("198.51.100.129"), Some(4));
        assert_eq!(at("198.51.100.200"), Some(5));
        assert_eq!(at("198.51.100.201"), Some(4));
        assert_eq!(at("10.200.3.4"), Some(3));
        assert_eq!(at("203.0.113.1"), None);
        assert_eq!(t.tbl8.len(), 256, "one group: 198.51.100.0/24");
        // The /16 given after the /25 still loses to it inside the split /24.
        let t = Dir24Table::build(&[p("198.51.100.0", 25, 7), p("198.51.0.0", 16, 1)]).unwrap();
        assert_eq!(t.lookup("198.51.100.1".parse().unwrap()), Some(7));
        assert_eq!(t.lookup("198.51.100.255".parse().unwrap()), Some(1));
    }
}
