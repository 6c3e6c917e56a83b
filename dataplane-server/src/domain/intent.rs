//! The crash journal: a batch's intent record, so that a batch is entirely in or entirely out
//! after the server dies (SIGKILL) at any instant of it.
//!
//! The in-process undo log (`txn::Journal`) takes a batch back when a kernel write fails, but
//! not when the process dies half-way: the pinned maps then keep what was written so far. So
//! before the first kernel write of a batch that makes more than one, the domain writes the
//! batch's intent beside the state file (`<state-file>.intent`): the generation
//! the batch commits as, and the undo operations of every write it plans, in the order they must
//! run. The commit point is the generation (see `Domain::bump`: the state file with the new
//! generation is written before the kernel's `GENERATION` word; flows commit by that word). The
//! intent is removed once the batch committed, or once a failed batch was undone in process.
//!
//! At start, before the restore reads the maps ([`Domain::recover_intent`]): an intent whose
//! generation the state file or the kernel reached is of a committed batch and is removed; any
//! other is rolled back by running its undo operations (each is harmless where its forward write
//! never happened: removing an absent route or flow, clearing a table never written, putting
//! back a value that is still there), then removed. So after a restart the generation says
//! which: unchanged, the batch is absent; one more, it is present. A crash during the rollback
//! leaves the intent in place, and the next start runs it again: each undo operation puts a
//! value back, so running it twice is running it once.
//!
//! The record is a compact binary encoding (varints, raw addresses), written without fsync: it
//! covers the process dying, not the machine (a machine crash loses the page cache, and the
//! pinned maps with it). The file is opened once and rewritten in place: a frame (length, hash,
//! record) written at its start, cleared by zeroing the length. A flow decision batch (many a
//! second) then costs two `pwrite`s, where creating, renaming and removing a file cost three
//! inode operations. A frame cut short (the process died inside the `pwrite`) fails its hash:
//! no kernel write of its batch had started, so it is ignored.

use std::{
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use dataplane_common::{flow::FlowValue, policy::PolicyTable, RouteRecord4};

use super::{txn::KernelOp, Dataplane, Domain, DomainError};
use crate::{
    dataplane::{DataplaneError, FlowKey, NextHopParams, PolicyImage},
    net::{Mac, Prefix},
};

/// First bytes of an intent record, then its format number.
const MAGIC: &[u8; 8] = b"DPINTENT";
const FORMAT: u8 = 1;

/// Where the intent of a domain whose state file is `state_file` lives.
pub fn path_for(state_file: &Path) -> PathBuf {
    let mut s = OsString::from(state_file.as_os_str());
    s.push(".intent");
    PathBuf::from(s)
}

/// Errors reading or writing an intent record.
#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    /// The record could not be read, written, renamed or removed.
    #[error("intent record {path}: {op}: {source}")]
    Io { path: PathBuf, op: &'static str, source: std::io::Error },
    /// Not an intent record of this server (or cut short).
    #[error("intent record {path}: not an intent record of this server: {detail}; the batch it was written for cannot be rolled back: remove it to start with whatever that batch left in the maps")]
    Corrupt { path: PathBuf, detail: String },
}

impl From<IntentError> for DomainError {
    fn from(e: IntentError) -> Self {
        match e {
            IntentError::Io { path, op, source } => {
                DomainError::Internal { source: DataplaneError::Io { path, op, source } }
            }
            corrupt => DomainError::FailedPrecondition(corrupt.to_string()),
        }
    }
}

/// A batch the restore rolled back: what it reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolledBack {
    /// The generation the batch would have committed as (the domain's stays one below it).
    pub generation: u64,
    /// Undo operations run.
    pub ops: usize,
}

/// The intent file, opened on first use and kept.
#[derive(Debug, Default)]
pub(super) struct IntentFile {
    file: std::sync::Mutex<Option<std::fs::File>>,
}

/// Bytes of a frame before its record: the record's length, then its FNV-1a hash.
const FRAME_HEADER: usize = 16;

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

impl IntentFile {
    fn write_at_start(&self, path: &Path, bytes: &[u8]) -> Result<(), IntentError> {
        use std::os::unix::fs::FileExt;
        use std::os::unix::fs::MetadataExt;
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        // A file removed under us (by hand, or a start's recovery in the same process) is
        // opened again: a record in an unlinked inode would be lost to the next start.
        if guard.as_ref().is_some_and(|f| f.metadata().map_or(true, |m| m.nlink() == 0)) {
            *guard = None;
        }
        if guard.is_none() {
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|source| IntentError::Io { path: path.to_owned(), op: "open", source })?;
            *guard = Some(f);
        }
        let f = guard.as_ref().expect("opened above");
        f.write_all_at(bytes, 0).map_err(|source| IntentError::Io { path: path.to_owned(), op: "write", source })
    }

    /// Clears the record: a zero length.
    fn clear(&self) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(f) => f.write_all_at(&[0; FRAME_HEADER], 0),
            None => Ok(()),
        }
    }

    /// Forgets the open file (it was removed: the next intent creates it again).
    fn forget(&self) {
        *self.file.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The record a file holds: `None` for none (empty, cleared, or a frame cut short). Files of
/// builds before frames hold a bare record (it starts with the magic).
fn unframe(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.starts_with(MAGIC) {
        return Some(bytes);
    }
    if bytes.len() < FRAME_HEADER {
        return None;
    }
    let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let hash = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    let record = bytes.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?;
    if len == 0 || fnv1a(record) != hash {
        return None;
    }
    Some(record)
}

/// Whether the file at `path` holds an intent record (tests).
#[cfg(test)]
pub(super) fn recorded(path: &Path) -> bool {
    std::fs::read(path).ok().is_some_and(|b| unframe(&b).is_some())
}

/// An intent on disk for the batch in progress: cleared when dropped, i.e. once the batch
/// committed (held past `bump`) or was undone in process (dropped with its error).
pub(super) struct Pending {
    file: Option<(std::sync::Arc<IntentFile>, PathBuf)>,
}

impl Pending {
    /// No intent (a batch of one write, or a domain without a state file).
    pub(super) fn none() -> Self {
        Self { file: None }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some((file, path)) = self.file.take() else { return };
        if let Err(e) = file.clear() {
            // A leftover intent of a committed batch is cleared at the next start (its
            // generation was reached); of a failed one, rolled back again, harmlessly.
            tracing::warn!(path = %path.display(), error = %e, "clearing the intent record failed");
        }
    }
}

impl<D: Dataplane> Domain<D> {
    /// Writes the intent of a batch about to make `writes` kernel writes, committing as
    /// `generation`, whose undo operations are `undo` (in the order they must run). Nothing is
    /// written for a batch of one write (the kernel makes it whole or not at all) or without a
    /// state file. An error means nothing was written: the batch must not start.
    pub(super) fn intend<'o>(
        &self,
        generation: u64,
        writes: usize,
        undo: impl IntoIterator<Item = &'o KernelOp>,
    ) -> Result<Pending, DomainError> {
        let Some(state_file) = &self.state_file else { return Ok(Pending::none()) };
        if writes < 2 || self.reset_done.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(Pending::none());
        }
        let started = std::time::Instant::now();
        let path = path_for(state_file);
        let record = encode(generation, undo);
        let mut frame = Vec::with_capacity(FRAME_HEADER + record.len());
        frame.extend_from_slice(&(record.len() as u64).to_le_bytes());
        frame.extend_from_slice(&fnv1a(&record).to_le_bytes());
        frame.extend_from_slice(&record);
        self.intent_file.write_at_start(&path, &frame)?;
        let elapsed_us = started.elapsed().as_micros() as u64;
        tracing::debug!(path = %path.display(), generation, bytes = frame.len(), elapsed_us, "intent recorded");
        Ok(Pending { file: Some((self.intent_file.clone(), path)) })
    }

    /// At start, before the maps are read: settles the intent a killed batch left. Committed
    /// (its generation is at most the larger of `file_generation` and the kernel's): removed.
    /// Otherwise rolled back (every undo operation run; one that fails is logged and the others
    /// still run), logged, reported, and removed. `None`: no intent, or a committed one.
    pub(super) fn recover_intent(&self, file_generation: u64) -> Result<Option<RolledBack>, DomainError> {
        let Some(state_file) = &self.state_file else { return Ok(None) };
        let path = path_for(state_file);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(IntentError::Io { path, op: "read", source }.into()),
        };
        self.intent_file.forget();
        let Some(record) = unframe(&bytes) else {
            // Empty, cleared, or cut short before its batch wrote anything.
            std::fs::remove_file(&path).map_err(|source| IntentError::Io { path, op: "remove", source })?;
            return Ok(None);
        };
        let (generation, undo) =
            decode(record).map_err(|detail| IntentError::Corrupt { path: path.clone(), detail })?;
        let reached = file_generation.max(self.dataplane.generation()?);
        let outcome = if reached >= generation {
            tracing::info!(generation, reached, "the batch of the intent record committed before the crash");
            None
        } else {
            let mut failed = 0usize;
            for op in &undo {
                if let Err(e) = op.run(&self.dataplane) {
                    failed += 1;
                    tracing::error!(error = %e, op = %describe(op), "an undo operation of a killed batch failed");
                }
            }
            tracing::warn!(
                generation,
                ops = undo.len(),
                failed,
                stays = generation - 1,
                "a batch cut short by a crash was rolled back: it is absent, the generation stays"
            );
            Some(RolledBack { generation, ops: undo.len() })
        };
        std::fs::remove_file(&path).map_err(|source| IntentError::Io { path, op: "remove", source })?;
        Ok(outcome)
    }
}

/// An operation for a log line: the large ones (100,000 records) by their size.
fn describe(op: &KernelOp) -> String {
    match op {
        KernelOp::Route4Store(records) => format!("Route4Store({} records)", records.len()),
        KernelOp::Route4Clear(slots) => format!("Route4Clear({} slots)", slots.len()),
        KernelOp::WritePolicy(i) => format!("WritePolicy(table {})", i.table),
        KernelOp::ClearPolicy(i) => format!("ClearPolicy(table {})", i.table),
        other => format!("{other:?}"),
    }
}

/// The record's bytes: magic, format, generation, then the operations.
fn encode<'o>(generation: u64, undo: impl IntoIterator<Item = &'o KernelOp>) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(4096));
    w.0.extend_from_slice(MAGIC);
    w.0.push(FORMAT);
    w.u64(generation);
    // The count is not known up front: it follows the operations, after an end mark, so a
    // record cut short is never read as one of fewer operations.
    let mut count = 0u64;
    for op in undo {
        w.op(op);
        count += 1;
    }
    w.u8(END);
    w.u64(count);
    w.0
}

/// The generation and the operations of a record; the reason when it is not one.
fn decode(bytes: &[u8]) -> Result<(u64, Vec<KernelOp>), String> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("wrong magic".into());
    }
    let format = r.u8()?;
    if format != FORMAT {
        return Err(format!("format {format} (this server writes {FORMAT})"));
    }
    let generation = r.u64()?;
    let mut ops = Vec::new();
    loop {
        if r.bytes.get(r.at) == Some(&END) {
            r.at += 1;
            break;
        }
        ops.push(r.op()?);
    }
    let count = r.u64()?;
    if count != ops.len() as u64 {
        return Err(format!("{} operations, the record says {count}", ops.len()));
    }
    if r.at != bytes.len() {
        return Err(format!("{} bytes after the end", bytes.len() - r.at));
    }
    Ok((generation, ops))
}

// Operation tags; never reuse a number (bump FORMAT instead).
const END: u8 = 0;
const INSERT_ROUTE: u8 = 1;
const REMOVE_ROUTE: u8 = 2;
const ROUTE4_RESERVE: u8 = 3;
const ROUTE4_STORE: u8 = 4;
const ROUTE4_CLEAR: u8 = 5;
const SET_NEXTHOP: u8 = 6;
const CLEAR_NEXTHOP: u8 = 7;
const PUT_FLOW: u8 = 8;
const REMOVE_FLOW: u8 = 9;
const SET_POLICY_ATTACHMENT: u8 = 10;
const WRITE_POLICY: u8 = 11;
const CLEAR_POLICY: u8 = 12;
const WAIT_FOR_READERS: u8 = 13;

// Next-hop kinds.
const NH_ENCAP: u8 = 1;
const NH_UNRESOLVED: u8 = 2;
const NH_ECMP: u8 = 3;
const NH_DISCARD: u8 = 4;
const NH_RECEIVE: u8 = 5;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    /// LEB128: slots, VRFs and lengths are small.
    fn u64(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn u32(&mut self, v: u32) {
        self.u64(u64::from(v));
    }

    fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }

    fn ip(&mut self, a: &IpAddr) {
        match a {
            IpAddr::V4(a) => {
                self.0.push(4);
                self.0.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                self.0.push(6);
                self.0.extend_from_slice(&a.octets());
            }
        }
    }

    fn prefix(&mut self, p: &Prefix) {
        self.ip(&p.addr());
        self.0.push(p.len());
    }

    fn mac(&mut self, m: &Mac) {
        self.0.extend_from_slice(&m.0);
    }

    fn flow_key(&mut self, k: &FlowKey) {
        self.u32(k.vrf);
        self.ip(&k.src);
        self.ip(&k.dst);
        self.u8(k.proto);
        self.u32(k.sport.into());
        self.u32(k.dport.into());
    }

    fn record(&mut self, r: &RouteRecord4) {
        self.u32(r.vrf);
        self.0.extend_from_slice(&r.addr);
        self.u8(r.prefix_len);
        self.0.extend_from_slice(&r._pad);
        self.u8(r.flags);
        self.u32(r.nexthop);
    }

    fn u32s(&mut self, vs: &[u32]) {
        self.len(vs.len());
        for v in vs {
            self.u32(*v);
        }
    }

    fn image(&mut self, i: &PolicyImage) {
        self.u32(i.table);
        let h = &i.header;
        for v in [h.words, h.summary, h.rule_base, h._pad] {
            self.u32(v);
        }
        self.u32s(&h.fixed);
        self.u32s(&h._pad2);
        self.u32s(&h.proto_class);
        self.u32s(&h.flags_class);
        self.u32(i.pool_base);
        self.len(i.pool.len());
        for v in &i.pool {
            self.u64(*v);
        }
        for side in [&i.src, &i.dst] {
            self.len(side.len());
            for (p, class) in side {
                self.prefix(p);
                self.u32(*class);
            }
        }
        self.len(i.l4.len());
        for (field, value, len, class) in &i.l4 {
            self.u8(*field);
            self.u32((*value).into());
            self.u8(*len);
            self.u32(*class);
        }
        self.u32s(&i.actions);
    }

    fn op(&mut self, op: &KernelOp) {
        match op {
            KernelOp::InsertRoute { vrf, prefix, nexthop_slot } => {
                self.u8(INSERT_ROUTE);
                self.u32(*vrf);
                self.prefix(prefix);
                self.u32(*nexthop_slot);
            }
            KernelOp::RemoveRoute { vrf, prefix } => {
                self.u8(REMOVE_ROUTE);
                self.u32(*vrf);
                self.prefix(prefix);
            }
            KernelOp::Route4Reserve(mark) => {
                self.u8(ROUTE4_RESERVE);
                self.u32(*mark);
            }
            KernelOp::Route4Store(records) => {
                self.u8(ROUTE4_STORE);
                self.len(records.len());
                for (slot, r) in records {
                    self.u32(*slot);
                    self.record(r);
                }
            }
            KernelOp::Route4Clear(slots) => {
                self.u8(ROUTE4_CLEAR);
                self.u32s(slots);
            }
            KernelOp::SetNextHop { slot, params, fresh } => {
                self.u8(SET_NEXTHOP);
                self.u32(*slot);
                self.u8(u8::from(*fresh));
                match params {
                    NextHopParams::Encap { tx_slot, ifindex, mtu, dst_mac, src_mac } => {
                        self.u8(NH_ENCAP);
                        for v in [*tx_slot, *ifindex, *mtu] {
                            self.u32(v);
                        }
                        self.mac(dst_mac);
                        self.mac(src_mac);
                    }
                    NextHopParams::Unresolved { tx_slot, ifindex, mtu, src_mac } => {
                        self.u8(NH_UNRESOLVED);
                        for v in [*tx_slot, *ifindex, *mtu] {
                            self.u32(v);
                        }
                        self.mac(src_mac);
                    }
                    NextHopParams::Ecmp { members } => {
                        self.u8(NH_ECMP);
                        self.u32s(members);
                    }
                    NextHopParams::Discard => self.u8(NH_DISCARD),
                    NextHopParams::Receive => self.u8(NH_RECEIVE),
                }
            }
            KernelOp::ClearNextHop(slot) => {
                self.u8(CLEAR_NEXTHOP);
                self.u32(*slot);
            }
            KernelOp::PutFlow(key, v) => {
                self.u8(PUT_FLOW);
                self.flow_key(key);
                self.u32(v.action);
                self.u32(v.nexthop);
                for x in [v.request_id, v.created_ns, v.last_seen_ns, v.packets, v.bytes] {
                    self.u64(x);
                }
                self.0.extend_from_slice(&v.nat_reserved);
            }
            KernelOp::RemoveFlow(key) => {
                self.u8(REMOVE_FLOW);
                self.flow_key(key);
            }
            KernelOp::SetPolicyAttachment { slot, direction, word } => {
                self.u8(SET_POLICY_ATTACHMENT);
                for v in [*slot, *direction, *word] {
                    self.u32(v);
                }
            }
            KernelOp::WritePolicy(image) => {
                self.u8(WRITE_POLICY);
                self.image(image);
            }
            KernelOp::ClearPolicy(image) => {
                self.u8(CLEAR_POLICY);
                self.image(image);
            }
            KernelOp::WaitForReaders => self.u8(WAIT_FOR_READERS),
        }
    }
}

struct Reader<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("cut short at byte {} (wanted {n} more)", self.at))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("varint too long at byte {}", self.at))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let at = self.at;
        u32::try_from(self.u64()?).map_err(|_| format!("value at byte {at} out of range"))
    }

    fn u16(&mut self) -> Result<u16, String> {
        let at = self.at;
        u16::try_from(self.u64()?).map_err(|_| format!("value at byte {at} out of range"))
    }

    fn len(&mut self) -> Result<usize, String> {
        let at = self.at;
        let n = self.u64()? as usize;
        // Every element takes a byte at least: a length beyond the rest is a corrupt record,
        // not an allocation to try.
        if n > self.bytes.len() - self.at {
            return Err(format!("length {n} at byte {at} beyond the record"));
        }
        Ok(n)
    }

    fn ip(&mut self) -> Result<IpAddr, String> {
        match self.u8()? {
            4 => Ok(IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))),
            6 => Ok(IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))),
            f => Err(format!("address family {f} at byte {}", self.at - 1)),
        }
    }

    fn prefix(&mut self) -> Result<Prefix, String> {
        let addr = self.ip()?;
        let len = self.u8()?;
        Prefix::new(addr, len).map_err(|e| format!("prefix at byte {}: {e}", self.at))
    }

    fn mac(&mut self) -> Result<Mac, String> {
        Ok(Mac(self.array::<6>()?))
    }

    fn flow_key(&mut self) -> Result<FlowKey, String> {
        Ok(FlowKey {
            vrf: self.u32()?,
            src: self.ip()?,
            dst: self.ip()?,
            proto: self.u8()?,
            sport: self.u16()?,
            dport: self.u16()?,
        })
    }

    fn record(&mut self) -> Result<RouteRecord4, String> {
        Ok(RouteRecord4 {
            vrf: self.u32()?,
            addr: self.array::<4>()?,
            prefix_len: self.u8()?,
            _pad: self.array::<2>()?,
            flags: self.u8()?,
            nexthop: self.u32()?,
        })
    }

    fn u32s(&mut self) -> Result<Vec<u32>, String> {
        let n = self.len()?;
        (0..n).map(|_| self.u32()).collect()
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u32; N], String> {
        let at = self.at;
        self.u32s()?.try_into().map_err(|v: Vec<u32>| format!("{} values at byte {at}, expected {N}", v.len()))
    }

    fn image(&mut self) -> Result<PolicyImage, String> {
        let table = self.u32()?;
        let header = PolicyTable {
            words: self.u32()?,
            summary: self.u32()?,
            rule_base: self.u32()?,
            _pad: self.u32()?,
            fixed: self.fixed()?,
            _pad2: self.fixed()?,
            proto_class: self.fixed()?,
            flags_class: self.fixed()?,
        };
        let pool_base = self.u32()?;
        let n = self.len()?;
        let pool = (0..n).map(|_| self.u64()).collect::<Result<_, _>>()?;
        let mut sides = Vec::with_capacity(2);
        for _ in 0..2 {
            let n = self.len()?;
            sides.push((0..n).map(|_| Ok((self.prefix()?, self.u32()?))).collect::<Result<Vec<_>, String>>()?);
        }
        let dst = sides.pop().unwrap_or_default();
        let src = sides.pop().unwrap_or_default();
        let n = self.len()?;
        let l4 = (0..n)
            .map(|_| Ok((self.u8()?, self.u16()?, self.u8()?, self.u32()?)))
            .collect::<Result<Vec<_>, String>>()?;
        let actions = self.u32s()?;
        Ok(PolicyImage { table, header, pool_base, pool, src, dst, l4, actions })
    }

    fn op(&mut self) -> Result<KernelOp, String> {
        let at = self.at;
        Ok(match self.u8()? {
            INSERT_ROUTE => {
                KernelOp::InsertRoute { vrf: self.u32()?, prefix: self.prefix()?, nexthop_slot: self.u32()? }
            }
            REMOVE_ROUTE => KernelOp::RemoveRoute { vrf: self.u32()?, prefix: self.prefix()? },
            ROUTE4_RESERVE => KernelOp::Route4Reserve(self.u32()?),
            ROUTE4_STORE => {
                let n = self.len()?;
                KernelOp::Route4Store((0..n).map(|_| Ok((self.u32()?, self.record()?))).collect::<Result<_, String>>()?)
            }
            ROUTE4_CLEAR => KernelOp::Route4Clear(self.u32s()?),
            SET_NEXTHOP => {
                let slot = self.u32()?;
                let fresh = self.u8()? != 0;
                let params = match self.u8()? {
                    NH_ENCAP => NextHopParams::Encap {
                        tx_slot: self.u32()?,
                        ifindex: self.u32()?,
                        mtu: self.u32()?,
                        dst_mac: self.mac()?,
                        src_mac: self.mac()?,
                    },
                    NH_UNRESOLVED => NextHopParams::Unresolved {
                        tx_slot: self.u32()?,
                        ifindex: self.u32()?,
                        mtu: self.u32()?,
                        src_mac: self.mac()?,
                    },
                    NH_ECMP => NextHopParams::Ecmp { members: self.u32s()? },
                    NH_DISCARD => NextHopParams::Discard,
                    NH_RECEIVE => NextHopParams::Receive,
                    k => return Err(format!("next-hop kind {k} at byte {}", self.at - 1)),
                };
                KernelOp::SetNextHop { slot, params, fresh }
            }
            CLEAR_NEXTHOP => KernelOp::ClearNextHop(self.u32()?),
            PUT_FLOW => {
                let key = self.flow_key()?;
                let v = FlowValue {
                    action: self.u32()?,
                    nexthop: self.u32()?,
                    request_id: self.u64()?,
                    created_ns: self.u64()?,
                    last_seen_ns: self.u64()?,
                    packets: self.u64()?,
                    bytes: self.u64()?,
                    nat_reserved: self.array::<24>()?,
                };
                KernelOp::PutFlow(key, v)
            }
            REMOVE_FLOW => KernelOp::RemoveFlow(self.flow_key()?),
            SET_POLICY_ATTACHMENT => {
                KernelOp::SetPolicyAttachment { slot: self.u32()?, direction: self.u32()?, word: self.u32()? }
            }
            WRITE_POLICY => KernelOp::WritePolicy(Box::new(self.image()?)),
            CLEAR_POLICY => KernelOp::ClearPolicy(Box::new(self.image()?)),
            WAIT_FOR_READERS => KernelOp::WaitForReaders,
            tag => return Err(format!("unknown operation {tag} at byte {at}")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        path::{Path, PathBuf},
        sync::atomic::{AtomicU64, Ordering},
    };

    use super::*;
    use crate::{
        dataplane::XdpMode,
        domain::{
            fake::FakeDataplane, persist, AddInterface, Direction, FlowAction, FlowMode, FlowSpec, FlowTarget,
            InterfaceName, NewNextHop, NextHopSpec, OnExisting, PolicyName, RouteSpec, RuleAction, RuleSpec,
        },
    };

    /// A directory of its own under the system's temporary one, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let dir = std::env::temp_dir().join(format!("dataplane-intent-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn state_file(&self) -> PathBuf {
            self.0.join("state.json")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn name(s: &str) -> InterfaceName {
        InterfaceName::parse("n", s).unwrap()
    }

    fn route(vrf: u32, prefix: &str, nexthop: u32) -> RouteSpec {
        RouteSpec { vrf, prefix: prefix.parse().unwrap(), nexthop }
    }

    fn flow_key(sport: u16) -> FlowKey {
        FlowKey {
            vrf: 0,
            src: "192.0.2.2".parse().unwrap(),
            dst: "198.51.100.2".parse().unwrap(),
            proto: 17,
            sport,
            dport: 7000,
        }
    }

    fn flow(sport: u16, action: FlowAction, reverse: Option<FlowAction>) -> FlowSpec {
        FlowSpec { target: FlowTarget::Key(flow_key(sport)), action, reverse, idle_timeout: None, hard_timeout: None }
    }

    fn rules(n: u16) -> Vec<RuleSpec> {
        (0..n)
            .map(|i| RuleSpec {
                priority: u32::from(i) + 1,
                src: Some(format!("192.0.2.{}/32", i % 250).parse().unwrap()),
                dst: Some("203.0.113.0/24".parse().unwrap()),
                protocol: Some(6),
                src_ports: None,
                dst_ports: Some((1000 + i, 1000 + i)),
                icmp_type: None,
                icmp_code: None,
                tcp_flags: None,
                action: if i % 2 == 0 { RuleAction::Deny } else { RuleAction::Allow },
            })
            .collect()
    }

    /// A domain with a state file, using every concern a batch can touch: two interfaces,
    /// next hops of each kind, IPv4 routes in flat tables (two VRFs) and IPv6 ones in the trie,
    /// an attached policy, flow mode and a flow.
    fn setup(state_file: &Path) -> Domain<FakeDataplane> {
        let d = Domain::with_state_file(FakeDataplane::with_links(&[("eth0", 7), ("eth1", 8)]), state_file.into());
        d.add_vrf(6, crate::domain::VrfMode::Routes).unwrap();
        d.add_interface(AddInterface { name: name("eth0"), mode: XdpMode::Auto, vrf: 0 }).unwrap();
        d.add_interface(AddInterface { name: name("eth1"), mode: XdpMode::Auto, vrf: 6 }).unwrap();
        d.add_nexthops(vec![
            NewNextHop {
                id: 1,
                spec: NextHopSpec::Encap { interface: name("eth0"), dst_mac: Mac([2, 0, 0, 0, 0, 1]), src_mac: None },
            },
            NewNextHop {
                id: 2,
                spec: NextHopSpec::Gateway {
                    interface: name("eth1"),
                    gateway: "192.0.2.1".parse().unwrap(),
                    src_mac: None,
                },
            },
            NewNextHop { id: 3, spec: NextHopSpec::Ecmp { members: vec![1, 2] } },
            NewNextHop { id: 4, spec: NextHopSpec::Discard },
            NewNextHop { id: 5, spec: NextHopSpec::Receive },
            NewNextHop { id: 6, spec: NextHopSpec::Discard },
        ])
        .unwrap();
        d.add_routes(vec![
            route(0, "198.51.100.0/24", 1),
            route(0, "198.51.100.128/25", 3),
            route(0, "2001:db8:1::/48", 2),
            route(6, "203.0.113.0/24", 4),
            route(6, "2001:db8:6::/48", 4),
        ])
        .unwrap();
        let edge = PolicyName::parse("p", "edge").unwrap();
        d.put_policy(edge.clone(), rules(3)).unwrap();
        d.attach_policy(&edge, &name("eth0"), Direction::Ingress, false).unwrap();
        let mode = FlowMode { enabled: true, miss_forward: true, hold_cap: 100, punt_rate: 10, punt_burst: 10 };
        d.set_flow_mode(&name("eth0"), mode).unwrap();
        d.install_flows(vec![flow(1, FlowAction::Forward(1), Some(FlowAction::Drop))]).unwrap();
        // Through next hop 6: deleting it removes the flow in the same batch.
        d.install_flows(vec![flow(4, FlowAction::Forward(6), None)]).unwrap();
        // The volatile flow install in the file too, as the periodic flush would.
        d.flush();
        d
    }

    /// What a client and XDP see: the listings, and what the maps forward by.
    fn observe(d: &Domain<FakeDataplane>) -> String {
        let flows: Vec<_> = d.list_flows(None).unwrap().into_iter().map(|f| (f.key, f.action)).collect();
        format!(
            "{:?}",
            (
                d.list_routes(None, None),
                d.list_nexthops().unwrap(),
                d.list_interfaces(None).unwrap(),
                d.list_policies(None).unwrap(),
                // Without the flat tables' chunk counts: a table cut short by the crash is
                // adopted when it forwards exactly as its routes say, with the chunks the
                // batch had linked in already.
                d.list_vrfs()
                    .into_iter()
                    .map(|v| (v.id, v.mode, v.interfaces, v.routes, v.ipv4_lookup.is_some()))
                    .collect::<Vec<_>>(),
                flows,
                d.dataplane().forwarding(),
            )
        )
    }

    fn generation(d: &Domain<FakeDataplane>) -> u64 {
        d.status().unwrap().generation
    }

    fn copy_if_there(from: &Path, to: &Path) {
        match std::fs::copy(from, to) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("copying {}: {e}", from.display()),
        }
    }

    /// How the crashes of one batch kind ended after the restart.
    #[derive(Debug, Default)]
    struct Outcomes {
        /// The batch absent, its intent rolled back.
        rolled_back: usize,
        /// The batch absent, killed before its intent was written (or before its first write).
        absent: usize,
        /// The batch present.
        present: usize,
    }

    /// Runs `batch` on a `setup` domain with the fake kernel crashing before its first write,
    /// then its second, ... up to its last (its generation's included): each crash leaves the
    /// maps and the files (state file, intent) as they were at that instant, and a new domain
    /// restored over them must list, and forward by, either what the domain had before the
    /// batch (generation unchanged) or what it has after it (generation + 1), nothing between.
    fn crash_at_every_write(batch: impl Fn(&Domain<FakeDataplane>) -> Result<u64, DomainError>) -> Outcomes {
        let clean_dir = TempDir::new();
        let clean = setup(&clean_dir.state_file());
        let (before, g0) = (observe(&clean), generation(&clean));
        let from = clean.dataplane().write_log().len();
        assert_eq!(batch(&clean).expect("the batch succeeds when the kernel does"), g0 + 1);
        let writes = clean.dataplane().write_log().len() - from;
        let after = observe(&clean);
        assert_ne!(before, after, "the batch changes something");
        assert!(!recorded(&path_for(&clean_dir.state_file())), "the intent is removed once the batch committed");

        let mut outcomes = Outcomes::default();
        for n in 1..=writes {
            let dir = TempDir::new();
            let a = setup(&dir.state_file());
            let crash_dir = dir.0.join("crash");
            std::fs::create_dir(&crash_dir).unwrap();
            let crash_file = crash_dir.join("state.json");
            let (file, intent, crash_intent) = (dir.state_file(), path_for(&dir.state_file()), path_for(&crash_file));
            let had_intent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let had = had_intent.clone();
            a.dataplane().crash_at(
                n as i64,
                Box::new(move || {
                    copy_if_there(&file, &crash_file);
                    had.store(recorded(&intent), Ordering::SeqCst);
                    copy_if_there(&intent, &crash_intent);
                }),
            );
            let _ = batch(&a);
            assert!(a.dataplane().has_crashed(), "write {n} of {writes} never came");

            let crash_file = crash_dir.join("state.json");
            let b = Domain::with_state_file(a.dataplane().restarted(), crash_file.clone());
            let report = b.restore(persist::read(&crash_file).unwrap()).unwrap();
            let (got, g) = (observe(&b), generation(&b));
            assert!(!recorded(&path_for(&crash_file)), "crash at write {n}: the intent is removed at start");
            if got == before {
                assert_eq!(g, g0, "crash at write {n} of {writes}: the batch is absent, the generation says present");
                match report.rolled_back {
                    Some(r) => {
                        assert_eq!(r.generation, g0 + 1, "crash at write {n}");
                        outcomes.rolled_back += 1;
                    }
                    None => {
                        assert!(!had_intent.load(Ordering::SeqCst), "crash at write {n}: an intent was left");
                        outcomes.absent += 1;
                    }
                }
            } else if got == after {
                assert_eq!(
                    g,
                    g0 + 1,
                    "crash at write {n} of {writes}: the batch is present, the generation says absent"
                );
                assert_eq!(report.rolled_back, None, "crash at write {n}");
                outcomes.present += 1;
            } else {
                panic!(
                    "crash at write {n} of {writes} ({:?}): neither before nor after\nrestored: {got}\nbefore:   {before}\nafter:    {after}",
                    a.dataplane().write_log().get(from + n - 1)
                );
            }
        }
        outcomes
    }

    #[test]
    fn add_routes_crash_at_every_write_restart_has_batch_whole_or_absent() {
        let o = crash_at_every_write(|d| {
            let mut batch: Vec<RouteSpec> = (0..12).map(|i| route(0, &format!("192.0.2.{}/32", i * 4), 1)).collect();
            batch.extend((0..6).map(|i| route(0, &format!("2001:db8:2:{i}::/64", i = i + 1), 3)));
            batch.extend((0..4).map(|i| route(6, &format!("198.51.100.{}/32", i), 4)));
            batch.push(route(6, "2001:db8:6:1::/64", 5));
            // Replaced in place: a record and a trie entry put back by the rollback.
            batch.push(route(0, "198.51.100.0/24", 4));
            batch.push(route(0, "2001:db8:1::/48", 5));
            d.add_routes_with(batch, OnExisting::Replace)
        });
        assert!(o.rolled_back >= 10 && o.present >= 1, "{o:?}");
    }

    #[test]
    fn delete_routes_crash_at_every_write_restart_has_batch_whole_or_absent() {
        let o = crash_at_every_write(|d| {
            d.delete_routes(&[
                (0, "198.51.100.0/24".parse().unwrap()),
                (0, "2001:db8:1::/48".parse().unwrap()),
                (6, "203.0.113.0/24".parse().unwrap()),
                (6, "2001:db8:6::/48".parse().unwrap()),
            ])
        });
        assert!(o.rolled_back >= 2 && o.present >= 1, "{o:?}");
    }

    #[test]
    fn add_nexthops_crash_at_every_write_restart_has_batch_whole_or_absent() {
        let o = crash_at_every_write(|d| {
            d.add_nexthops_with(
                vec![
                    NewNextHop { id: 10, spec: NextHopSpec::Discard },
                    NewNextHop {
                        id: 11,
                        spec: NextHopSpec::Encap {
                            interface: name("eth1"),
                            dst_mac: Mac([2, 0, 0, 0, 0, 2]),
                            src_mac: None,
                        },
                    },
                    NewNextHop { id: 12, spec: NextHopSpec::Ecmp { members: vec![10, 11, 1] } },
                    // Rewritten in place (same slot).
                    NewNextHop {
                        id: 1,
                        spec: NextHopSpec::Encap {
                            interface: name("eth0"),
                            dst_mac: Mac([2, 0, 0, 0, 0, 9]),
                            src_mac: None,
                        },
                    },
                ],
                OnExisting::Replace,
            )
        });
        assert!(o.rolled_back >= 3 && o.present >= 1, "{o:?}");
    }

    #[test]
    fn delete_nexthops_crash_at_every_write_restart_has_batch_whole_or_absent() {
        let o = crash_at_every_write(|d| d.delete_nexthops(&[5, 6]));
        // The flow through 6, then the two next hops: a crash at the second or third write.
        assert!(o.rolled_back >= 2 && o.present >= 1, "{o:?}");
    }

    #[test]
    fn put_policy_crash_at_every_write_restart_has_batch_whole_or_absent() {
        let o = crash_at_every_write(|d| d.put_policy(PolicyName::parse("p", "edge").unwrap(), rules(40)));
        assert!(o.rolled_back >= 1 && o.present >= 1, "{o:?}");
    }

    #[test]
    fn install_flows_crash_at_every_write_restart_has_batch_whole_or_absent() {
        let o = crash_at_every_write(|d| {
            d.install_flows(vec![
                flow(2, FlowAction::Forward(3), Some(FlowAction::Drop)),
                flow(3, FlowAction::Drop, None),
                // Replaced: put back by the rollback.
                flow(1, FlowAction::Forward(4), None),
            ])
        });
        // Flows commit by the kernel's generation, their last write: a crash at it rolls back.
        assert_eq!((o.rolled_back, o.absent, o.present), (6, 0, 0), "{o:?}");
    }

    #[test]
    fn delete_flows_crash_at_every_write_restart_has_batch_whole_or_absent() {
        let o = crash_at_every_write(|d| d.delete_flows(&[flow_key(1).reversed(), flow_key(1)]));
        // Flows commit by the kernel's generation, their last write: a crash at it rolls back.
        assert_eq!((o.rolled_back, o.absent, o.present), (4, 0, 0), "{o:?}");
    }

    #[test]
    fn encode_every_operation_decodes_to_the_same() {
        let d = Domain::new(FakeDataplane::default());
        d.put_policy(PolicyName::parse("p", "edge").unwrap(), rules(5)).unwrap();
        let image = d.dataplane().policy_tables.lock().unwrap().values().next().cloned().unwrap();
        let v6: Prefix = "2001:db8::/32".parse().unwrap();
        let ops = vec![
            KernelOp::InsertRoute { vrf: 70_000, prefix: v6, nexthop_slot: 65_535 },
            KernelOp::RemoveRoute { vrf: 0, prefix: "0.0.0.0/0".parse().unwrap() },
            KernelOp::Route4Reserve(2_000_000),
            KernelOp::Route4Store(vec![(
                7,
                RouteRecord4 { vrf: 3, addr: [192, 0, 2, 0], prefix_len: 24, _pad: [0; 2], flags: 1, nexthop: 9 },
            )]),
            KernelOp::Route4Clear(vec![0, 127, 128, u32::MAX]),
            KernelOp::SetNextHop {
                slot: 4,
                params: NextHopParams::Encap {
                    tx_slot: 1,
                    ifindex: 7,
                    mtu: 1500,
                    dst_mac: Mac([2, 0, 0, 0, 0, 1]),
                    src_mac: Mac([2, 0, 0, 0, 0, 2]),
                },
                fresh: true,
            },
            KernelOp::SetNextHop {
                slot: 5,
                params: NextHopParams::Unresolved { tx_slot: 2, ifindex: 8, mtu: 9000, src_mac: Mac([2; 6]) },
                fresh: false,
            },
            KernelOp::SetNextHop { slot: 6, params: NextHopParams::Ecmp { members: vec![4, 5] }, fresh: false },
            KernelOp::SetNextHop { slot: 7, params: NextHopParams::Discard, fresh: false },
            KernelOp::SetNextHop { slot: 8, params: NextHopParams::Receive, fresh: true },
            KernelOp::ClearNextHop(9),
            KernelOp::PutFlow(
                FlowKey { vrf: 1, src: "2001:db8::1".parse().unwrap(), ..flow_key(9) },
                FlowValue {
                    action: 2,
                    nexthop: 3,
                    request_id: u64::MAX,
                    packets: 5,
                    nat_reserved: [7; 24],
                    ..Default::default()
                },
            ),
            KernelOp::RemoveFlow(flow_key(10)),
            KernelOp::SetPolicyAttachment { slot: 1, direction: 1, word: 0x8000_0003 },
            KernelOp::WritePolicy(Box::new(image.clone())),
            KernelOp::ClearPolicy(Box::new(image)),
            KernelOp::WaitForReaders,
        ];
        let bytes = encode(u64::MAX - 1, &ops);
        let (generation, back) = decode(&bytes).unwrap();
        assert_eq!(generation, u64::MAX - 1);
        assert_eq!(format!("{back:?}"), format!("{ops:?}"));
        // Cut anywhere, it is refused, never read as fewer operations.
        for cut in [1, 9, 12, bytes.len() - 3, bytes.len() - 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} of {}", bytes.len());
        }
    }

    #[test]
    fn restore_intent_of_committed_batch_removed_and_not_run() {
        let dir = TempDir::new();
        let d = setup(&dir.state_file());
        let g = generation(&d);
        // A crash after the commit, before the intent was removed: its undo is not run.
        let undo = [KernelOp::RemoveRoute { vrf: 0, prefix: "2001:db8:1::/48".parse().unwrap() }];
        let intent = d.intend(g, 2, &undo).unwrap();
        std::mem::forget(intent);
        let b = Domain::with_state_file(d.dataplane().restarted(), dir.state_file());
        let report = b.restore(persist::read(&dir.state_file()).unwrap()).unwrap();
        assert_eq!(report.rolled_back, None);
        assert_eq!(generation(&b), g);
        assert!(!recorded(&path_for(&dir.state_file())));
        assert_eq!(observe(&b), observe(&d));
        // The same intent one generation ahead: rolled back, the route gone.
        std::mem::forget(d.intend(g + 1, 2, &undo).unwrap());
        let c = Domain::with_state_file(d.dataplane().restarted(), dir.state_file());
        let report = c.restore(persist::read(&dir.state_file()).unwrap()).unwrap();
        assert_eq!(report.rolled_back, Some(RolledBack { generation: g + 1, ops: 1 }));
        assert_eq!(c.list_routes(Some(0), Some("2001:db8::/32".parse().unwrap())), vec![]);
    }

    #[test]
    fn restore_intent_frame_cut_short_ignored_and_removed() {
        let dir = TempDir::new();
        let d = setup(&dir.state_file());
        let g = generation(&d);
        let undo = [KernelOp::RemoveRoute { vrf: 0, prefix: "2001:db8:1::/48".parse().unwrap() }];
        std::mem::forget(d.intend(g + 1, 2, &undo).unwrap());
        // The process died inside the write: the frame's last byte never made it.
        let path = path_for(&dir.state_file());
        let mut bytes = std::fs::read(&path).unwrap();
        let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        // (Past the frame: what longer records left before; the file is rewritten in place.)
        bytes.truncate(FRAME_HEADER + len - 1);
        std::fs::write(&path, &bytes).unwrap();
        let b = Domain::with_state_file(d.dataplane().restarted(), dir.state_file());
        let report = b.restore(persist::read(&dir.state_file()).unwrap()).unwrap();
        assert_eq!(report.rolled_back, None, "no kernel write of its batch had started");
        assert!(!path.exists());
        assert_eq!(observe(&b), observe(&d));
        // A cleared record (a batch that finished) is no intent either.
        let pending = d.intend(g + 1, 2, &undo).unwrap();
        drop(pending);
        assert!(path.exists() && !recorded(&path));
    }

    #[test]
    fn restore_corrupt_intent_refused_naming_it() {
        let dir = TempDir::new();
        let d = setup(&dir.state_file());
        std::fs::write(path_for(&dir.state_file()), b"DPINTENT\x01\x05\x02").unwrap();
        let b = Domain::with_state_file(d.dataplane().restarted(), dir.state_file());
        let e = b.restore(persist::read(&dir.state_file()).unwrap()).unwrap_err().to_string();
        assert!(e.contains("state.json.intent: not an intent record of this server: cut short"), "{e}");
    }

    #[test]
    fn batch_without_state_file_writes_no_intent_and_commits() {
        let d = Domain::new(FakeDataplane::default());
        d.add_nexthops(vec![NewNextHop { id: 1, spec: NextHopSpec::Discard }]).unwrap();
        let g = d.add_routes(vec![route(0, "2001:db8::/48", 1), route(0, "2001:db8:1::/48", 1)]).unwrap();
        assert_eq!(g, 2);
        assert_eq!(d.intend(3, 2, &[KernelOp::WaitForReaders]).map(|p| p.file.is_none()).ok(), Some(true));
    }
}
