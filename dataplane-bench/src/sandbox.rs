//! Where the benchmarks run: a network namespace private to this process (lo plus a veth pair)
//! and the dataplane loaded into it, driven through the server's own domain layer, so routes and
//! next hops reach the maps exactly as `AddRoutes`/`AddNextHops` put them there.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use anyhow::{bail, Context, Result};
use dataplane_server::{
    dataplane::{KernelDataplane, LoaderConfig, XdpMode},
    domain::{AddInterface, Domain, InterfaceName},
};

/// The flat tables' pool: room for VRF 0 with the largest route table the bench installs.
pub const FIB4_CHUNKS: u32 = 1 << 17;

/// Egress interface of every benchmark next hop; attached first, so it holds interface slot 0,
/// the `TX_PORTS` entry the bare-redirect baseline uses.
pub const EGRESS: &str = "bench0";

/// Moves the calling process into a new network namespace of its own.
pub fn enter_private_netns() -> Result<()> {
    // SAFETY: plain syscall; called before any other thread exists.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("unshare(CLONE_NEWNET) (run as root)");
    }
    for args in [
        &["link", "set", "lo", "up"][..],
        &["link", "add", EGRESS, "type", "veth", "peer", "name", "bench1"],
        &["link", "set", EGRESS, "up"],
        &["link", "set", "bench1", "up"],
    ] {
        let status = Command::new("ip").args(args).status().context("running ip")?;
        if !status.success() {
            bail!("ip {} failed: {status}", args.join(" "));
        }
    }
    Ok(())
}

/// The dataplane loaded with its pins under a directory of this process; unloads and unpins on
/// drop.
pub struct Sandbox {
    pub domain: Domain<KernelDataplane>,
    bpffs: PathBuf,
}

impl Sandbox {
    /// Loads the programs and attaches [`EGRESS`] (slot 0) and `lo` (the ingress interface of
    /// every test run) in VRF 0.
    pub fn new() -> Result<Self> {
        let bpffs = PathBuf::from(format!("/sys/fs/bpf/dataplane-bench-{}", std::process::id()));
        eprintln!("pins: {}", bpffs.display());
        remove_on_signal(bpffs.clone())?;
        let dataplane = KernelDataplane::load(&LoaderConfig {
            bpffs_root: bpffs.clone(),
            pinned_object: None,
            fib4_chunks: FIB4_CHUNKS,
        })?;
        let sandbox = Self { domain: Domain::new(dataplane), bpffs };
        for name in [EGRESS, "lo"] {
            sandbox.domain.add_interface(AddInterface {
                name: InterfaceName::parse("name", name)?,
                mode: XdpMode::Auto,
                vrf: 0,
            })?;
        }
        Ok(sandbox)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Detaches and removes every pin: nothing of the bench outlives it.
        dataplane_server::dataplane::Lifecycle::reset(self.domain.dataplane());
        let _ = std::fs::remove_dir(&self.bpffs);
        forget_pins(&self.bpffs);
    }
}

/// Server processes the bench started and has not stopped yet.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
/// bpffs directories the bench (or a server it started) pins under, not removed yet.
static PINS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

pub fn remember_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

pub fn forget_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid);
}

pub fn remember_pins(dir: &Path) {
    PINS.lock().unwrap_or_else(|e| e.into_inner()).push(dir.to_owned());
}

pub fn forget_pins(dir: &Path) {
    PINS.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| p != dir);
}

/// Removes what a bench killed outright (SIGKILL) left behind: its named namespaces and its
/// bpffs pins (`/sys/fs/bpf/dataplane-bench-<pid>[-<tag>]` of a pid that no longer runs).
pub fn remove_stale() {
    crate::netns::remove_stale();
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else { return };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("dataplane-bench-").and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale pins {}", entry.path().display());
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Ctrl-C or SIGTERM: stop the servers, remove the pins (a million routes are a lot of kernel
/// memory to leak) and the named namespaces, and exit; the private namespace goes with the
/// process. Signals are blocked in every thread and taken by one thread with `sigwait`, so the
/// cleanup runs as ordinary code, not in a handler.
fn remove_on_signal(bpffs: PathBuf) -> Result<()> {
    remember_pins(&bpffs);
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the mask is set
    // for this (the main) thread and inherited by the thread spawned after it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            bail!("pthread_sigmask failed");
        }
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid signal set; `sig` a valid out pointer.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            for pid in CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                // SAFETY: signalling and reaping our own children.
                unsafe {
                    libc::kill(*pid as i32, libc::SIGTERM);
                    libc::waitpid(*pid as i32, std::ptr::null_mut(), 0);
                }
            }
            for dir in PINS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = std::fs::remove_dir_all(dir);
                eprintln!("interrupted: removed {}", dir.display());
            }
            crate::netns::delete_all();
            std::process::exit(130);
        }
    });
    Ok(())
}
