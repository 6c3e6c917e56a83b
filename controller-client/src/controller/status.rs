//! What the controller reports about itself: the file it applies and, per node, connection
//! state, generation, resyncs, applies and flow decisions. Served as JSON over HTTP on a unix
//! socket (`dataplane-controller status`, or `curl --unix-socket PATH http://c/status`).

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixListener,
};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ControllerStatus {
    pub file: String,
    /// Versions of the file accepted so far (1 = the one read at start).
    pub file_version: u64,
    pub file_loaded_ms: u64,
    /// Why the file's latest content was refused (the previous version stays applied).
    pub file_error: Option<String>,
    pub nodes: BTreeMap<String, NodeStatus>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub server: String,
    /// connecting, standby (another controller is the node's primary), resyncing, ready,
    /// disconnected.
    pub state: String,
    /// The node's server run (new at each of its starts).
    #[serde(default)]
    pub instance_id: String,
    pub connected: bool,
    pub connected_since_ms: u64,
    /// Sessions that completed their resync.
    pub sessions: u64,
    pub resyncs: u64,
    pub applies: u64,
    /// The node's generation after the last write the controller made.
    pub generation: u64,
    pub last_resync: Option<ResyncReport>,
    pub last_apply: Option<ApplyReport>,
    pub last_error: Option<String>,
    pub last_error_ms: u64,
    pub flows: FlowCounters,
    /// Misses decided by each flow rule, by index in the file.
    pub rule_hits: Vec<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ResyncReport {
    pub at_ms: u64,
    pub generation_before: u64,
    pub generation_after: u64,
    /// Stale objects EndResync removed.
    pub removed: u64,
    pub kept: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ApplyReport {
    pub at_ms: u64,
    pub rpcs: usize,
    pub objects: usize,
    pub generation: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FlowCounters {
    /// Misses decided (each counted once below as forwarded, dropped, no_route, stale or failed).
    pub misses: u64,
    pub forwarded: u64,
    pub dropped: u64,
    /// A forward rule matched but the node has no route to the destination: dropped.
    pub no_route: u64,
    /// The held miss was gone when its flow was installed (expired, or answered already).
    pub stale: u64,
    pub failed: u64,
    /// Misses no rule matched (dropped).
    pub no_rule: u64,
    /// Copies from PUNT policy rules (nothing held, nothing to decide).
    pub punts: u64,
    /// Installed flows rewritten because the rules or routes changed their answer.
    pub redecided: u64,
    /// Misses the server's queue for this controller lost, and the table scans that followed.
    pub lagged: u64,
    pub lag_resyncs: u64,
    /// Installed flows the node announced removed (timeouts, deletions, evictions).
    #[serde(default)]
    pub removed: u64,
}

/// The status, shared by the node sessions and the status server.
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<ControllerStatus>>);

impl Shared {
    pub fn update<R>(&self, f: impl FnOnce(&mut ControllerStatus) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn node(&self, name: &str, f: impl FnOnce(&mut NodeStatus)) {
        self.update(|s| f(s.nodes.entry(name.to_owned()).or_default()));
    }

    pub fn snapshot(&self) -> ControllerStatus {
        self.update(|s| s.clone())
    }
}

/// Binds the status socket. One a live process answers on belongs to another controller: that
/// is refused (two controllers would fight over the same nodes); a stale one is replaced.
pub async fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if tokio::net::UnixStream::connect(path).await.is_ok() {
        return Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "another controller is running and serves it"));
    }
    let _ = std::fs::remove_file(path);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    UnixListener::bind(path)
}

/// Serves the status as HTTP/1.0 JSON responses on `listener`, one per connection.
pub async fn serve(listener: UnixListener, status: Shared) -> std::io::Result<()> {
    loop {
        let (mut conn, _) = listener.accept().await?;
        let body =
            serde_json::to_string_pretty(&status.snapshot()).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
        tokio::spawn(async move {
            // The request itself does not matter: read what came, answer.
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_millis(200), conn.read(&mut buf)).await;
            let head =
                format!("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len());
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// Reads a running controller's status from its socket.
pub async fn fetch(path: &Path) -> std::io::Result<ControllerStatus> {
    let mut conn = tokio::net::UnixStream::connect(path).await?;
    conn.write_all(b"GET /status HTTP/1.0\r\n\r\n").await?;
    let mut text = String::new();
    conn.read_to_string(&mut text).await?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or(&text);
    serde_json::from_str(body).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
