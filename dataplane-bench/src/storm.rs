//! Established flows during a miss storm, next to the same flows without it, in the same run.
//!
//! Established: a flow installed through `InstallFlows` (FORWARD to next hop 1), its packet run
//! through the server's own `dp_xdp_ingress` (a copy loaded over the server's pinned maps, behind
//! the benchmark harness so that a repeated BPF_PROG_TEST_RUN sees the same frame every
//! repetition), from one thread pinned to CPU 0: packets per second of wall time (what the
//! thread got done, the CPU it lost to the storm included) and the kernel's ns per packet. It
//! arrives on an interface of its own ([`EST_IF`], one end of a veth pair, with flow mode on), as traffic on a
//! NIC's other queue would: every test run writes the loopback's receive-queue info (its
//! `frag_size`), so established packets received "on lo" while the storm's test runs go on
//! on the other CPU would pay a cache-line bounce per packet (~10-20%) that no NIC puts there.
//!
//! Storm: a second thread, pinned to CPU 1, running one test run after the other, each with a
//! 5-tuple never seen before: every one a flow miss in the same program on the same interface
//! (HOLD entry + ring-buffer event to the server, within the interface's punt rate and the HOLD
//! cap, or a counted drop). No controller answers; the server reads every event from the ring
//! buffer, keeps its frame and publishes it. What the storm generated and what became of it is
//! read from the interface's reason counters.

use std::{
    net::Ipv4Addr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use integration::{packet, Harness};

use crate::netns::pin_to_cpu;
use anyhow::{bail, ensure, Context, Result};
use controller_client::{pb, Client};

const XDP_REDIRECT: u32 = 4;
/// Punt rate (per CPU) and burst, and HOLD cap, of the storm's interface: the server reads
/// events as fast as they come; the cap stays below the flow table's 262,144 entries, so the
/// LRU never has to evict an installed flow to make room for a HOLD.
pub const PUNT_RATE: u32 = 50_000;
pub const PUNT_BURST: u32 = 5_000;
pub const HOLD_CAP: u32 = 200_000;
/// Source of the storm's flows (the flow-setup case uses 192.0.2.10, the established flow .20).
const STORM_SRC: [u8; 4] = [192, 0, 2, 30];
const FLOW_SRC: [u8; 4] = [192, 0, 2, 20];
const FLOW_DST: [u8; 4] = [198, 51, 100, 20];
/// The established flow's interface (created in the bench's own network namespace).
pub const EST_IF: &str = "est0";

pub struct Config {
    pub runs: usize,
    /// Measured time of each window (quiet, storm).
    pub window: Duration,
    /// Repetitions per test run of the established flow: large, because a repeated XDP test run
    /// costs the kernel ~15 ms of set-up (it swaps the XDP dispatcher's program in and out, and
    /// sleeps for an RCU grace period, longer while the storm keeps the other CPU in the kernel)
    /// that counts in the wall time: at 5,000,000 (~0.35 s) it is a few per cent of a call.
    pub repeat: u32,
}

pub struct Results {
    pub runs: usize,
    pub window_s: f64,
    pub repeat: u32,
    /// Established flow, Mpps of wall time, per run: without the storm, during it.
    pub quiet_mpps: Vec<f64>,
    pub storm_mpps: Vec<f64>,
    /// The same over the time the measuring thread ran or waited to run ([`Window::pps_runnable`]).
    pub quiet_runnable_mpps: Vec<f64>,
    pub storm_runnable_mpps: Vec<f64>,
    /// Established flow, the kernel's ns per packet, per run.
    pub quiet_ns: Vec<f64>,
    pub storm_ns: Vec<f64>,
    /// Misses the storm generated per second, per run; and what became of them (per second):
    pub misses: Vec<f64>,
    pub punted: Vec<f64>,
    pub dropped_rate: Vec<f64>,
    pub dropped_cap: Vec<f64>,
    pub dropped_ring: Vec<f64>,
    /// The server's CPU (user + system, in CPUs) during each window, per run: quiet, storm.
    pub server_cpu_quiet: Vec<f64>,
    pub server_cpu_storm: Vec<f64>,
}

/// CPU time a process has used so far (user + system), from /proc.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) end with ')'; utime and stime are the
    // 14th and 15th fields of the line, the 12th and 13th after it.
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?;
    // SAFETY: plain libc call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

/// Runs `f`, returning its result and the CPUs `pid` used meanwhile.
fn with_cpu<T>(pid: u32, f: impl FnOnce() -> Result<T>) -> Result<(T, f64)> {
    let (c0, t0) = (cpu_time(pid)?, Instant::now());
    let r = f()?;
    Ok((r, (cpu_time(pid)? - c0).as_secs_f64() / t0.elapsed().as_secs_f64()))
}

/// A UDP datagram for the loopback MAC (all zero), `len` bytes of frame (zero payload).
fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, len: usize) -> Vec<u8> {
    let datagram = packet::udp(sport, dport, &vec![0; len - packet::ETH_HLEN - packet::IPV4_HLEN - packet::UDP_HLEN]);
    let ip = packet::Ipv4::new(src.into(), dst.into(), packet::IPPROTO_UDP).id(1).dont_fragment();
    packet::Eth::new([0; 6], packet::L4_SENDER_MAC, packet::ETH_P_IPV4).frame(&ip.build(&datagram))
}

/// Miss `n` of the storm: a 5-tuple of its own (destination, source and destination port).
fn storm_frame(n: u64) -> Vec<u8> {
    let dst = [203, 0, 113, n as u8];
    udp(STORM_SRC, dst, 1024 + (n >> 8) as u16, 1 + (n >> 24) as u16, 42)
}

/// The interface's reason counters, by name.
async fn reasons(c: &mut Client, iface: &str) -> Result<std::collections::HashMap<String, u64>> {
    let r = c.interfaces.list_interfaces(pb::ListInterfacesRequest { name: iface.into() }).await?.into_inner();
    let counters = r.interfaces.first().and_then(|i| i.counters.clone()).context("no counters")?;
    Ok(counters.reasons.into_iter().map(|r| (r.reason, r.packets)).collect())
}

/// This thread's time on a CPU and waiting for one (runnable), from schedstat: all of its time
/// but what it slept.
fn runnable_time() -> Result<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    let mut f = s.split_whitespace().map(|x| x.parse::<u64>());
    let (on_cpu, waiting) = (f.next().context("schedstat")??, f.next().context("schedstat")??);
    Ok(Duration::from_nanos(on_cpu + waiting))
}

/// One window of the established flow from a thread pinned to CPU 0.
pub struct Window {
    /// Packets per second of wall time.
    pub pps: f64,
    /// The kernel's mean ns per packet.
    pub ns: f64,
    /// Packets per second of the time the thread was running or waiting to run: wall time less
    /// what it slept inside the test-run syscalls' set-up (an RCU grace period per call, which
    /// lasts longer while the other CPU is busy in the kernel; no packet a NIC hands XDP waits
    /// for one). Preemption by the server or anything else still counts.
    pub pps_runnable: f64,
}

fn established(h: &Harness, ifindex: u32, frame: &[u8], window: Duration, repeat: u32, pinned: bool) -> Result<Window> {
    if pinned {
        pin_to_cpu(0, 0)?;
    }
    let (start, runnable0) = (Instant::now(), runnable_time()?);
    let (mut packets, mut kernel) = (0u64, Duration::ZERO);
    while start.elapsed() < window {
        let (v, per, _) = h.run_harnessed_at(ifindex, frame, repeat)?;
        ensure!(v == XDP_REDIRECT, "established flow: verdict {v} instead of XDP_REDIRECT (flow gone?)");
        packets += u64::from(repeat);
        kernel += per * repeat;
    }
    let (wall, runnable) = (start.elapsed(), runnable_time()? - runnable0);
    Ok(Window {
        pps: packets as f64 / wall.as_secs_f64(),
        ns: kernel.as_nanos() as f64 / packets as f64,
        pps_runnable: packets as f64 / runnable.min(wall).as_secs_f64(),
    })
}

/// The index of interface `name` in this network namespace.
fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a NUL-terminated name; no other effect.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    ensure!(i != 0, "no interface {name}");
    Ok(i)
}

pub fn run(
    config: &Config,
    server_pid: u32,
    rt: &tokio::runtime::Runtime,
    client: &mut Client,
    program: &mut Harness,
) -> Result<Results> {
    let pinned = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) >= 2;
    let mut frame = udp(FLOW_SRC, FLOW_DST, 4000, 53, 64);
    let ip = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("ip").args(args).output().context("running ip")?;
        ensure!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    ip(&["link", "add", EST_IF, "type", "veth", "peer", "name", "est1"])?;
    ip(&["link", "set", EST_IF, "up"])?;
    ip(&["link", "set", "est1", "up"])?;
    let est_index = ifindex(EST_IF)?;
    // Addressed to the interface's own MAC, as a frame it receives is.
    // (`ip`, not /sys/class/net: sysfs shows the namespace the bench was started in.)
    let out = std::process::Command::new("ip").args(["-o", "link", "show", EST_IF]).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mac = text.split("link/ether ").nth(1).and_then(|t| t.split_whitespace().next()).context("est0's MAC")?;
    for (i, byte) in mac.split(':').enumerate().take(6) {
        frame[i] = u8::from_str_radix(byte, 16)?;
    }
    rt.block_on(async {
        client
            .interfaces
            .add_interface(pb::AddInterfaceRequest {
                name: EST_IF.into(),
                xdp_mode: pb::XdpMode::Generic as i32,
                ..Default::default()
            })
            .await?;
        client
            .flows
            .set_flow_mode(pb::SetFlowModeRequest { interface: EST_IF.into(), enabled: true, ..Default::default() })
            .await?;
        let key = pb::FlowKey {
            vrf: 0,
            src: Ipv4Addr::from(FLOW_SRC).to_string(),
            dst: Ipv4Addr::from(FLOW_DST).to_string(),
            protocol: 17,
            src_port: 4000,
            dst_port: 53,
        };
        let flow =
            pb::Flow { key: Some(key), action: pb::FlowAction::Forward as i32, next_hop: 1, ..Default::default() };
        client.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow], ..Default::default() }).await?;
        client
            .flows
            .set_flow_mode(pb::SetFlowModeRequest {
                interface: "lo".into(),
                enabled: true,
                hold_cap: HOLD_CAP,
                punt_rate: PUNT_RATE,
                punt_burst: PUNT_BURST,
                ..Default::default()
            })
            .await?;
        anyhow::Ok(())
    })?;
    program.set_harness_frame(&frame)?;
    let harness: &Harness = program;
    // The established flow is forwarded by its flow: out to next hop 1's MAC.
    let (v, _, out) = harness.run_harnessed_at(est_index, &frame, 1)?;
    ensure!(
        v == XDP_REDIRECT && out[..6] == [2, 0, 0, 0, 0, 1],
        "the established flow is not forwarded by its flow: verdict {v}"
    );
    let mut results = Results {
        runs: config.runs,
        window_s: config.window.as_secs_f64(),
        repeat: config.repeat,
        quiet_mpps: vec![],
        storm_mpps: vec![],
        quiet_runnable_mpps: vec![],
        storm_runnable_mpps: vec![],
        quiet_ns: vec![],
        storm_ns: vec![],
        misses: vec![],
        punted: vec![],
        dropped_rate: vec![],
        dropped_cap: vec![],
        dropped_ring: vec![],
        server_cpu_quiet: vec![],
        server_cpu_storm: vec![],
    };
    let next = AtomicU64::new(0);
    for run in 0..config.runs {
        let (quiet, cpu_quiet) = with_cpu(server_pid, || {
            std::thread::scope(|s| {
                s.spawn(|| established(harness, est_index, &frame, config.window, config.repeat, pinned)).join()
            })
            .map_err(|_| anyhow::anyhow!("measuring thread panicked"))?
        })?;
        results.quiet_mpps.push(quiet.pps / 1e6);
        results.quiet_ns.push(quiet.ns);
        results.quiet_runnable_mpps.push(quiet.pps_runnable / 1e6);

        // The storm, then the same window measured while it runs.
        let stop = AtomicBool::new(false);
        let sent = AtomicU64::new(0);
        let (before, after, measured, storm) = std::thread::scope(|s| {
            let storm = s.spawn(|| -> Result<()> {
                if pinned {
                    pin_to_cpu(0, 1)?;
                }
                while !stop.load(Ordering::Relaxed) {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let (v, _) = harness.try_run(&storm_frame(n))?;
                    ensure!(v != XDP_REDIRECT, "a storm packet was forwarded: not a miss");
                    sent.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            });
            let mut measure = || -> Result<_> {
                std::thread::sleep(Duration::from_millis(100));
                // The storm's count is read just before and just after the counters, so what the
                // counters say lies between the two (reading them takes a gRPC call, during which
                // the storm goes on).
                let mut snapshot = || -> Result<_> {
                    let (lo, t) = (sent.load(Ordering::Relaxed), Instant::now());
                    let r = rt.block_on(reasons(client, "lo"))?;
                    Ok((r, (lo, sent.load(Ordering::Relaxed)), t))
                };
                let before = snapshot()?;
                let measured = with_cpu(server_pid, || {
                    s.spawn(|| established(harness, est_index, &frame, config.window, config.repeat, pinned))
                        .join()
                        .map_err(|_| anyhow::anyhow!("measuring thread panicked"))?
                })?;
                let after = snapshot()?;
                Ok((before, after, measured))
            };
            let r = measure();
            stop.store(true, Ordering::Relaxed);
            let storm = storm.join().map_err(|_| anyhow::anyhow!("storm thread panicked"));
            match r {
                Ok((b, a, m)) => Ok((b, a, m, storm)),
                Err(e) => Err(e),
            }
        })?;
        storm??;
        let secs = after.2.duration_since(before.2).as_secs_f64();
        let count = |k: &str| after.0.get(k).copied().unwrap_or(0) - before.0.get(k).copied().unwrap_or(0);
        let delta = |k: &str| count(k) as f64 / secs;
        let misses = (after.1 .0 - before.1 .0) as f64 / secs;
        let (punted, rate, cap, ring, held) = (
            delta("flow_miss_punted"),
            delta("drop_punt_rate"),
            delta("drop_flow_hold_cap"),
            delta("drop_flow_ring_full"),
            delta("drop_flow_held"),
        );
        // Every storm packet is a miss, accounted under exactly one of these: the counters'
        // total must lie between the storm's counts read around them (give or take the one
        // test run in flight, counted by the kernel before the storm thread counts it).
        let accounted: u64 =
            ["flow_miss_punted", "drop_punt_rate", "drop_flow_hold_cap", "drop_flow_ring_full", "drop_flow_held"]
                .iter()
                .map(|k| count(k))
                .sum();
        let (least, most) = (after.1 .0.saturating_sub(before.1 .1 + 1), after.1 .1 + 1 - before.1 .0);
        if misses <= 0.0 || accounted < least || accounted > most {
            bail!("storm: {least} to {most} misses sent, {accounted} accounted as misses by the interface's counters: not the path measured");
        }
        let (measured, cpu_storm) = measured;
        results.storm_mpps.push(measured.pps / 1e6);
        results.storm_ns.push(measured.ns);
        results.storm_runnable_mpps.push(measured.pps_runnable / 1e6);
        results.server_cpu_quiet.push(cpu_quiet);
        results.server_cpu_storm.push(cpu_storm);
        results.misses.push(misses);
        results.punted.push(punted);
        results.dropped_rate.push(rate);
        results.dropped_cap.push(cap);
        results.dropped_ring.push(ring);
        eprintln!(
            "  storm run {run}: established flow {:.3} Mpps ({:.3} runnable, {:.0} ns) quiet, {:.3} Mpps ({:.3} runnable, {:.0} ns) \
             during {misses:.0} misses/s (punted {punted:.0}/s, dropped: rate {rate:.0}/s, cap {cap:.0}/s, ring full {ring:.0}/s, \
             held {held:.0}/s); server CPU {cpu_quiet:.2} quiet, {cpu_storm:.2} during; x{:.2} (x{:.2} runnable)",
            quiet.pps / 1e6,
            quiet.pps_runnable / 1e6,
            quiet.ns,
            measured.pps / 1e6,
            measured.pps_runnable / 1e6,
            measured.ns,
            measured.pps / quiet.pps,
            measured.pps_runnable / quiet.pps_runnable,
        );
    }
    Ok(results)
}
