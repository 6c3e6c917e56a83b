//! A controller's session with a server (`dataplane.v1.Controller/Session`): arbitration first,
//! then flow misses, packet-ins and arbitration changes in, decisions and packet-outs out, on one
//! bidirectional stream. [`StreamChannel::client`] is the same connection whose writes carry the
//! session's election id (the server refuses writes from anyone but the primary).

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::{pb, Client, Credentials};

/// Requests queued towards the server before `send` waits.
const QUEUE: usize = 1024;

/// The sending half: cheap to clone, usable from any task.
#[derive(Clone, Debug)]
pub struct SessionSender {
    tx: mpsc::Sender<pb::SessionRequest>,
}

/// The stream ended (the server went away or the session was refused).
#[derive(Debug, thiserror::Error)]
#[error("the session's stream is closed")]
pub struct Closed;

impl SessionSender {
    pub async fn send(&self, kind: pb::session_request::Kind) -> Result<(), Closed> {
        self.tx.send(pb::SessionRequest { kind: Some(kind) }).await.map_err(|_| Closed)
    }

    /// Flow decisions (answering misses by request id, or naming flows by key).
    pub async fn decide(&self, id: u64, flows: Vec<pb::Flow>, atomicity: pb::Atomicity) -> Result<(), Closed> {
        self.send(pb::session_request::Kind::Decisions(pb::Decisions { id, flows, atomicity: atomicity as i32 })).await
    }

    /// A frame out of `interface`, or (`ingress`) into the pipeline as if received there.
    pub async fn packet_out(&self, id: u64, interface: &str, frame: Vec<u8>, ingress: bool) -> Result<(), Closed> {
        let p = pb::PacketOut { id, interface: interface.to_owned(), frame: frame.into(), ingress };
        self.send(pb::session_request::Kind::PacketOut(p)).await
    }

    /// Acknowledges the miss batches up to and including `id` (with `SessionConfig.max_unacked`).
    pub async fn ack(&self, id: u64) -> Result<(), Closed> {
        self.send(pb::session_request::Kind::Ack(pb::MissAck { id })).await
    }

    /// A new election id for this session (a backup raising its id to take over).
    pub async fn rearbitrate(&self, role: &str, election_id: u128) -> Result<(), Closed> {
        let a = pb::Arbitration { role: role.to_owned(), election_id: Some(uint128(election_id)), config: None };
        self.send(pb::session_request::Kind::Arbitration(a)).await
    }
}

/// An open session.
pub struct StreamChannel {
    pub sender: SessionSender,
    pub events: Streaming<pb::SessionResponse>,
    /// The server's first answer: primary or backup, the server's instance id.
    pub arbitration: pb::ArbitrationResult,
    client: Client,
}

pub fn uint128(id: u128) -> pb::Uint128 {
    pb::Uint128 { high: (id >> 64) as u64, low: id as u64 }
}

pub fn from_uint128(id: &pb::Uint128) -> u128 {
    (u128::from(id.high) << 64) | u128::from(id.low)
}

impl StreamChannel {
    /// Opens a session in `role` with `election_id`; the server's refusal (a duplicate id,
    /// a bad config) is the error.
    pub async fn open(
        client: &Client,
        role: &str,
        election_id: u128,
        config: pb::SessionConfig,
    ) -> Result<Self, Status> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let first =
            pb::Arbitration { role: role.to_owned(), election_id: Some(uint128(election_id)), config: Some(config) };
        tx.send(pb::SessionRequest { kind: Some(pb::session_request::Kind::Arbitration(first)) })
            .await
            .map_err(|_| Status::internal("queue closed"))?;
        let mut events = client.controller.clone().session(ReceiverStream::new(rx)).await?.into_inner();
        let arbitration = match events.message().await?.and_then(|m| m.kind) {
            Some(pb::session_response::Kind::Arbitration(a)) => a,
            other => return Err(Status::internal(format!("expected an arbitration result first, got {other:?}"))),
        };
        let credentials = Credentials::new(role, election_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Self { sender: SessionSender { tx }, events, arbitration, client: client.with_credentials(credentials) })
    }

    /// The connection's clients, their writes carrying this session's role and election id.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The next message from the server; `None` once the stream ended.
    pub async fn next(&mut self) -> Result<Option<pb::session_response::Kind>, Status> {
        loop {
            match self.events.message().await? {
                Some(pb::SessionResponse { kind: Some(k) }) => return Ok(Some(k)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }
}
