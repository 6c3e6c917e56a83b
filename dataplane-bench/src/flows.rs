//! Flow setup through the whole loop: a flow miss (BPF_PROG_TEST_RUN of the server's own
//! `dp_xdp_ingress` over its pins) -> ring buffer -> server -> gRPC stream -> a Rust controller
//! -> InstallFlows -> the next packet of the flow hits it. Next to it, in the same run, the
//! control path alone: the same controller calling InstallFlows for as many flows, one per call.
//! Also the miss-to-event latency (test run issued -> event received by the controller). The
//! miss-storm case (`storm`) runs on the same server afterwards.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use controller_client::{pb, stream_channel::StreamChannel, Client, ServerAddress};

use crate::setups::frame;

const XDP_REDIRECT: u32 = 4;

/// Most misses per batch the bench's controller asks for.
const MAX_BATCH: u32 = 256;

pub struct Config {
    pub flows: usize,
    /// Isolated misses timed, and misses timed at the sustained rate.
    pub latency_misses: u32,
    pub sustained_misses: u32,
    pub sustained_pps: u32,
    /// Flows the Python controller sets up.
    pub python_flows: u32,
    pub runs: usize,
    /// Routes per run of the control-path case.
    pub routes: usize,
    /// IPv4 routes the server holds when its memory is read last (topped up after the runs).
    pub memory_routes: usize,
    /// The miss-storm case.
    pub storm: crate::storm::Config,
}

pub struct Results {
    pub flows: usize,
    /// Flow setups per second through the whole loop, per run.
    pub setups: Vec<f64>,
    /// The same controller deciding as many flows by key (no miss), per second, per run.
    pub installs: Vec<f64>,
    /// Average misses per batch, per run.
    pub batch_sizes: Vec<f64>,
    /// Packets next hop 1 sent (held first packets and check packets), and how many expected.
    pub delivered: u64,
    pub expected_delivered: u64,
    /// Miss-to-controller latencies, microseconds: isolated misses, and at `sustained_pps`.
    pub latency_us: Vec<f64>,
    pub sustained_latency_us: Vec<f64>,
    pub sustained_pps: u32,
    /// Misses sent at the sustained rate (those not timed found the ring buffer full).
    pub sustained_sent: u32,
    /// Flow setups per second with the Python controller answering, and how many flows.
    pub python: f64,
    pub python_flows: u32,
    /// Routes per run of the control-path case.
    pub routes: usize,
    /// Routes per second: AddRoutes in batches of 10,000 over the unix socket, per run.
    pub add_routes: Vec<f64>,
    /// Routes per second: `ip -batch` into the kernel FIB of the bench's namespace, per run.
    pub ip_batch: Vec<f64>,
    /// Routes per second: raw bpf(2) writes into a fresh LPM trie of `ROUTES_V4`'s layout, per
    /// run, and whether the kernel took them as batches.
    pub raw_map: Vec<f64>,
    pub raw_map_batched: bool,
    /// Server memory: idle (just started), before the route runs (after the storm), and with
    /// `memory_routes` IPv4 routes.
    pub memory: [Memory; 3],
    /// IPv4 routes the server held when its memory was read last.
    pub memory_routes: usize,
    /// Established flows with and without a miss storm.
    pub storm: Option<crate::storm::Results>,
}

/// A `dataplane-server` process, in the bench's network namespace or in a named one; killed and
/// unpinned on drop (and by the sandbox's signal thread on Ctrl-C).
pub struct ServerProcess {
    pub child: Child,
    pub dir: PathBuf,
    pub bpffs: PathBuf,
}

impl ServerProcess {
    /// The server's gRPC address.
    pub fn address(&self) -> Result<ServerAddress> {
        Ok(format!("unix:{}", self.dir.join("sock").display()).parse()?)
    }

    /// A client, once the server answers (it loads and verifies its programs first).
    pub async fn connect(&self) -> Result<Client> {
        let address = self.address()?;
        for _ in 0..400 {
            if let Ok(mut c) = Client::connect(&address).await {
                if c.system.get_status(pb::GetStatusRequest {}).await.is_ok() {
                    return Ok(c);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server did not come up (see {})", self.dir.join("server.log").display())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        crate::sandbox::forget_child(self.child.id());
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_dir_all(&self.bpffs);
        crate::sandbox::forget_pins(&self.bpffs);
    }
}

/// Starts `dataplane-server` (the release build next to this binary) with its socket, state file
/// and log under a directory of its own and its pins under `/sys/fs/bpf/dataplane-bench-<pid>-<tag>`;
/// in the named namespace `netns` when given (`nsenter --net`, keeping the root mount namespace
/// and so the host's bpffs), in the bench's own otherwise.
pub fn start_server(tag: &str, netns: Option<&str>) -> Result<ServerProcess> {
    let exe = std::env::current_exe()?.with_file_name("dataplane-server");
    ensure!(exe.exists(), "{} not built (cargo build -p dataplane-server)", exe.display());
    let dir = std::env::temp_dir().join(format!("dataplane-bench-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/dataplane-bench-{}-{tag}", std::process::id()));
    eprintln!("pins: {}", bpffs.display());
    crate::sandbox::remember_pins(&bpffs);
    let mut cmd = match netns {
        Some(ns) => {
            // nsenter execs the server (no fork for a network namespace): the child is the server.
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    // SAFETY: only async-signal-safe calls between fork and exec. The bench blocks SIGINT and
    // SIGTERM (a thread takes them with sigwait); the server must get them again.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd
        .args([
            "--grpc-socket",
            dir.join("sock").to_str().unwrap(),
            "--bpffs",
            bpffs.to_str().unwrap(),
            "--state-file",
            dir.join("state.json").to_str().unwrap(),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .spawn()
        .context("starting dataplane-server")?;
    crate::sandbox::remember_child(child.id());
    Ok(ServerProcess { child, dir, bpffs })
}

pub fn run(config: &Config) -> Result<Results> {
    let server = start_server("server", None)?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut client = rt.block_on(server.connect())?;
    let idle = Memory::of(server.child.id());
    rt.block_on(async {
        client.interfaces.add_interface(pb::AddInterfaceRequest { name: "lo".into(), ..Default::default() }).await?;
        let nh = integration::encap_nexthop(1, "lo", "02:00:00:00:00:01");
        client
            .routing
            .add_next_hops(pb::AddNextHopsRequest { next_hops: vec![nh], replace: false, ..Default::default() })
            .await?;
        client
            .routing
            .add_routes(pb::AddRoutesRequest {
                routes: vec![pb::Route { vrf: 0, prefix: "0.0.0.0/0".into(), next_hop: 1 }],
                replace: false,
                ..Default::default()
            })
            .await?;
        client
            .flows
            .set_flow_mode(pb::SetFlowModeRequest {
                interface: "lo".into(),
                enabled: true,
                hold_cap: 1_000_000,
                punt_rate: 1_000_000,
                punt_burst: 1_000_000,
                ..Default::default()
            })
            .await?;
        anyhow::Ok(())
    })?;
    let mut program = integration::Harness::over_pins(&server.bpffs)?.with_bench_harness()?;
    let mut results = Results {
        flows: config.flows,
        setups: Vec::new(),
        installs: Vec::new(),
        batch_sizes: Vec::new(),
        delivered: 0,
        expected_delivered: 0,
        latency_us: Vec::new(),
        sustained_latency_us: Vec::new(),
        sustained_pps: 0,
        sustained_sent: 0,
        python: 0.0,
        python_flows: 0,
        routes: config.routes,
        add_routes: Vec::new(),
        ip_batch: Vec::new(),
        raw_map: Vec::new(),
        raw_map_batched: false,
        memory: [idle, Memory::default(), Memory::default()],
        memory_routes: 0,
        storm: None,
    };
    let n = config.flows as u32;
    let mut session = rt.block_on(StreamChannel::open(
        &client,
        "",
        1,
        pb::SessionConfig { max_batch: MAX_BATCH, ..Default::default() },
    ))?;
    let before = rt.block_on(crate::setups::nexthop_packets(&mut client))?;
    for run in 0..config.runs as u32 {
        let base = run * 2 * n;
        let (lp, s) = crate::setups::run_loop(&rt, &program, session, base, n)?;
        // Every flow is now hit by its next packet.
        for i in 0..n {
            let (v, out) = program.try_run(&frame(base + i))?;
            ensure!(v == XDP_REDIRECT && out[..6] == [2, 0, 0, 0, 0, 1], "flow {} not forwarded by its flow", base + i);
        }
        let batch = (u64::from(n) / lp.batches.max(1)).max(1) as usize;
        let (install, s) = crate::setups::run_install_alone(&rt, s, base + n, n, batch)?;
        session = s;
        results.setups.push(lp.rate);
        results.installs.push(install);
        results.batch_sizes.push(batch as f64);
        eprintln!(
            "  flows run {run}: {:.0} setups/s through the loop ({} miss batches, {batch} misses each on average), {install:.0}/s decided by key alone",
            lp.rate, lp.batches
        );
    }
    // Each run's held first packets went out through next hop 1 (re-injected), and each
    // flow's check packet too: 2 per flow.
    let after = rt.block_on(crate::setups::nexthop_packets(&mut client))?;
    results.delivered = after - before;
    results.expected_delivered = 2 * u64::from(n) * config.runs as u64;
    ensure!(
        results.delivered == results.expected_delivered,
        "next hop 1 sent {} packets, {} expected: a held first packet was lost",
        results.delivered,
        results.expected_delivered
    );
    let lat_base = 2 * n * config.runs as u32;
    let (lat, s) = crate::setups::latency(&rt, &program, session, lat_base, config.latency_misses, None)?;
    results.latency_us = lat;
    let (lat, s) = crate::setups::latency(
        &rt,
        &program,
        s,
        lat_base + config.latency_misses,
        config.sustained_misses,
        Some(config.sustained_pps),
    )?;
    results.sustained_latency_us = lat;
    results.sustained_sent = config.sustained_misses;
    results.sustained_pps = config.sustained_pps;
    // The Python controller takes over (a higher election id) for its flows and goes; the
    // bench's session is the primary again once it has gone.
    let py_base = lat_base + config.latency_misses + config.sustained_misses;
    results.python = crate::setups::python_rate(
        &rt,
        &program,
        &mut client,
        &server.dir.join("sock"),
        py_base,
        config.python_flows,
        2,
    )?;
    results.python_flows = config.python_flows;
    eprintln!("  Python controller: {:.0} setups/s ({} flows)", results.python, config.python_flows);
    let mut s = s;
    rt.block_on(async {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.next()).await.context("primary again")?? {
                Some(pb::session_response::Kind::Arbitration(a)) if a.primary => return anyhow::Ok(()),
                Some(_) => continue,
                None => bail!("the session ended"),
            }
        }
    })?;
    // The session stays primary to the end: the cases after this one write with its id.
    let mut client = s.client();
    let _session = s;
    eprintln!(
        "miss storm: {} runs of {:?} quiet + {:?} storm",
        config.storm.runs, config.storm.window, config.storm.window
    );
    results.storm = Some(crate::storm::run(&config.storm, server.child.id(), &rt, &mut client, &mut program)?);
    control_path(config, &rt, &mut client, &server, &mut results)?;
    drop(client);
    drop(rt);
    drop(server);
    Ok(results)
}

/// Routes per second through the API (AddRoutes batches of 10,000, each run into a VRF of its
/// own) next to `ip -batch` adding the same prefixes to a kernel table of the bench's own
/// namespace; and the server's RSS before and after.
fn control_path(
    config: &Config,
    rt: &tokio::runtime::Runtime,
    client: &mut Client,
    server: &ServerProcess,
    results: &mut Results,
) -> Result<()> {
    // The storm case before this one leaves the server busy for a while (held frames timing
    // out, the ring draining): measured then, the first run was 20x slower than the others.
    let waited = settle(server.child.id());
    eprintln!("  server idle after {:.1} s", waited.as_secs_f64());
    results.memory[1] = Memory::of(server.child.id());
    for run in 0..config.runs as u32 {
        // Distinct /24s from 10.0.0.0 up (a kernel table and a VRF of their own per run).
        let prefixes: Vec<String> =
            (0..config.routes as u32).map(|i| format!("{}/24", Ipv4Addr::from(0x0a00_0000 + (i << 8)))).collect();
        let vrf = 100 + run;
        let rate = rt.block_on(async {
            client.routing.add_vrf(pb::AddVrfRequest { id: vrf, ..Default::default() }).await?;
            let start = Instant::now();
            for chunk in prefixes.chunks(10_000) {
                let routes = chunk.iter().map(|p| pb::Route { vrf, prefix: p.clone(), next_hop: 1 }).collect();
                client
                    .routing
                    .add_routes(pb::AddRoutesRequest { routes, replace: false, ..Default::default() })
                    .await?;
            }
            anyhow::Ok(prefixes.len() as f64 / start.elapsed().as_secs_f64())
        })?;
        results.add_routes.push(rate);

        let file = server.dir.join(format!("routes-{run}.batch"));
        let script: String = prefixes.iter().map(|p| format!("route add {p} dev lo table {}\n", 1000 + run)).collect();
        std::fs::write(&file, script)?;
        let start = Instant::now();
        let out = Command::new("ip").args(["-batch", file.to_str().unwrap()]).output()?;
        ensure!(out.status.success(), "ip -batch: {}", String::from_utf8_lossy(&out.stderr));
        let ip_rate = prefixes.len() as f64 / start.elapsed().as_secs_f64();
        results.ip_batch.push(ip_rate);
        let addrs: Vec<Ipv4Addr> = (0..config.routes as u32).map(|i| Ipv4Addr::from(0x0a00_0000 + (i << 8))).collect();
        let (raw_rate, method) = crate::rawmap::insert(&addrs, vrf)?;
        results.raw_map.push(raw_rate);
        results.raw_map_batched = method == crate::rawmap::Method::Batch;
        eprintln!(
            "  routes run {run}: {rate:.0}/s through AddRoutes, {ip_rate:.0}/s through ip -batch, {raw_rate:.0}/s raw map writes ({method:?}) ({} routes)",
            prefixes.len()
        );
    }
    // Topped up to `memory_routes` IPv4 routes (untimed), in a VRF of their own.
    let have = config.routes * config.runs;
    let more = config.memory_routes.saturating_sub(have);
    rt.block_on(async {
        client.routing.add_vrf(pb::AddVrfRequest { id: 99, ..Default::default() }).await?;
        let prefixes: Vec<u32> = (0..more as u32).map(|i| 0x0a00_0000 + (i << 8)).collect();
        for chunk in prefixes.chunks(100_000) {
            let routes = chunk
                .iter()
                .map(|a| pb::Route { vrf: 99, prefix: format!("{}/24", Ipv4Addr::from(*a)), next_hop: 1 })
                .collect();
            client.routing.add_routes(pb::AddRoutesRequest { routes, replace: false, ..Default::default() }).await?;
        }
        anyhow::Ok(())
    })?;
    results.memory_routes = have + more;
    results.memory[2] = Memory::of(server.child.id());
    Ok(())
}

/// A process's memory (KiB): resident in all, and its private (anonymous) part.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub anon_kib: u64,
}

impl Memory {
    fn of(pid: u32) -> Self {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| -> u64 {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0)
        };
        Self { rss_kib: field("VmRSS:"), anon_kib: field("RssAnon:") }
    }
}

/// Waits (at most 15 s) until process `pid` uses no CPU tick in 200 ms; how long it took.
fn settle(pid: u32) -> std::time::Duration {
    let cpu = || -> u64 {
        // utime + stime, fields 14 and 15 of /proc/PID/stat (after the parenthesised name).
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.split_whitespace().collect::<Vec<_>>();
                Some(rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    };
    // SAFETY: sysconf is always safe to call.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let start = Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(15) {
        let before = cpu();
        std::thread::sleep(std::time::Duration::from_millis(200));
        // No tick of CPU time in 200 ms (the tick, 10 ms at 100 Hz, is the resolution there is).
        if (cpu() - before) * 1000 / hz < 2 {
            break;
        }
    }
    start.elapsed()
}

/// Percentile `p` (0-100) of `v`.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[i]
}
