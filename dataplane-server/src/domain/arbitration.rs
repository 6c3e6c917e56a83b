//! Controller arbitration (P4Runtime's primary election, gRIBI's single primary): per role, the
//! open session with the highest election id is the primary, the others are backups. Writes are
//! fenced: while a role has a primary, only a write carrying the primary's id goes through.
//!
//! Kept apart from the domain's state lock: a write's fence check and a session's join or leave
//! never wait behind a batch being applied.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use tokio::sync::watch;

use super::DomainError;

/// An election id (P4Runtime's 128-bit `Uint128`); zero is not an id.
pub type ElectionId = u128;

/// Who a write says it comes from (gRPC metadata `dataplane-role`, `dataplane-election-id`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Caller {
    pub role: String,
    pub election_id: Option<ElectionId>,
}

/// What a session has been sent and lost, and decided (for `GetStatus`).
#[derive(Debug, Default)]
pub struct SessionCounters {
    pub misses: AtomicU64,
    pub lost: AtomicU64,
    pub decisions: AtomicU64,
}

/// One open session as `GetStatus` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionView {
    pub role: String,
    pub election_id: ElectionId,
    pub primary: bool,
    pub misses: u64,
    pub lost: u64,
    pub decisions: u64,
}

/// A session's seat in its role, held for as long as the session is open: dropping it leaves
/// the role (and elects the next primary).
pub struct Seat {
    arbiter: Arc<Arbiter>,
    role: String,
    id: ElectionId,
    /// The role's primary, for the session to announce each change.
    primary: watch::Receiver<Option<ElectionId>>,
    counters: Arc<SessionCounters>,
}

impl Seat {
    pub fn role(&self) -> &str {
        &self.role
    }

    pub fn election_id(&self) -> ElectionId {
        self.id
    }

    pub fn is_primary(&self) -> bool {
        *self.primary.borrow() == Some(self.id)
    }

    /// The role's primary now.
    pub fn primary(&self) -> Option<ElectionId> {
        *self.primary.borrow()
    }

    /// Resolves when the role's primary changes (then read [`Self::primary`]).
    pub async fn primary_changed(&mut self) {
        // The sender lives in the arbiter, which the seat keeps alive: never closed.
        let _ = self.primary.changed().await;
    }

    /// A receiver of the role's primary, for a task other than the seat's holder to watch.
    pub fn watch_primary(&self) -> watch::Receiver<Option<ElectionId>> {
        self.primary.clone()
    }

    pub fn counters(&self) -> &Arc<SessionCounters> {
        &self.counters
    }

    /// Takes a new election id in the same role (a backup raising its id to take over).
    pub fn change_id(&mut self, id: ElectionId) -> Result<(), DomainError> {
        if id == self.id {
            return Ok(());
        }
        let mut roles = self.arbiter.lock();
        let role = roles.get_mut(&self.role).expect("a seat's role exists while the seat does");
        check_id(role, &self.role, id)?;
        role.sessions.remove(&self.id);
        role.sessions.insert(id, self.counters.clone());
        self.id = id;
        role.elect();
        Ok(())
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        let mut roles = self.arbiter.lock();
        if let Some(role) = roles.get_mut(&self.role) {
            role.sessions.remove(&self.id);
            role.elect();
        }
    }
}

/// A role's open sessions.
struct Role {
    sessions: BTreeMap<ElectionId, Arc<SessionCounters>>,
    primary: watch::Sender<Option<ElectionId>>,
}

impl Role {
    /// Announces the highest id as primary, if that changed.
    fn elect(&mut self) {
        let top = self.sessions.keys().next_back().copied();
        self.primary.send_if_modified(|p| {
            let changed = *p != top;
            *p = top;
            changed
        });
    }
}

fn check_id(role: &Role, name: &str, id: ElectionId) -> Result<(), DomainError> {
    if id == 0 {
        return Err(DomainError::invalid("arbitration.election_id", "must not be zero"));
    }
    if role.sessions.contains_key(&id) {
        return Err(DomainError::AlreadyExists {
            kind: "session with election id",
            name: format!("{id} in role {name:?}"),
        }
        .at("arbitration.election_id"));
    }
    Ok(())
}

/// Every role's sessions.
#[derive(Default)]
pub struct Arbiter {
    roles: Mutex<HashMap<String, Role>>,
}

impl Arbiter {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Role>> {
        self.roles.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens a session in `role` with election id `id`; ALREADY_EXISTS if another open session
    /// of the role has that id.
    pub fn join(self: &Arc<Self>, role: &str, id: ElectionId) -> Result<Seat, DomainError> {
        let mut roles = self.lock();
        let entry = roles
            .entry(role.to_owned())
            .or_insert_with(|| Role { sessions: BTreeMap::new(), primary: watch::Sender::new(None) });
        check_id(entry, role, id)?;
        let counters = Arc::new(SessionCounters::default());
        entry.sessions.insert(id, counters.clone());
        entry.elect();
        let primary = entry.primary.subscribe();
        Ok(Seat { arbiter: self.clone(), role: role.to_owned(), id, primary, counters })
    }

    /// The role's primary, if it has one.
    pub fn primary(&self, role: &str) -> Option<ElectionId> {
        self.lock().get(role).and_then(|r| *r.primary.borrow())
    }

    /// Whether `caller` may write: PERMISSION_DENIED, naming why, if not.
    pub fn check_write(&self, caller: &Caller) -> Result<(), DomainError> {
        match (self.primary(&caller.role), caller.election_id) {
            (None, None) => Ok(()),
            (Some(p), Some(id)) if p == id => Ok(()),
            (Some(p), Some(id)) => Err(DomainError::PermissionDenied(format!(
                "election id {id} is not the primary of role {:?} (the primary's is {p})",
                caller.role
            ))),
            (Some(p), None) => Err(DomainError::PermissionDenied(format!(
                "role {:?} has a primary controller (election id {p}): a write must carry its id in metadata \
                 dataplane-election-id",
                caller.role
            ))),
            (None, Some(id)) => Err(DomainError::PermissionDenied(format!(
                "election id {id}: no session of role {:?} is open with it (a controller writes with its id while its \
                 session is primary)",
                caller.role
            ))),
        }
    }

    /// Every open session, by role and election id.
    pub fn sessions(&self) -> Vec<SessionView> {
        let roles = self.lock();
        let mut out: Vec<_> = roles
            .iter()
            .flat_map(|(name, r)| {
                let p = *r.primary.borrow();
                r.sessions.iter().map(move |(id, c)| SessionView {
                    role: name.clone(),
                    election_id: *id,
                    primary: p == Some(*id),
                    misses: c.misses.load(Ordering::Relaxed),
                    lost: c.lost.load(Ordering::Relaxed),
                    decisions: c.decisions.load(Ordering::Relaxed),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.role, a.election_id).cmp(&(&b.role, b.election_id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ErrorKind;

    fn caller(role: &str, id: Option<u128>) -> Caller {
        Caller { role: role.into(), election_id: id }
    }

    #[test]
    fn arbiter_highest_id_is_primary_and_leaving_elects_next() {
        let a = Arc::new(Arbiter::default());
        let s1 = a.join("", 1).unwrap();
        assert!(s1.is_primary());
        let s5 = a.join("", 5).unwrap();
        assert!(s5.is_primary() && !s1.is_primary());
        let s3 = a.join("", 3).unwrap();
        assert_eq!(a.primary(""), Some(5));
        drop(s5);
        assert!(s3.is_primary());
        let seen: Vec<_> = a.sessions().into_iter().map(|v| (v.election_id, v.primary)).collect();
        assert_eq!(seen, vec![(1, false), (3, true)]);
        drop(s3);
        drop(s1);
        assert_eq!(a.primary(""), None);
    }

    #[test]
    fn arbiter_duplicate_id_in_role_refused_other_role_fine() {
        let a = Arc::new(Arbiter::default());
        let _s = a.join("", 7).unwrap();
        assert_eq!(a.join("", 7).err().unwrap().kind(), ErrorKind::AlreadyExists);
        let _other = a.join("mirror", 7).unwrap();
        assert_eq!(a.join("", 0).err().unwrap().kind(), ErrorKind::InvalidArgument);
    }

    #[test]
    fn arbiter_check_write_only_primary_id_while_role_has_primary() {
        let a = Arc::new(Arbiter::default());
        a.check_write(&caller("", None)).unwrap();
        assert_eq!(a.check_write(&caller("", Some(4))).unwrap_err().kind(), ErrorKind::PermissionDenied);
        let s = a.join("", 4).unwrap();
        let _b = a.join("", 2).unwrap();
        a.check_write(&caller("", Some(4))).unwrap();
        for c in [caller("", None), caller("", Some(2)), caller("", Some(9))] {
            assert_eq!(a.check_write(&c).unwrap_err().kind(), ErrorKind::PermissionDenied, "{c:?}");
        }
        // Another role's writes are not fenced by this one.
        a.check_write(&caller("other", None)).unwrap();
        drop(s);
        a.check_write(&caller("", Some(2))).unwrap();
    }

    #[tokio::test]
    async fn seat_change_id_takes_over_and_is_announced() {
        let a = Arc::new(Arbiter::default());
        let s9 = a.join("", 9).unwrap();
        let mut s2 = a.join("", 2).unwrap();
        let mut watcher = a.join("", 1).unwrap();
        assert_eq!(s2.change_id(9).unwrap_err().kind(), ErrorKind::AlreadyExists);
        s2.change_id(10).unwrap();
        watcher.primary_changed().await;
        assert_eq!(watcher.primary(), Some(10));
        assert!(s2.is_primary() && !s9.is_primary());
    }
}
