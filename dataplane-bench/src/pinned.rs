//! The server's `dp_xdp_ingress`, a second copy loaded over a running server's pinned maps (it
//! sees the interfaces, routes and flows the attached program sees, and writes the same counters,
//! flows and miss events), runnable by BPF_PROG_TEST_RUN as is (one packet, as received on the
//! loopback of the caller's namespace) or behind `dp_bench_harness`, which restores the frame
//! head before every repetition of a repeated run (its `BENCH_*` maps are this copy's own).

use std::{path::Path, time::Duration};

use anyhow::{ensure, Context, Result};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use dataplane_common::{maps as names, programs, BenchFrame, BENCH_FRAME_LEN};
use dataplane_server::dataplane::loader;

pub struct PinnedIngress {
    ebpf: aya::Ebpf,
}

impl PinnedIngress {
    pub fn load(bpffs: &Path) -> Result<Self> {
        let dir = bpffs.join(loader::PIN_VERSION).join("maps");
        let mut l = aya::EbpfLoader::new();
        // Statistics only: the full verifier log makes the load ~10x slower.
        l.verifier_log_level(aya::VerifierLogLevel::STATS);
        for name in names::ALL {
            let pin = dir.join(name);
            // A missing pin would make the loader create (and pin) a fresh map instead.
            ensure!(pin.exists(), "no pinned map {}", pin.display());
            l.map_pin_path(name, pin);
        }
        let mut ebpf = l.load(loader::EBPF_OBJECT).context("loading the eBPF object over the server's pins")?;
        for name in [programs::XDP_INGRESS, programs::BENCH_HARNESS] {
            let p: &mut Xdp = ebpf.program_mut(name).context("program missing")?.try_into()?;
            p.load().with_context(|| format!("loading {name}"))?;
        }
        let ingress: &Xdp = ebpf.program(programs::XDP_INGRESS).context("no ingress")?.try_into()?;
        let fd = ingress.fd()?.try_clone()?;
        let mut targets =
            aya::maps::ProgramArray::try_from(ebpf.map_mut(names::BENCH_TARGETS).context("no BENCH_TARGETS")?)?;
        targets.set(0, &fd, 0)?;
        Ok(Self { ebpf })
    }

    /// One run of `dp_xdp_ingress` on `frame`: the verdict and the frame as left.
    pub fn run(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let (v, _, out) = self.test_run(programs::XDP_INGRESS, frame, 1)?;
        Ok((v, out))
    }

    /// The frame head the harness restores before every repetition.
    pub fn set_harness_frame(&mut self, frame: &[u8]) -> Result<()> {
        ensure!(frame.len() >= BENCH_FRAME_LEN, "frame shorter than the harness restores");
        let mut bytes = [0u8; BENCH_FRAME_LEN];
        bytes.copy_from_slice(&frame[..BENCH_FRAME_LEN]);
        let mut head: aya::maps::Array<_, BenchFrame> =
            aya::maps::Array::try_from(self.ebpf.map_mut(names::BENCH_FRAME).context("no BENCH_FRAME")?)?;
        head.set(0, BenchFrame { bytes }, 0)?;
        Ok(())
    }

    /// `repeat` repetitions of `frame` through the harness (see [`Self::set_harness_frame`]):
    /// the verdict, the kernel's mean time per repetition, the frame as left.
    pub fn run_harnessed(&self, frame: &[u8], repeat: u32) -> Result<(u32, Duration, Vec<u8>)> {
        self.test_run(programs::BENCH_HARNESS, frame, repeat)
    }

    fn test_run(&self, program: &str, frame: &[u8], repeat: u32) -> Result<(u32, Duration, Vec<u8>)> {
        let p: &Xdp = self.ebpf.program(program).context("program missing")?.try_into()?;
        let mut out = vec![0u8; frame.len() + 256];
        let r = p.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            repeat,
            ..Default::default()
        })?;
        out.truncate(r.data_size_out as usize);
        Ok((r.return_value, r.duration, out))
    }
}
