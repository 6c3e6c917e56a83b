//! `dataplane-server`: loads the eBPF dataplane (adopting what an earlier run left pinned), serves
//! dataplane.v1 over a unix socket (and TCP when asked), and on SIGTERM/SIGINT stops serving and
//! exits, leaving its programs, links and maps pinned and forwarding for the next run to adopt.
//! Only `--reset` (or the Reset RPC) detaches everything and removes the pins.

use std::{
    net::SocketAddr,
    os::unix::fs::{DirBuilderExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};
use dataplane_server::{
    api::{self, ServerInfo},
    dataplane::{loader, KernelDataplane, LoaderConfig},
    domain::{persist, Domain},
    events::{flow_misses, flow_removed, netlink, Hub},
};
use tokio::{net::UnixListener, signal::unix::SignalKind, sync::watch};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tracing::{info, warn};
use tracing_subscriber::EnvFilter;

/// How long shutdown waits for open connections to finish before closing them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Flow misses a subscriber may fall behind by before it loses some (and is told).
const MISS_QUEUE: usize = 4096;
/// Netlink events a subscriber may fall behind by before it loses some (and is told).
const NETLINK_QUEUE: usize = 16384;
/// How often a lazily recorded change (flow installs) reaches the state file.
const FLUSH_PERIOD: Duration = Duration::from_millis(200);
/// Flow removals a subscriber may fall behind by before it loses some (and is told): a deleted
/// next hop removes all its flows at once.
const FLOW_REMOVED_QUEUE: usize = 16384;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Node-local eBPF dataplane server.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Unix socket to serve gRPC on (created mode 0600).
    #[arg(long, default_value = "/run/dataplane/dataplane.sock")]
    grpc_socket: PathBuf,
    /// Also serve gRPC on this TCP address (e.g. 127.0.0.1:50051). Off unless given.
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// Also serve Prometheus metrics (OpenMetrics text, `GET /metrics`) on this TCP address:
    /// counters read from the kernel at each scrape, gRPC calls by method and status code.
    /// Off by default. Plain HTTP with no authentication: bind it to an address only the
    /// scraper reaches.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Streams of each subscription kind (flow misses, netlink events, counter watches,
    /// controller sessions) open at once, per listener; more are refused with
    /// RESOURCE_EXHAUSTED.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_subscribers: u64,
    /// Other calls in flight at once, per listener; more are refused with RESOURCE_EXHAUSTED
    /// (health checks are never refused).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_concurrent_calls: u64,
    /// bpffs directory this server pins its maps, programs and links under.
    #[arg(long, default_value = "/sys/fs/bpf/dataplane")]
    bpffs: PathBuf,
    /// Where the server records what it cannot read back from the kernel (names, ids, policy
    /// rules, the generation), for the next run to adopt. Keep it with the pins: on a tmpfs that
    /// lives as long as the bpffs (a reboot clears both). Default: named after the --bpffs
    /// directory under /run/dataplane/ (`sys-fs-bpf-dataplane.state.json` for the default), so
    /// two dataplanes never share one.
    #[arg(long)]
    state_file: Option<PathBuf>,
    /// Detach the dataplane from every interface, remove its pins and state file, and exit.
    #[arg(long)]
    reset: bool,
    /// A HOLD (a punted miss no controller answered) is removed after this many milliseconds.
    #[arg(long, default_value_t = 5000)]
    flow_hold_timeout_ms: u64,
    /// A flow with no packet for this many seconds is removed (unless it has an idle timeout of
    /// its own).
    #[arg(long, default_value_t = 300)]
    flow_idle_timeout_secs: u64,
    /// How often flows are checked against their timeouts: a flow goes at most this long after
    /// its timeout (a pass over a large table that takes longer spaces the passes more).
    #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    flow_aging_period_ms: u64,
    /// Flow misses queued per subscriber before it starts losing them (and gets `lagged`).
    #[arg(long, default_value_t = MISS_QUEUE, value_parser = clap::value_parser!(usize))]
    flow_miss_queue: usize,
    /// Moderates the flow-miss reader's wakeups, as a NIC moderates its interrupts: while
    /// misses come faster than 20,000 a second, the reader stops waiting for the ring buffer's
    /// wakeups and reads it every this many microseconds instead (a dozen misses a wakeup rather
    /// than one), adding at most that much latency under load; below that rate each miss is read
    /// at once. 0: a wakeup per miss at any rate. At 50,000 misses a second on a 2-vCPU machine,
    /// 200 took the reader from 0.30 of a CPU to 0.13.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    flow_miss_gather_us: u64,
    /// Chunks (1 KiB of kernel memory each) of the pool the VRFs' IPv4 flat tables are built
    /// from, when it is first created (a restarted server keeps the pinned pool's size). A
    /// VRF takes 256 for its root plus one per /16 holding longer prefixes and one per /24
    /// holding longer ones; a VRF that does not fit is looked up in the LPM trie instead.
    #[arg(long, default_value_t = dataplane_common::route::fib4::DEFAULT_CHUNKS, value_parser = clap::value_parser!(u32).range(256..=16_777_216))]
    fib4_chunks: u32,
    /// How often every map pin is checked to still name the map the server writes (and the
    /// programs read); a pin removed or replaced by hand is pinned again and reported in the
    /// status (`pin_health`).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pin_check_period_ms: u64,
    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    init_tracing(args.log_format);
    let state_file = match args.state_file.take() {
        Some(f) => f,
        None => default_state_file(&args.bpffs)?,
    };
    args.state_file = Some(state_file);

    // Claim the socket first: a second server for the same socket must fail before it touches
    // the kernel, and must never remove the socket of the one already running.
    let unix = bind_unix(&args.grpc_socket)?;
    if args.reset {
        // No server runs on this socket (we hold it), so nothing else holds these links.
        let r = reset(&args);
        let _ = std::fs::remove_file(&args.grpc_socket);
        return r;
    }
    let result = match start(&args) {
        Ok(domain) => {
            let info = ServerInfo { version: env!("CARGO_PKG_VERSION").to_owned(), kernel_version: kernel_release() };
            // Whatever happens to serving, the dataplane stays: links, programs and maps are
            // pinned, and the next run adopts them (or `--reset` removes them).
            serve(&args, unix, domain, info).await
        }
        Err(e) => Err(e),
    };
    let _ = std::fs::remove_file(&args.grpc_socket);
    info!("stopped");
    result
}

/// Loads (adopting what an earlier run pinned) and rebuilds the domain from the state file.
fn start(args: &Args) -> anyhow::Result<Arc<Domain<KernelDataplane>>> {
    // Read first: a state file this build cannot read must stop us before anything changes (one
    // that is not JSON at all is set aside: the pinned maps still hold what forwards).
    let state_file = args.state_file();
    let loaded = persist::load(state_file).context("reading the state file")?;
    // The file's record of which object the pinned programs came from is trusted (to adopt them
    // without verifying) only if the file describes these very pins.
    let pinned_object = match &loaded {
        persist::Loaded::Read(p) if p.pins.is_none_or(|id| Some(id) == loader::pinned_pins_id(&args.bpffs)) => {
            p.programs_object
        }
        _ => None,
    };
    let dataplane = KernelDataplane::load(&LoaderConfig {
        bpffs_root: args.bpffs.clone(),
        pinned_object,
        fib4_chunks: args.fib4_chunks,
    })
    .context("loading the dataplane")?;
    let report = dataplane.load_report().clone();
    let domain = Arc::new(Domain::with_state_file(dataplane, state_file.to_owned()));
    let restored = domain.restore_loaded(loaded).context("restoring the dataplane's state")?;
    info!(
        adopted_interfaces = report.adopted.len(),
        upgraded = report.upgraded,
        interfaces = restored.interfaces,
        next_hops = restored.nexthops,
        routes = restored.routes,
        policies = restored.policies,
        dropped = restored.dropped.len(),
        adopted = restored.adopted.len(),
        disagreements = restored.disagreements.len(),
        state_file = %restored.state_file,
        pin_repairs = report.pin_repairs.len(),
        rolled_back = ?restored.rolled_back.as_ref().map(|r| r.generation),
        "started"
    );
    Ok(domain)
}

impl Args {
    /// `--state-file`, or its default (filled in by `main`).
    fn state_file(&self) -> &Path {
        self.state_file.as_deref().expect("main fills in the default")
    }
}

/// Where builds before the per-directory default kept the state file of every dataplane.
const OLD_DEFAULT_STATE_FILE: &str = "/run/dataplane/state.json";
/// The `--bpffs` default, whose dataplane the old default file belonged to.
const DEFAULT_BPFFS: &str = "/sys/fs/bpf/dataplane";

/// The state file of the dataplane pinned under `bpffs`: `/run/dataplane/<bpffs escaped>.state.json`,
/// the escaping systemd's (`/` -> `-`, other bytes than `[A-Za-z0-9_.]` as `\xNN`), so that
/// distinct directories never share a file. The old shared default is moved to the default
/// directory's own name once, when that is the directory in use.
fn default_state_file(bpffs: &Path) -> anyhow::Result<PathBuf> {
    let mut name = String::new();
    for (i, b) in bpffs.to_string_lossy().trim_matches('/').bytes().enumerate() {
        match b {
            b'/' => name.push('-'),
            b'.' if i == 0 => name.push_str("\\x2e"),
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => name.push(b as char),
            b => name.push_str(&format!("\\x{b:02x}")),
        }
    }
    let path = Path::new("/run/dataplane").join(format!("{name}.state.json"));
    let old = Path::new(OLD_DEFAULT_STATE_FILE);
    if bpffs == Path::new(DEFAULT_BPFFS) && !path.exists() && old.exists() {
        std::fs::rename(old, &path).with_context(|| format!("moving {} to {}", old.display(), path.display()))?;
        info!(from = %old.display(), to = %path.display(), "state file moved to its per-directory default");
    }
    Ok(path)
}

fn reset(args: &Args) -> anyhow::Result<()> {
    loader::remove_all_pins(&args.bpffs).context("removing pins")?;
    // The intent record too: rolled back over a fresh dataplane, it would write stale values.
    let state_file = args.state_file();
    for path in [state_file.to_owned(), dataplane_server::domain::intent::path_for(state_file)] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(anyhow::Error::new(e).context(format!("removing {}", path.display()))),
        }
    }
    info!(bpffs = %args.bpffs.display(), "reset: every link, program and map pin removed");
    Ok(())
}

async fn serve(
    args: &Args,
    unix: UnixListener,
    domain: Arc<Domain<KernelDataplane>>,
    info: ServerInfo,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    info!(socket = %args.grpc_socket.display(), version = %info.version, "serving gRPC");

    // Flow misses: read from the kernel's ring buffer, kept by the domain, fanned out to every
    // subscriber; flows age out in the background, and every removal is fanned out too.
    let misses = Arc::new(persistent_hub(&domain, args.flow_miss_queue.max(1), "flow_misses"));
    let gather = Duration::from_micros(args.flow_miss_gather_us);
    flow_misses::spawn_reader(domain.dataplane().flow_miss_reader()?, domain.clone(), misses.clone(), gather)
        .context("polling the flow-miss ring buffer")?;
    let flow_removed = Arc::new(persistent_hub(&domain, FLOW_REMOVED_QUEUE, "flow_removed"));
    flow_removed::connect(&domain, flow_removed.clone());
    flow_misses::spawn_aging(
        domain.clone(),
        Duration::from_millis(args.flow_aging_period_ms),
        Duration::from_millis(args.flow_hold_timeout_ms),
        Duration::from_secs(args.flow_idle_timeout_secs),
    );

    // Netlink: the kernel's links, addresses, routes and neighbours, for subscribers and for the
    // domain (owned links that go or change, gateway next hops).
    let netlink_hub = Arc::new(persistent_hub(&domain, NETLINK_QUEUE, "netlink"));
    let netlink_listener = netlink::start(domain.clone(), netlink_hub.clone()).await.context("listening to netlink")?;
    let events = api::EventSources { misses, flow_removed, netlink: netlink_hub, netlink_listener };

    // Flow installs record the generation lazily: within FLUSH_PERIOD.
    let flusher = domain.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_PERIOD);
        loop {
            tick.tick().await;
            let d = flusher.clone();
            let _ = tokio::task::spawn_blocking(move || d.flush()).await;
        }
    });

    // Pins removed or replaced while the server runs: pinned again before a restart (or
    // anything else reading the pins) could split the control plane from XDP.
    let checker = domain.clone();
    let period = Duration::from_millis(args.pin_check_period_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let d = checker.clone();
            match tokio::task::spawn_blocking(move || d.check_pins()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => warn!(error = %e, "pin check failed"),
                Err(e) => warn!(error = %e, "pin check task failed"),
            }
        }
    });

    // Calls are counted whether or not anyone scrapes them.
    let rpc = Arc::new(dataplane_server::metrics::RpcMetrics::default());
    if let Some(addr) = args.metrics_listen {
        let hubs = events.clone();
        let subscribers: dataplane_server::metrics::Subscribers = Arc::new(move || {
            vec![
                ("flow_misses", hubs.misses.subscribers()),
                ("flow_removed", hubs.flow_removed.subscribers()),
                ("netlink", hubs.netlink.subscribers()),
            ]
        });
        let registry = dataplane_server::metrics::registry(domain.clone(), rpc.clone(), subscribers);
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr} for metrics"))?;
        info!(%addr, "serving metrics at /metrics");
        tokio::spawn(dataplane_server::metrics::http::serve(listener, Arc::new(registry)));
    }

    let (exit_tx, mut exit_rx) = watch::channel(false);
    let limits = api::limits::Limits {
        max_subscribers: args.max_subscribers as usize,
        max_concurrent_calls: args.max_concurrent_calls as usize,
    };
    let (router, _health) =
        api::router(domain.clone(), events.clone(), info.clone(), exit_tx.clone(), rpc.clone(), limits).await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(router.serve_with_incoming_shutdown(UnixListenerStream::new(unix), stopped(stop_rx.clone())));
    if let Some(addr) = args.grpc_listen {
        let tcp = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        info!(%addr, "serving gRPC on TCP");
        let (router, _) = api::router(domain.clone(), events, info, exit_tx, rpc, limits).await?;
        tasks.spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(tcp), stopped(stop_rx)));
    }

    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: shutting down"),
        _ = int.recv() => info!("SIGINT: shutting down"),
        _ = exit_rx.wait_for(|e| *e) => info!("reset: shutting down"),
        Some(r) = tasks.join_next() => {
            r.context("server task")?.context("gRPC server")?;
            bail!("gRPC server stopped unexpectedly");
        }
    }
    let _ = stop_tx.send(true);
    // Graceful: in-flight RPCs finish, but a client that never closes its connection must not
    // hold the shutdown hostage.
    let drain = async {
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r.context("server task").and_then(|r| r.context("gRPC server")) {
                warn!(error = %e, "server ended with an error");
            }
        }
    };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        warn!(grace = ?SHUTDOWN_GRACE, "connections still open after the grace period; closing them");
    }
    Ok(())
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// An event hub whose sequence numbers continue across restarts of the server.
fn persistent_hub<T: Send + Sync + 'static>(
    domain: &Arc<Domain<KernelDataplane>>,
    capacity: usize,
    stream: &'static str,
) -> Hub<T> {
    let d = domain.clone();
    Hub::persistent(capacity, domain.seq_floor(stream), Box::new(move |floor| d.reserve_seq(stream, floor)))
}

/// How long a start waits for a socket whose server may be dying (a restart right after SIGKILL).
const SOCKET_HOLDER_EXIT_WAIT: Duration = Duration::from_secs(3);

fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        // Only a socket is ours to replace: anything else at that path is someone's file.
        if !meta.file_type().is_socket() {
            bail!(
                "{} exists and is not a socket: refusing to replace it (choose another --grpc-socket)",
                path.display()
            );
        }
        // A server killed a moment ago still accepts until its exit closes the socket: give it
        // that moment before calling the socket live.
        let deadline = std::time::Instant::now() + SOCKET_HOLDER_EXIT_WAIT;
        while std::os::unix::net::UnixStream::connect(path).is_ok() {
            if std::time::Instant::now() >= deadline {
                bail!("another server is already listening on {}", path.display());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        warn!(socket = %path.display(), "removing stale socket");
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    Ok(listener)
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn kernel_release() -> String {
    // SAFETY: uname fills the zeroed struct; release is NUL-terminated by the kernel.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return "unknown".to_owned();
    }
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) };
    release.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_state_file_distinct_pin_dirs_get_distinct_files() {
        let file = |d: &str| default_state_file(Path::new(d)).unwrap().display().to_string();
        assert_eq!(file("/sys/fs/bpf/dp-a"), "/run/dataplane/sys-fs-bpf-dp\\x2da.state.json");
        // "/" and "-" must not collide.
        assert_ne!(file("/sys/fs/bpf/a-b"), file("/sys/fs/bpf/a/b"));
        assert_ne!(file("/sys/fs/bpf/x"), file("/sys/fs/bpf/y"));
    }
}
