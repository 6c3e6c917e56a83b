//! `dataplane.v1.Events`: netlink event subscriptions (optionally opened by a snapshot).

use std::{pin::Pin, sync::Arc};

use dataplane_proto::v1 as pb;
use tokio::sync::broadcast::error::RecvError;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::stream_from;
use crate::{
    domain::{Dataplane, Domain, DomainError, InterfaceName},
    events::{
        netlink::{Action, Detail, EventKind, Netlink, NetlinkEvent},
        Hub,
    },
};

pub struct EventsService<D: Dataplane> {
    domain: Arc<Domain<D>>,
    hub: Arc<Hub<NetlinkEvent>>,
    netlink: Netlink,
}

impl<D: Dataplane> EventsService<D> {
    pub fn new(domain: Arc<Domain<D>>, hub: Arc<Hub<NetlinkEvent>>, netlink: Netlink) -> Self {
        Self { domain, hub, netlink }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::NetlinkEventMessage, Status>> + Send>>;

/// What a subscriber asked to see.
struct Filter {
    kinds: Vec<EventKind>,
    interface: Option<String>,
}

impl Filter {
    fn decode(r: &pb::SubscribeNetlinkEventsRequest) -> Result<Self, DomainError> {
        let mut kinds = Vec::new();
        for (i, k) in r.kinds.iter().enumerate() {
            kinds.push(match pb::NetlinkEventKind::try_from(*k) {
                Ok(pb::NetlinkEventKind::Link) => EventKind::Link,
                Ok(pb::NetlinkEventKind::Address) => EventKind::Address,
                Ok(pb::NetlinkEventKind::Route) => EventKind::Route,
                Ok(pb::NetlinkEventKind::Neighbour) => EventKind::Neighbour,
                _ => {
                    return Err(DomainError::invalid(
                        format!("kinds[{i}]"),
                        format!("{k} is not LINK, ADDRESS, ROUTE or NEIGHBOUR"),
                    ))
                }
            });
        }
        if kinds.is_empty() {
            kinds = vec![EventKind::Link, EventKind::Address, EventKind::Route, EventKind::Neighbour];
        }
        let interface = match r.interface.as_str() {
            "" => None,
            name => Some(InterfaceName::parse("interface", name)?.to_string()),
        };
        Ok(Self { kinds, interface })
    }

    fn accepts(&self, e: &NetlinkEvent) -> bool {
        e.kind() == EventKind::Overrun
            || (self.kinds.contains(&e.kind()) && self.interface.as_ref().is_none_or(|n| *n == e.interface))
    }
}

#[tonic::async_trait]
impl<D: Dataplane> pb::events_server::Events for EventsService<D> {
    type SubscribeNetlinkEventsStream = EventStream;

    async fn subscribe_netlink_events(
        &self,
        req: Request<pb::SubscribeNetlinkEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let r = req.into_inner();
        let filter = Filter::decode(&r)?;
        // Live events first, then the snapshot: nothing that happens in between is missed.
        let mut rx = self.hub.subscribe();
        let snapshot = if r.snapshot {
            let mut entries = self.netlink.snapshot(&filter.kinds).await?;
            entries.retain(|e| filter.accepts(e));
            for e in &mut entries {
                if let Detail::Link { owned, .. } = &mut e.detail {
                    *owned = self.domain.interface_by_ifindex(e.ifindex).is_some();
                }
            }
            Some(entries)
        } else {
            None
        };
        let stream =
            stream_from(move |tx: tokio::sync::mpsc::Sender<Result<pb::NetlinkEventMessage, Status>>| async move {
                use pb::netlink_event_message::Kind;
                if let Some(entries) = snapshot {
                    let n = entries.len() as u64;
                    for e in &entries {
                        if tx.send(Ok(pb::NetlinkEventMessage { kind: Some(encode(0, true, e)) })).await.is_err() {
                            return;
                        }
                    }
                    let done =
                        pb::NetlinkEventMessage { kind: Some(Kind::SnapshotDone(pb::SnapshotDone { entries: n })) };
                    if tx.send(Ok(done)).await.is_err() {
                        return;
                    }
                }
                loop {
                    let msg = match rx.recv().await {
                        Ok(ev) if filter.accepts(&ev.event) => encode(ev.seq, false, &ev.event),
                        Ok(_) => continue,
                        Err(RecvError::Lagged(n)) => Kind::Lagged(n),
                        Err(RecvError::Closed) => return,
                    };
                    if tx.send(Ok(pb::NetlinkEventMessage { kind: Some(msg) })).await.is_err() {
                        return; // the subscriber went away
                    }
                }
            });
        Ok(Response::new(stream))
    }
}

fn encode(seq: u64, snapshot: bool, e: &NetlinkEvent) -> pb::netlink_event_message::Kind {
    use pb::{netlink_event::Detail as D, netlink_event_message::Kind};
    let action = match e.action {
        Action::Added => pb::EventAction::Added,
        Action::Removed => pb::EventAction::Removed,
        Action::Changed => pb::EventAction::Changed,
    };
    let mac = |m: &Option<crate::net::Mac>| m.map(|m| m.to_string()).unwrap_or_default();
    let detail = match &e.detail {
        Detail::Link { up, running, mtu, mac: m, changes, owned } => D::Link(pb::LinkEvent {
            up: *up,
            running: *running,
            mtu: *mtu,
            mac: mac(m),
            changes: changes.iter().map(|c| c.to_string()).collect(),
            owned: *owned,
        }),
        Detail::Address { address, prefix_len } => {
            D::Address(pb::AddressEvent { address: address.to_string(), prefix_len: u32::from(*prefix_len) })
        }
        Detail::Route { destination, gateway, table, metric, protocol, route_type } => D::Route(pb::RouteEvent {
            destination: destination.clone(),
            gateway: gateway.map(|g| g.to_string()).unwrap_or_default(),
            table: *table,
            metric: *metric,
            protocol: protocol.clone(),
            r#type: route_type.clone(),
        }),
        Detail::Neighbour { address, mac: m, state, router } => D::Neighbour(pb::NeighbourEvent {
            address: address.to_string(),
            mac: mac(m),
            state: state.to_string(),
            router: *router,
        }),
        Detail::Overrun => return Kind::KernelOverrun(pb::KernelOverrun { seq }),
    };
    Kind::Event(pb::NetlinkEvent {
        seq,
        snapshot,
        action: action.into(),
        ifindex: e.ifindex,
        interface: e.interface.clone(),
        detail: Some(detail),
    })
}
