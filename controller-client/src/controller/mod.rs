//! The reference controller (`dataplane-controller`): one declarative file, many nodes. Each
//! node gets a session that resyncs it on every (re)connect, applies each new version of the
//! file as a diff, and answers its flow misses by the file's flow rules.

pub mod config;
pub mod desired;
pub mod plan;
pub mod session;
pub mod status;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{sync::watch, task::JoinHandle};
use tracing::{error, info};

pub use config::ConfigError;
pub use desired::Desired;
use status::{now_ms, Shared};

/// How often the file is checked for a change. Polling the content (rather than inotify)
/// follows editors that replace the file and ConfigMap-style symlink swaps alike.
const POLL: Duration = Duration::from_millis(200);

/// Why the controller did not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("status socket {path}: {source}")]
    StatusSocket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the controller until the process is stopped: sessions for the file's nodes, the file
/// watched, the status served on `status_socket`.
pub async fn run(file: PathBuf, status_socket: Option<PathBuf>, identity: session::Identity) -> Result<(), RunError> {
    let first = config::load(&file)?;
    let shared = Shared::default();
    shared.update(|s| {
        s.file = file.display().to_string();
        s.file_version = 1;
        s.file_loaded_ms = now_ms();
    });
    info!(file = %file.display(), nodes = first.nodes.len(), "file loaded");
    if let Some(path) = status_socket {
        let listener =
            status::bind(&path).await.map_err(|source| RunError::StatusSocket { path: path.clone(), source })?;
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = status::serve(listener, shared).await {
                error!(socket = %path.display(), error = %e, "status socket failed");
            }
        });
    }
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut sessions: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut last_text = std::fs::read(&file).ok();
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        let current = rx.borrow().clone();
        for name in current.nodes.keys() {
            if sessions.get(name).is_none_or(|h| h.is_finished()) {
                info!(node = %name, "managing node");
                sessions.insert(
                    name.clone(),
                    tokio::spawn(session::run(name.clone(), rx.clone(), shared.clone(), identity.clone())),
                );
            }
        }
        sessions.retain(|name, _| current.nodes.contains_key(name));
        shared.update(|s| s.nodes.retain(|n, _| current.nodes.contains_key(n)));

        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = async {
                match hangup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending().await,
                }
            } => {
                info!("SIGHUP: reading the file");
                last_text = None;
            }
        }
        let text = std::fs::read(&file).ok();
        if text.is_none() || text == last_text {
            continue;
        }
        last_text = text;
        reload(&file, &tx, &shared);
    }
}

/// Reads the file again; a valid new version goes to every session, an invalid one is
/// reported and changes nothing.
fn reload(file: &Path, tx: &watch::Sender<Arc<Desired>>, shared: &Shared) {
    match config::load(file) {
        Ok(next) => {
            shared.update(|s| s.file_error = None);
            if **tx.borrow() == next {
                return;
            }
            let version = shared.update(|s| {
                s.file_version += 1;
                s.file_loaded_ms = now_ms();
                s.file_version
            });
            info!(file = %file.display(), version, "file changed: applying");
            tx.send_replace(Arc::new(next));
        }
        Err(e) => {
            error!(error = %e, "file refused; the previous version stays applied");
            shared.update(|s| s.file_error = Some(e.to_string()));
        }
    }
}
