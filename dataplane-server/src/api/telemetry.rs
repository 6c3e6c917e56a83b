//! `dataplane.v1.Telemetry`: counters streamed at the caller's interval, as totals or deltas.

use std::{pin::Pin, sync::Arc, time::Duration};

use dataplane_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{interfaces::encode_counters, stream_from};
use crate::domain::{Dataplane, Domain, DomainError, InterfaceName, StatsSample};

/// The shortest interval a watch may ask for: each tick reads every interface's and next hop's
/// counters from the kernel.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

pub struct TelemetryService<D: Dataplane> {
    domain: Arc<Domain<D>>,
}

impl<D: Dataplane> TelemetryService<D> {
    pub fn new(domain: Arc<Domain<D>>) -> Self {
        Self { domain }
    }
}

/// A decoded `WatchStatsRequest`.
struct Watch {
    interval: Duration,
    deltas: bool,
    interface: Option<InterfaceName>,
}

impl TryFrom<pb::WatchStatsRequest> for Watch {
    type Error = DomainError;

    fn try_from(r: pb::WatchStatsRequest) -> Result<Self, DomainError> {
        let interval = match r.interval_ms {
            0 => Duration::from_secs(1),
            ms if Duration::from_millis(ms.into()) < MIN_INTERVAL => {
                return Err(DomainError::invalid("interval_ms", format!("{ms} is below the least, 100")))
            }
            ms => Duration::from_millis(ms.into()),
        };
        let interface = match r.interface.as_str() {
            "" => None,
            n => Some(InterfaceName::parse("interface", n)?),
        };
        Ok(Self { interval, deltas: r.deltas, interface })
    }
}

type StatsStream = Pin<Box<dyn Stream<Item = Result<pb::StatsSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl<D: Dataplane> pb::telemetry_server::Telemetry for TelemetryService<D> {
    type WatchStatsStream = StatsStream;

    async fn watch_stats(&self, req: Request<pb::WatchStatsRequest>) -> Result<Response<StatsStream>, Status> {
        let w = Watch::try_from(req.into_inner())?;
        // The first reading here: an interface that is not attached is refused before the stream.
        let read = {
            let (d, i) = (self.domain.clone(), w.interface.clone());
            move || d.stats_sample(i.as_ref())
        };
        let first = super::blocking(read.clone()).await??;
        let stream = stream_from(move |tx: tokio::sync::mpsc::Sender<Result<pb::StatsSnapshot, Status>>| async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + w.interval, w.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut seq, mut prev) = (1u64, None::<StatsSample>);
            let mut sample = first;
            loop {
                let msg = encode(seq, &sample, prev.as_ref(), w.deltas);
                if tx.send(Ok(msg)).await.is_err() {
                    return; // the watcher went away
                }
                prev = Some(sample);
                seq += 1;
                tick.tick().await;
                sample = match super::blocking(read.clone()).await {
                    Ok(Ok(s)) => s,
                    // Detached meanwhile, or the kernel refused a read: the stream ends with why.
                    Ok(Err(e)) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(stream))
    }
}

/// Snapshot `seq` of `now`: totals, or (with `deltas`, after the first) what changed since `prev`.
fn encode(seq: u64, now: &StatsSample, prev: Option<&StatsSample>, deltas: bool) -> pb::StatsSnapshot {
    let unix_ns = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let elapsed_ns = prev.map_or(0, |p| now.at.saturating_duration_since(p.at).as_nanos() as u64);
    let (sample, totals) = match prev {
        Some(p) if deltas => (now.since(p), false),
        _ => (now.clone(), true),
    };
    pb::StatsSnapshot {
        seq,
        unix_ns,
        elapsed_ns,
        totals,
        interfaces: sample
            .interfaces
            .iter()
            .map(|(n, s)| pb::InterfaceStatsSample { name: n.to_string(), counters: Some(encode_counters(s, !totals)) })
            .collect(),
        next_hops: sample
            .nexthops
            .iter()
            .map(|(id, s)| pb::NextHopStatsSample { id: *id, packets: s.packets, bytes: s.bytes })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_request_interval_below_least_invalid_argument_names_field() {
        let e = Watch::try_from(pb::WatchStatsRequest { interval_ms: 50, ..Default::default() }).err().unwrap();
        let s = Status::from(e);
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert!(s.message().contains("interval_ms"), "{}", s.message());
        let w = Watch::try_from(pb::WatchStatsRequest::default()).unwrap();
        assert_eq!((w.interval, w.deltas, w.interface), (Duration::from_secs(1), false, None));
        let e = Watch::try_from(pb::WatchStatsRequest { interface: "bad name!".into(), ..Default::default() }).err();
        assert!(Status::from(e.unwrap()).message().contains("interface"));
    }
}
