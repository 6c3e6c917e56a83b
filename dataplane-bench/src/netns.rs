//! Named network namespaces the bench creates with `ip netns add` (apart from the private,
//! unnamed one the process itself runs in): `dpbench-<pid>-<role>`, deleted on drop, on Ctrl-C /
//! SIGTERM (the sandbox's signal thread calls [`delete_all`]) and, when a bench was killed
//! outright, by the next run ([`remove_stale`]). Work inside one runs on a thread of its own
//! that `setns`es into it, so no other thread ever changes namespace.

use std::{fs::File, os::fd::AsRawFd, process::Command, sync::Mutex};

use anyhow::{bail, Context, Result};

const PREFIX: &str = "dpbench-";

/// Every namespace this process created and has not deleted yet.
static CREATED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Runs a command; its stdout, or an error with its stderr.
pub use integration::run;

/// Deletes every namespace this process still has (signal path; best effort).
pub fn delete_all() {
    let names = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    for name in names {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
    }
}

/// Deletes namespaces left by benches that no longer run (killed with SIGKILL, say).
pub fn remove_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else { return };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing stale namespace {name}");
            let _ = run("ip", &["netns", "del", name]);
        }
    }
}

/// A named network namespace, deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// `dpbench-<pid>-<role>`, with `lo` up and IPv6 off (no router solicitations or MLD
    /// reports: interface counters count the benchmark's frames only).
    pub fn create(role: &str) -> Result<Self> {
        let name = format!("{PREFIX}{}-{role}", std::process::id());
        run("ip", &["netns", "add", &name])?;
        CREATED.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.sysctl("net/ipv6/conf/all/disable_ipv6", "1")?;
        ns.sysctl("net/ipv6/conf/default/disable_ipv6", "1")?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n <ns> args...`
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all).map(drop)
    }

    /// A command run in the namespace (`nsenter --net`: the root mount namespace, so /sys and
    /// bpffs stay the host's; use [`NetNs::exec_sysfs`] for the namespace's own /sys).
    pub fn exec(&self, cmd: &[&str]) -> Result<String> {
        let net = format!("--net=/run/netns/{}", self.name);
        let mut all = vec![net.as_str(), "--"];
        all.extend_from_slice(cmd);
        run("nsenter", &all)
    }

    /// A shell command run by `ip netns exec`, which mounts the namespace's own /sys.
    pub fn exec_sysfs(&self, script: &str) -> Result<()> {
        run("ip", &["netns", "exec", &self.name, "sh", "-c", script]).map(drop)
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        let file = self.file()?;
        std::thread::scope(|s| {
            s.spawn(move || {
                join(&file)?;
                f()
            })
            .join()
            .unwrap_or_else(|_| bail!("thread in {} panicked", self.name))
        })
    }

    /// The namespace's file, for [`join`] from a thread of the caller's.
    pub fn file(&self) -> Result<File> {
        File::open(format!("/run/netns/{}", self.name)).with_context(|| format!("opening namespace {}", self.name))
    }

    /// Writes `/proc/sys/<key>` in the namespace.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{key}");
        self.enter(|| std::fs::write(&path, value).with_context(|| format!("writing {path}")))
    }

    /// A file under the namespace's `/proc/net` (e.g. `dev`, `snmp`).
    pub fn proc_net(&self, file: &str) -> Result<String> {
        let path = format!("/proc/thread-self/net/{file}");
        self.enter(|| std::fs::read_to_string(&path).with_context(|| format!("reading {path}")))
    }

    /// `rx_packets` of `dev`, from the namespace's `/proc/net/dev`.
    pub fn rx_packets(&self, dev: &str) -> Result<u64> {
        let text = self.proc_net("dev")?;
        let line = text
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(&format!("{dev}:")))
            .with_context(|| format!("{dev} not in /proc/net/dev of {}", self.name))?;
        line.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("bad /proc/net/dev line for {dev}: {line}"))
    }

    /// `Ip: ForwDatagrams` of the namespace (`/proc/net/snmp`): IPv4 datagrams its kernel
    /// forwarded.
    pub fn ip_forwarded(&self) -> Result<u64> {
        snmp_field(&self.proc_net("snmp")?, "Ip", "ForwDatagrams")
    }

    /// `rx_queue_<n>_<name>` of `ethtool -S dev` summed over the receive queues (veth:
    /// `xdp_packets`, `xdp_redirect`, `xdp_drops`, ...).
    pub fn ethtool_rx_stat(&self, dev: &str, name: &str) -> Result<u64> {
        let text = self.exec(&["ethtool", "-S", dev])?;
        let suffix = format!("_{name}");
        let values: Vec<u64> = text
            .lines()
            .filter_map(|l| l.trim().split_once(':'))
            .filter(|(k, _)| {
                k.strip_prefix("rx_queue_")
                    .and_then(|r| r.strip_suffix(suffix.as_str()))
                    .is_some_and(|q| q.parse::<u32>().is_ok())
            })
            .map(|(_, v)| v.trim().parse().unwrap_or(0))
            .collect();
        anyhow::ensure!(!values.is_empty(), "no rx_queue_*{suffix} in ethtool -S {dev}:\n{text}");
        Ok(values.iter().sum())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("warning: deleting namespace {}: {e}", self.name);
        }
        CREATED.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| n != &self.name);
    }
}

/// Moves the calling thread into the namespace of `file` (a thread of its own: the others stay).
pub fn join(file: &File) -> Result<()> {
    // SAFETY: plain syscall on a valid namespace fd; affects the calling thread only.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setns");
    }
    Ok(())
}

/// Pins thread `tid` (0: the calling thread) to `cpu`.
pub fn pin_to_cpu(tid: i32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data, set up by CPU_ZERO/CPU_SET before use.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("pinning {tid} to CPU {cpu}"));
        }
    }
    Ok(())
}

/// A field of `/proc/net/snmp` (a header line and a value line per protocol).
fn snmp_field(text: &str, proto: &str, field: &str) -> Result<u64> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines().filter(|l| l.starts_with(&prefix));
    let (Some(head), Some(vals)) = (lines.next(), lines.next()) else { bail!("no {proto} in /proc/net/snmp") };
    let i = head.split_whitespace().position(|h| h == field).with_context(|| format!("no {proto} {field}"))?;
    vals.split_whitespace().nth(i).and_then(|v| v.parse().ok()).with_context(|| format!("bad {proto} {field}"))
}
