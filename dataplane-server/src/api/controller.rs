//! `dataplane.v1.Controller/Session`: one bidirectional stream per controller. Arbitration joins
//! the session to its role (`domain::arbitration`); the primary gets flow misses in batches and
//! packet-ins, and answers with decision batches and packet-outs on the same stream.
//!
//! Two tasks per session: one sends events (it alone waits on a slow client, so a slow session
//! loses events, counted and told, and never holds up the kernel reader or another session), one
//! handles what the controller sends, in order.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use dataplane_common::flow::MISS_PUNT_RULE;
use dataplane_proto::v1 as pb;
use tokio::sync::{broadcast, broadcast::error::RecvError, mpsc};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::flows::{encode_flow_removed, encode_key};
use crate::{
    domain::{
        arbitration::{ElectionId, Seat},
        Dataplane, Domain, DomainError, FlowKey, FlowMiss, FlowRemoved, InterfaceName,
    },
    events::{Hub, Sequenced},
};

/// Messages queued towards one session before its event task waits for the client.
const OUT_QUEUE: usize = 256;
/// Defaults and bounds of a session's `SessionConfig`.
const DEFAULT_MAX_BATCH: u32 = 256;
const MAX_MAX_BATCH: u32 = 4096;
const MAX_BATCH_DELAY_US: u32 = 100_000;

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::SessionResponse, Status>> + Send>>;
type Out = mpsc::Sender<Result<pb::SessionResponse, Status>>;

pub struct ControllerService<D: Dataplane> {
    domain: Arc<Domain<D>>,
    hubs: Hubs,
}

/// The event streams a primary session relays.
#[derive(Clone)]
struct Hubs {
    misses: Arc<Hub<FlowMiss>>,
    removed: Arc<Hub<FlowRemoved>>,
}

impl<D: Dataplane> ControllerService<D> {
    pub fn new(domain: Arc<Domain<D>>, misses: Arc<Hub<FlowMiss>>, removed: Arc<Hub<FlowRemoved>>) -> Self {
        Self { domain, hubs: Hubs { misses, removed } }
    }
}

/// Keys a DELETE_FLOWS session remembers at most: both flow tables' capacity.
const MAX_TRACKED_FLOWS: usize = 2 * dataplane_common::flow::MAX_FLOWS as usize;

/// Most flow removals per `FlowsRemoved` message.
const REMOVED_BATCH: usize = 1024;

pub(super) fn encode_id(id: ElectionId) -> pb::Uint128 {
    pb::Uint128 { high: (id >> 64) as u64, low: id as u64 }
}

fn decode_id(field: &str, id: Option<pb::Uint128>) -> Result<ElectionId, DomainError> {
    let id = id.ok_or_else(|| DomainError::invalid(field, "required"))?;
    Ok((u128::from(id.high) << 64) | u128::from(id.low))
}

/// A session's settings, decoded from its first arbitration.
#[derive(Clone, Debug)]
struct Config {
    max_batch: usize,
    delay: Duration,
    delete_flows: bool,
    only_slot: Option<u32>,
    only_vrf: Option<u32>,
    frame_bytes: usize,
    /// Miss batches that may be unacknowledged (0: acks not expected).
    max_unacked: u64,
}

impl Config {
    fn decode<D: Dataplane>(domain: &Domain<D>, c: Option<pb::SessionConfig>) -> Result<Self, DomainError> {
        let c = c.unwrap_or_default();
        let max_batch = match c.max_batch {
            0 => DEFAULT_MAX_BATCH,
            n if n > MAX_MAX_BATCH => {
                return Err(DomainError::invalid("arbitration.config.max_batch", format!("1 to {MAX_MAX_BATCH}")))
            }
            n => n,
        };
        if c.max_batch_delay_us > MAX_BATCH_DELAY_US {
            return Err(DomainError::invalid(
                "arbitration.config.max_batch_delay_us",
                format!("at most {MAX_BATCH_DELAY_US}"),
            ));
        }
        let delete_flows = match pb::OnDisconnect::try_from(c.on_disconnect) {
            Ok(pb::OnDisconnect::Unspecified | pb::OnDisconnect::Preserve) => false,
            Ok(pb::OnDisconnect::DeleteFlows) => true,
            Err(_) => return Err(DomainError::invalid("arbitration.config.on_disconnect", "PRESERVE or DELETE_FLOWS")),
        };
        let only_slot = match c.interface.as_str() {
            "" => None,
            name => Some(domain.interface_slot(&InterfaceName::parse("arbitration.config.interface", name)?)?),
        };
        let capture = dataplane_common::flow::FLOW_CAPTURE;
        let frame_bytes = match c.frame_bytes as usize {
            0 => capture,
            n => n.min(capture),
        };
        Ok(Self {
            max_batch: max_batch as usize,
            delay: Duration::from_micros(c.max_batch_delay_us.into()),
            delete_flows,
            only_slot,
            only_vrf: c.vrf,
            frame_bytes,
            max_unacked: c.max_unacked.into(),
        })
    }
}

fn response(kind: pb::session_response::Kind) -> Result<pb::SessionResponse, Status> {
    Ok(pb::SessionResponse { kind: Some(kind) })
}

fn stream_error(e: &DomainError, about: &str, id: u64) -> Result<pb::SessionResponse, Status> {
    let (code, message) = super::error::code_and_message(e);
    response(pb::session_response::Kind::Error(pb::StreamError {
        code: code as i32,
        message,
        about: about.to_owned(),
        id,
    }))
}

fn arbitration_result<D: Dataplane>(domain: &Domain<D>, seat: &Seat) -> Result<pb::SessionResponse, Status> {
    response(pb::session_response::Kind::Arbitration(pb::ArbitrationResult {
        role: seat.role().to_owned(),
        election_id: Some(encode_id(seat.election_id())),
        primary: seat.is_primary(),
        primary_election_id: seat.primary().map(encode_id),
        instance_id: domain.instance_id().to_owned(),
        generation: domain.generation(),
    }))
}

#[tonic::async_trait]
impl<D: Dataplane> pb::controller_server::Controller for ControllerService<D> {
    type SessionStream = SessionStream;

    async fn session(&self, req: Request<Streaming<pb::SessionRequest>>) -> Result<Response<SessionStream>, Status> {
        let mut inbound = req.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| DomainError::FailedPrecondition("the stream ended before its arbitration".into()))?;
        let Some(pb::session_request::Kind::Arbitration(arb)) = first.kind else {
            return Err(DomainError::FailedPrecondition(
                "the first message of a session must be an arbitration".into(),
            )
            .into());
        };
        let config = Config::decode(&self.domain, arb.config)?;
        let id = decode_id("arbitration.election_id", arb.election_id)?;
        let seat = self.domain.arbiter().join(&arb.role, id)?;
        info!(role = %arb.role, election_id = id, primary = seat.is_primary(), "controller session opened");
        let (tx, rx) = mpsc::channel(OUT_QUEUE);
        // The first answer, before any event: this session's standing.
        let _ = tx.send(arbitration_result(&self.domain, &seat)).await;
        let seat = Arc::new(Mutex::new(seat));
        let (acked_tx, acked_rx) = tokio::sync::watch::channel(0u64);
        let events = tokio::spawn(send_events(
            self.domain.clone(),
            self.hubs.clone(),
            seat.clone(),
            config.clone(),
            tx.clone(),
            acked_rx,
        ));
        tokio::spawn(handle_requests(self.domain.clone(), seat, config, inbound, tx, events, acked_tx));
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}

fn lock(seat: &Mutex<Seat>) -> std::sync::MutexGuard<'_, Seat> {
    seat.lock().unwrap_or_else(|p| p.into_inner())
}

/// The event task: announces primary changes; while primary, sends misses in batches,
/// packet-ins and flow removals.
async fn send_events<D: Dataplane>(
    domain: Arc<Domain<D>>,
    hubs: Hubs,
    seat: Arc<Mutex<Seat>>,
    config: Config,
    tx: Out,
    mut acked: tokio::sync::watch::Receiver<u64>,
) {
    // Miss batches sent so far (each one's id); with acks expected, how far ahead of the last
    // ack the session may be before the misses wait in its queue.
    let mut sent = 0u64;
    let (mut primary_rx, counters) = {
        let s = lock(&seat);
        (s.watch_primary(), s.counters().clone())
    };
    let mut misses: Option<broadcast::Receiver<Arc<Sequenced<FlowMiss>>>> = None;
    let mut removed: Option<broadcast::Receiver<Arc<Sequenced<FlowRemoved>>>> = None;
    loop {
        let primary = lock(&seat).is_primary();
        match (primary, misses.is_some()) {
            // From now on: what the hubs publish after this moment.
            (true, false) => {
                misses = Some(hubs.misses.subscribe());
                removed = Some(hubs.removed.subscribe());
            }
            (false, true) => {
                misses = None;
                removed = None;
            }
            _ => {}
        }
        let held_back = config.max_unacked > 0 && sent.saturating_sub(*acked.borrow()) >= config.max_unacked;
        tokio::select! {
            changed = acked.changed(), if held_back => {
                if changed.is_err() {
                    return;
                }
            }
            changed = primary_rx.changed() => {
                if changed.is_err() {
                    return;
                }
                let msg = arbitration_result(&domain, &lock(&seat));
                if tx.send(msg).await.is_err() {
                    return;
                }
            }
            first = recv(&mut misses), if !held_back => {
                let mut batch = Batch::default();
                batch.take(first, &config);
                let rx = misses.as_mut().expect("recv only polls a receiver");
                batch.fill(rx, &config).await;
                if batch.closed {
                    return;
                }
                // Names looked up afresh for each batch: a slot freed and reused names another
                // interface.
                if !batch.send(&domain, &config, &mut Names::default(), &counters, &tx, &mut sent).await {
                    return;
                }
            }
            first = recv(&mut removed) => {
                let rx = removed.as_mut().expect("recv only polls a receiver");
                if !send_removed(first, rx, &config, &counters, &tx).await {
                    return;
                }
            }
            _ = tx.closed() => return,
        }
    }
}

/// Sends `first` and whatever removals are queued behind it as one `FlowsRemoved` (and what
/// was lost); false once the client is gone.
async fn send_removed(
    first: Result<Arc<Sequenced<FlowRemoved>>, RecvError>,
    rx: &mut broadcast::Receiver<Arc<Sequenced<FlowRemoved>>>,
    config: &Config,
    counters: &crate::domain::arbitration::SessionCounters,
    tx: &Out,
) -> bool {
    use pb::session_response::Kind;
    let mut flows = Vec::new();
    let mut lost = 0;
    let mut next = Some(first);
    while let Some(r) = next.take() {
        match r {
            Ok(ev) => {
                if config.only_vrf.is_none_or(|v| v == ev.event.key.vrf) {
                    flows.push(encode_flow_removed(&ev.event));
                }
            }
            Err(RecvError::Lagged(n)) => lost += n,
            Err(RecvError::Closed) => return false,
        }
        if flows.len() < REMOVED_BATCH {
            next = match rx.try_recv() {
                Ok(ev) => Some(Ok(ev)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
                Err(_) => None,
            };
        }
    }
    if !flows.is_empty() && tx.send(response(Kind::FlowsRemoved(pb::FlowsRemoved { flows }))).await.is_err() {
        return false;
    }
    if lost > 0 {
        counters.lost.fetch_add(lost, Ordering::Relaxed);
        let lost = pb::Lost { flows_removed: lost, ..Default::default() };
        if tx.send(response(Kind::Lost(lost))).await.is_err() {
            return false;
        }
    }
    true
}

/// The next event of a receiver, or never (no receiver: a backup).
async fn recv<T: Clone>(rx: &mut Option<broadcast::Receiver<T>>) -> Result<T, RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Interface names by slot, looked up once per slot and batch.
#[derive(Default)]
struct Names(HashMap<u32, String>);

impl Names {
    fn get<D: Dataplane>(&mut self, domain: &Domain<D>, slot: u32) -> String {
        self.0.entry(slot).or_insert_with(|| domain.interface_name_by_slot(slot).unwrap_or_default()).clone()
    }
}

/// Events collected for one send.
#[derive(Default)]
struct Batch {
    events: Vec<Arc<Sequenced<FlowMiss>>>,
    lost: u64,
    closed: bool,
}

impl Batch {
    fn take(&mut self, r: Result<Arc<Sequenced<FlowMiss>>, RecvError>, config: &Config) {
        match r {
            Ok(ev) => {
                let m = &ev.event;
                if config.only_slot.is_none_or(|s| s == m.slot) && config.only_vrf.is_none_or(|v| v == m.key.vrf) {
                    self.events.push(ev);
                }
            }
            Err(RecvError::Lagged(n)) => self.lost += n,
            Err(RecvError::Closed) => self.closed = true,
        }
    }

    /// Everything already queued, up to the batch size; then, with a delay configured, what
    /// arrives before it runs out.
    async fn fill(&mut self, rx: &mut broadcast::Receiver<Arc<Sequenced<FlowMiss>>>, config: &Config) {
        let deadline = tokio::time::Instant::now() + config.delay;
        while self.events.len() < config.max_batch && !self.closed {
            match rx.try_recv() {
                Ok(ev) => self.take(Ok(ev), config),
                Err(broadcast::error::TryRecvError::Lagged(n)) => self.lost += n,
                Err(broadcast::error::TryRecvError::Closed) => self.closed = true,
                Err(broadcast::error::TryRecvError::Empty) => {
                    if config.delay.is_zero() {
                        break;
                    }
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(r) => self.take(r, config),
                        Err(_) => break,
                    }
                }
            }
        }
    }

    /// Sends the batch (misses as one MissBatch, packet-ins each in order) and what was lost;
    /// false once the client is gone.
    async fn send<D: Dataplane>(
        self,
        domain: &Domain<D>,
        config: &Config,
        names: &mut Names,
        counters: &crate::domain::arbitration::SessionCounters,
        tx: &Out,
        sent: &mut u64,
    ) -> bool {
        use pb::session_response::Kind;
        let mut misses = Vec::with_capacity(self.events.len());
        let mut packet_ins = Vec::new();
        for ev in &self.events {
            let m = &ev.event;
            let frame = m.frame.slice(..m.frame.len().min(config.frame_bytes));
            if m.reason == MISS_PUNT_RULE {
                packet_ins.push(pb::PacketIn {
                    seq: ev.seq,
                    interface: names.get(domain, m.slot),
                    vrf: m.key.vrf,
                    reason: "punt".into(),
                    packet_length: m.packet_len,
                    frame,
                });
            } else {
                misses.push(pb::FlowMiss {
                    seq: ev.seq,
                    request_id: m.request_id,
                    interface: names.get(domain, m.slot),
                    key: Some(encode_key(&m.key)),
                    packet_length: m.packet_len,
                    packet: frame,
                    reason: "miss".into(),
                });
            }
        }
        counters.misses.fetch_add(misses.len() as u64, Ordering::Relaxed);
        if !misses.is_empty() {
            *sent += 1;
            if tx.send(response(Kind::Misses(pb::MissBatch { misses, id: *sent }))).await.is_err() {
                return false;
            }
        }
        for p in packet_ins {
            if tx.send(response(Kind::PacketIn(p))).await.is_err() {
                return false;
            }
        }
        if self.lost > 0 {
            counters.lost.fetch_add(self.lost, Ordering::Relaxed);
            debug!(lost = self.lost, "session fell behind; events lost");
            let lost = pb::Lost { misses: self.lost, ..Default::default() };
            if tx.send(response(Kind::Lost(lost))).await.is_err() {
                return false;
            }
        }
        true
    }
}

/// Requests read from the stream and not yet taken by the session's thread.
const IN_QUEUE: usize = 64;

/// Reads the session's requests and hands them, in order, to a thread of the session's own
/// ([`serve_requests`]), which applies them: decisions block for their kernel writes, and on a
/// runtime worker each would need `block_in_place` (a hand-off of the worker's core to another
/// thread, a wakeup of a spare one: thousands a second at a high setup rate, each a few
/// milliseconds of latency for the misses queued behind it now and then). When the stream ends,
/// the thread finishes what it was given and cleans up.
async fn handle_requests<D: Dataplane>(
    domain: Arc<Domain<D>>,
    seat: Arc<Mutex<Seat>>,
    config: Config,
    mut inbound: Streaming<pb::SessionRequest>,
    tx: Out,
    events: tokio::task::JoinHandle<()>,
    acked: tokio::sync::watch::Sender<u64>,
) {
    let (req_tx, req_rx) = mpsc::channel(IN_QUEUE);
    let failed_tx = tx.clone();
    let started = std::thread::Builder::new()
        .name("dp-session".into())
        .spawn(move || serve_requests(domain, seat, config, req_rx, tx, events, acked));
    if let Err(e) = started {
        warn!(error = %e, "starting a controller session's thread failed");
        let _ =
            failed_tx.send(Err(Status::resource_exhausted(format!("cannot start the session's thread: {e}")))).await;
        return;
    }
    drop(failed_tx);
    loop {
        let msg = match inbound.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "controller session stream failed");
                break;
            }
        };
        if req_tx.send(msg).await.is_err() {
            break;
        }
    }
}

/// The session's thread: applies its requests in the order they came, answers on `tx`, and once
/// they end closes the session (the event task stops; DELETE_FLOWS removes its flows).
fn serve_requests<D: Dataplane>(
    domain: Arc<Domain<D>>,
    seat: Arc<Mutex<Seat>>,
    config: Config,
    mut requests: mpsc::Receiver<pb::SessionRequest>,
    tx: Out,
    events: tokio::task::JoinHandle<()>,
    acked: tokio::sync::watch::Sender<u64>,
) {
    use pb::session_request::Kind;
    // DELETE_FLOWS: the keys this session wrote (each once), at most what both flow tables hold;
    // past that, older keys were evicted or replaced long since.
    let mut installed: std::collections::HashSet<FlowKey> = std::collections::HashSet::new();
    let counters = lock(&seat).counters().clone();
    while let Some(msg) = requests.blocking_recv() {
        let reply = match msg.kind {
            Some(Kind::Arbitration(a)) => {
                let r = if a.config.is_some() {
                    Err(DomainError::invalid("arbitration.config", "only the first arbitration carries a config"))
                } else {
                    decode_id("arbitration.election_id", a.election_id).and_then(|id| {
                        let mut s = lock(&seat);
                        if a.role != s.role() {
                            return Err(DomainError::invalid("arbitration.role", "a session cannot change its role"));
                        }
                        s.change_id(id)
                    })
                };
                match r {
                    Ok(()) => arbitration_result(&domain, &lock(&seat)),
                    Err(e) => stream_error(&e, "arbitration", 0),
                }
            }
            Some(Kind::Decisions(d)) => {
                let id = d.id;
                match decide(&domain, &seat, d) {
                    Ok((result, keys)) => {
                        counters.decisions.fetch_add(u64::from(result.applied), Ordering::Relaxed);
                        if config.delete_flows {
                            for k in keys {
                                if installed.len() < MAX_TRACKED_FLOWS || installed.contains(&k) {
                                    installed.insert(k);
                                }
                            }
                        }
                        response(pb::session_response::Kind::DecisionResult(result))
                    }
                    Err(e) => stream_error(&e, "decisions", id),
                }
            }
            Some(Kind::Ack(a)) => {
                // Cumulative: an older ack after a newer one changes nothing.
                acked.send_if_modified(|v| {
                    let newer = a.id > *v;
                    *v = (*v).max(a.id);
                    newer
                });
                continue;
            }
            Some(Kind::PacketOut(p)) => {
                let id = p.id;
                match packet_out(&domain, &seat, p) {
                    Ok(()) => continue,
                    Err(e) => stream_error(&e, "packet_out", id),
                }
            }
            None => stream_error(&DomainError::invalid("kind", "empty request"), "request", 0),
        };
        if tx.blocking_send(reply).is_err() {
            break;
        }
    }
    events.abort();
    let (role, id) = {
        let s = lock(&seat);
        (s.role().to_owned(), s.election_id())
    };
    // The seat goes with the last reference (the event task's is gone with the abort).
    drop(seat);
    info!(role = %role, election_id = id, "controller session closed");
    if config.delete_flows && !installed.is_empty() {
        let keys: Vec<FlowKey> = installed.into_iter().collect();
        match domain.remove_flows_present(&keys) {
            Ok(n) => info!(flows = n, "session ended with DELETE_FLOWS: its flows removed"),
            Err(e) => warn!(error = %e, "removing an ended session's flows failed"),
        }
    }
}

fn require_primary(seat: &Mutex<Seat>) -> Result<(), DomainError> {
    let s = lock(seat);
    if s.is_primary() {
        return Ok(());
    }
    Err(DomainError::PermissionDenied(format!(
        "election id {} is a backup in role {:?}: only the primary ({}) decides",
        s.election_id(),
        s.role(),
        s.primary().map_or("none".to_owned(), |p| p.to_string())
    )))
}

/// Applies a batch of decisions; the result lists the entries that failed.
fn decide<D: Dataplane>(
    domain: &Arc<Domain<D>>,
    seat: &Mutex<Seat>,
    d: pb::Decisions,
) -> Result<(pb::DecisionResult, Vec<FlowKey>), DomainError> {
    require_primary(seat)?;
    let atomicity = super::flows::atomicity(d.atomicity)?;
    let out = super::flows::decide_here(domain, d.flows, atomicity)?;
    let result = pb::DecisionResult {
        id: d.id,
        generation: out.generation,
        applied: out.applied as u32,
        failed: out
            .failed
            .iter()
            .map(|(i, e)| {
                let (code, message) = super::error::code_and_message(e);
                pb::EntryStatus { index: *i as u32, code: code as i32, message }
            })
            .collect(),
    };
    Ok((result, out.installed))
}

fn packet_out<D: Dataplane>(domain: &Arc<Domain<D>>, seat: &Mutex<Seat>, p: pb::PacketOut) -> Result<(), DomainError> {
    require_primary(seat)?;
    let interface = InterfaceName::parse("packet_out.interface", &p.interface)?;
    domain.packet_out(&interface, &p.frame, p.ingress)
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    /// `Code` of a stream error.
    fn code_of(r: &Result<pb::SessionResponse, Status>) -> Option<Code> {
        match r {
            Ok(pb::SessionResponse { kind: Some(pb::session_response::Kind::Error(e)) }) => Some(Code::from(e.code)),
            _ => None,
        }
    }

    #[test]
    fn election_id_round_trips_through_uint128() {
        for id in [1u128, u128::from(u64::MAX) + 1, u128::MAX] {
            assert_eq!(decode_id("x", Some(encode_id(id))).unwrap(), id);
        }
        assert!(decode_id("arbitration.election_id", None).unwrap_err().to_string().contains("election_id"));
    }

    #[test]
    fn stream_error_keeps_code_and_names_request() {
        let e = DomainError::PermissionDenied("backup".into());
        let r = stream_error(&e, "decisions", 7);
        assert_eq!(code_of(&r), Some(Code::PermissionDenied));
        let Ok(pb::SessionResponse { kind: Some(pb::session_response::Kind::Error(se)) }) = r else { panic!() };
        assert_eq!((se.about.as_str(), se.id, se.message.as_str()), ("decisions", 7, "backup"));
    }
}
