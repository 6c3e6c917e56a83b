//! One owner per pin directory: an exclusive `flock` on the bpffs root, held for the life of the
//! dataplane that loaded from it (and by `--reset` while it removes the pins). A second server, or
//! a stray `--reset`, against a directory a live server owns is refused, naming the holder's pid,
//! before it changes anything: two writers of the same maps would each undo what the other wrote.
//!
//! The kernel drops the lock when its holder dies, however it dies; a restart right after a
//! SIGKILL may still find it held for the moment the dying process takes to exit, so taking it
//! waits briefly before giving up.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::Path,
    time::{Duration, Instant},
};

use super::DataplaneError;

/// How long a start waits for a holder that may be dying (a restart right after SIGKILL).
pub const HOLDER_EXIT_WAIT: Duration = Duration::from_secs(3);

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct PinLock {
    _dir: File,
}

impl PinLock {
    /// Takes the lock on directory `root` (which must exist), waiting up to `wait` for a holder
    /// to go away.
    pub fn acquire(root: &Path, wait: Duration) -> Result<Self, DataplaneError> {
        let io = |op: &'static str| move |source| DataplaneError::Io { path: root.to_owned(), op, source };
        let dir = File::open(root).map_err(io("open pin directory"))?;
        let deadline = Instant::now() + wait;
        loop {
            // SAFETY: flock on a descriptor we own; no memory is passed.
            if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { _dir: dir });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io("flock")(e));
            }
            if Instant::now() >= deadline {
                return Err(DataplaneError::PinsInUse { path: root.to_owned(), holder: holder(root) });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Who holds the lock on `root`, as `/proc/locks` tells: "pid N", or a plain "another process"
/// when it cannot be told (the holder in another pid namespace, or gone meanwhile).
fn holder(root: &Path) -> String {
    let Ok(meta) = std::fs::metadata(root) else { return "another process".into() };
    // `/proc/locks` names the file as major:minor:inode, the device numbers in hex.
    let dev = meta.dev();
    let id = format!("{:02x}:{:02x}:{}", libc::major(dev), libc::minor(dev), meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks_holder(&locks, &id).map_or_else(|| "another process".into(), |pid| format!("pid {pid}"))
}

/// The pid of the FLOCK entry on file `id` (major:minor:inode) in `/proc/locks` text.
fn locks_holder(locks: &str, id: &str) -> Option<u32> {
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF" (blocked waiters have "->" first).
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 6 && f[1] == "FLOCK" && f[5] == id).then(|| f[4].parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_holder_finds_flock_on_the_file_only() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:2a:5678 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 00:2a:5678 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 99 00:2a:9999 0 EOF\n";
        assert_eq!(locks_holder(locks, "00:2a:5678"), Some(4242));
        assert_eq!(locks_holder(locks, "00:2a:1"), None);
    }

    #[test]
    fn acquire_held_directory_refused_naming_holder_then_free_after_drop() {
        let dir = std::env::temp_dir().join(format!("pinlock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = PinLock::acquire(&dir, Duration::ZERO).unwrap();
        let e = PinLock::acquire(&dir, Duration::from_millis(100)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        drop(first);
        PinLock::acquire(&dir, Duration::ZERO).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }
}
