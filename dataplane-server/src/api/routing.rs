//! `dataplane.v1.Routing`: VRFs, next hops, routes.

use std::{pin::Pin, sync::Arc};

use dataplane_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{
    domain::{
        Atomicity, Dataplane, Domain, DomainError, InterfaceName, Ipv4Lookup, NewNextHop, NextHopSpec, NextHopState,
        NextHopView, OnExisting, RouteSpec, VrfMode,
    },
    net::{parse_addr, Mac, Prefix},
};

/// Routes per streamed `ListRoutesResponse`.
const LIST_CHUNK: usize = 1024;

pub struct RoutingService<D: Dataplane> {
    domain: Arc<Domain<D>>,
}

impl<D: Dataplane> RoutingService<D> {
    pub fn new(domain: Arc<Domain<D>>) -> Self {
        Self { domain }
    }
}

type RouteStream = Pin<Box<dyn Stream<Item = Result<pb::ListRoutesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl<D: Dataplane> pb::routing_server::Routing for RoutingService<D> {
    async fn add_vrf(&self, req: Request<pb::AddVrfRequest>) -> Result<Response<pb::AddVrfResponse>, Status> {
        let r = req.into_inner();
        let mode = match pb::VrfMode::try_from(r.mode) {
            Ok(pb::VrfMode::Routes) if r.kernel_table != 0 => {
                return Err(DomainError::invalid("kernel_table", "only for mode VRF_MODE_KERNEL_FIB").into())
            }
            Ok(pb::VrfMode::Routes) => VrfMode::Routes,
            Ok(pb::VrfMode::KernelFib) => VrfMode::KernelFib { table: r.kernel_table },
            Err(_) => return Err(DomainError::invalid("mode", format!("unknown VRF mode {}", r.mode)).into()),
        };
        let generation = self.domain.add_vrf(r.id, mode)?;
        Ok(Response::new(pb::AddVrfResponse { generation }))
    }

    async fn delete_vrf(&self, req: Request<pb::DeleteVrfRequest>) -> Result<Response<pb::DeleteVrfResponse>, Status> {
        let generation = self.domain.delete_vrf(req.into_inner().id)?;
        Ok(Response::new(pb::DeleteVrfResponse { generation }))
    }

    async fn list_vrfs(&self, _req: Request<pb::ListVrfsRequest>) -> Result<Response<pb::ListVrfsResponse>, Status> {
        let vrfs = self
            .domain
            .list_vrfs()
            .into_iter()
            .map(|v| {
                let (mode, kernel_table) = match v.mode {
                    VrfMode::Routes => (pb::VrfMode::Routes, 0),
                    VrfMode::KernelFib { table } => (pb::VrfMode::KernelFib, table),
                };
                let (ipv4_lookup, ipv4_flat_chunks) = match v.ipv4_lookup {
                    None => (pb::Ipv4Lookup::Unspecified, 0),
                    Some(Ipv4Lookup::Flat { chunks }) => (pb::Ipv4Lookup::Flat, chunks),
                    Some(Ipv4Lookup::Trie) => (pb::Ipv4Lookup::Trie, 0),
                };
                pb::Vrf {
                    id: v.id,
                    interfaces: v.interfaces,
                    routes: v.routes,
                    mode: mode.into(),
                    kernel_table,
                    ipv4_lookup: ipv4_lookup.into(),
                    ipv4_flat_chunks,
                }
            })
            .collect();
        Ok(Response::new(pb::ListVrfsResponse { vrfs }))
    }

    async fn add_next_hops(
        &self,
        req: Request<pb::AddNextHopsRequest>,
    ) -> Result<Response<pb::AddNextHopsResponse>, Status> {
        let req = req.into_inner();
        let (on_existing, atomicity) = (on_existing(req.replace), atomicity(req.atomicity)?);
        let batch = req
            .next_hops
            .into_iter()
            .enumerate()
            .map(|(i, n)| decode_nexthop(n).map_err(|e| e.at(format!("next_hops[{i}]"))));
        let generation = self.domain.add_nexthops_each(batch, on_existing, atomicity)?;
        Ok(Response::new(pb::AddNextHopsResponse { generation }))
    }

    async fn delete_next_hops(
        &self,
        req: Request<pb::DeleteNextHopsRequest>,
    ) -> Result<Response<pb::DeleteNextHopsResponse>, Status> {
        let req = req.into_inner();
        let generation = self.domain.delete_nexthops_each(&req.ids, atomicity(req.atomicity)?)?;
        Ok(Response::new(pb::DeleteNextHopsResponse { generation }))
    }

    async fn list_next_hops(
        &self,
        _req: Request<pb::ListNextHopsRequest>,
    ) -> Result<Response<pb::ListNextHopsResponse>, Status> {
        let next_hops = self.domain.list_nexthops()?.into_iter().map(encode_nexthop).collect();
        Ok(Response::new(pb::ListNextHopsResponse { next_hops }))
    }

    async fn add_routes(&self, req: Request<pb::AddRoutesRequest>) -> Result<Response<pb::AddRoutesResponse>, Status> {
        let req = req.into_inner();
        let (on_existing, atomicity) = (on_existing(req.replace), atomicity(req.atomicity)?);
        // Decoded as the domain checks them: no copy of the batch in between.
        let batch = req.routes.into_iter().enumerate().map(|(i, r)| {
            let prefix = parse_prefix_at(i, &r.prefix)?;
            Ok(RouteSpec { vrf: r.vrf, prefix, nexthop: r.next_hop })
        });
        let generation = self.domain.add_routes_each(batch, on_existing, atomicity)?;
        Ok(Response::new(pb::AddRoutesResponse { generation }))
    }

    async fn delete_routes(
        &self,
        req: Request<pb::DeleteRoutesRequest>,
    ) -> Result<Response<pb::DeleteRoutesResponse>, Status> {
        let req = req.into_inner();
        let atomicity = atomicity(req.atomicity)?;
        let batch = req.routes.into_iter().enumerate().map(|(i, r)| Ok((r.vrf, parse_prefix_at(i, &r.prefix)?)));
        let generation = self.domain.delete_routes_each(batch, atomicity)?;
        Ok(Response::new(pb::DeleteRoutesResponse { generation }))
    }

    type ListRoutesStream = RouteStream;

    async fn list_routes(&self, req: Request<pb::ListRoutesRequest>) -> Result<Response<RouteStream>, Status> {
        let req = req.into_inner();
        let within = match req.prefix.as_str() {
            "" => None,
            p => Some(parse_prefix("prefix", p)?),
        };
        let routes = self.domain.list_routes(req.vrf, within);
        let chunks: Vec<Result<pb::ListRoutesResponse, Status>> = routes
            .chunks(LIST_CHUNK)
            .map(|c| Ok(pb::ListRoutesResponse { routes: c.iter().map(encode_route).collect() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn lookup_route(
        &self,
        req: Request<pb::LookupRouteRequest>,
    ) -> Result<Response<pb::LookupRouteResponse>, Status> {
        let req = req.into_inner();
        let addr = parse_addr(&req.address).map_err(|e| DomainError::invalid("address", e.to_string()))?;
        let found = self.domain.lookup_route(req.vrf, addr)?;
        Ok(Response::new(pb::LookupRouteResponse { found: found.is_some(), route: found.as_ref().map(encode_route) }))
    }
}

fn parse_prefix(field: &str, s: &str) -> Result<Prefix, DomainError> {
    s.parse().map_err(|e: crate::net::ParseError| DomainError::invalid(field, e.to_string()))
}

/// `routes[i].prefix`, the field named only on an error (a batch is often a million routes).
fn parse_prefix_at(i: usize, s: &str) -> Result<Prefix, DomainError> {
    s.parse().map_err(|e: crate::net::ParseError| DomainError::invalid(format!("routes[{i}].prefix"), e.to_string()))
}

fn parse_mac(field: &str, s: &str) -> Result<Mac, DomainError> {
    s.parse().map_err(|e: crate::net::ParseError| DomainError::invalid(field, e.to_string()))
}

fn decode_nexthop(n: pb::NextHop) -> Result<NewNextHop, DomainError> {
    use pb::next_hop::Kind;
    let spec = match n.kind {
        Some(Kind::Encap(e)) => {
            let interface = InterfaceName::parse("encap.interface", &e.interface)?;
            let src_mac = match e.src_mac.as_str() {
                "" => None,
                s => Some(parse_mac("encap.src_mac", s)?),
            };
            match (e.dst_mac.as_str(), e.gateway.as_str()) {
                ("", "") => return Err(DomainError::invalid("encap", "one of dst_mac and gateway is required")),
                (_, "") => NextHopSpec::Encap { interface, dst_mac: parse_mac("encap.dst_mac", &e.dst_mac)?, src_mac },
                ("", gw) => NextHopSpec::Gateway {
                    interface,
                    gateway: parse_addr(gw).map_err(|err| DomainError::invalid("encap.gateway", err.to_string()))?,
                    src_mac,
                },
                _ => return Err(DomainError::invalid("encap.gateway", "dst_mac and gateway are exclusive")),
            }
        }
        Some(Kind::Ecmp(g)) => NextHopSpec::Ecmp { members: g.members },
        Some(Kind::Discard(_)) => NextHopSpec::Discard,
        Some(Kind::Receive(_)) => NextHopSpec::Receive,
        None => return Err(DomainError::invalid("kind", "one of encap, ecmp, discard, receive is required")),
    };
    Ok(NewNextHop { id: n.id, spec })
}

fn encode_nexthop(v: NextHopView) -> pb::NextHop {
    use pb::next_hop::Kind;
    let kind = match v.spec {
        NextHopSpec::Encap { interface, dst_mac, src_mac } => Kind::Encap(pb::EncapNextHop {
            interface: interface.to_string(),
            dst_mac: dst_mac.to_string(),
            src_mac: src_mac.map(|m| m.to_string()).unwrap_or_default(),
            gateway: String::new(),
        }),
        NextHopSpec::Gateway { interface, gateway, src_mac } => Kind::Encap(pb::EncapNextHop {
            interface: interface.to_string(),
            dst_mac: String::new(),
            src_mac: src_mac.map(|m| m.to_string()).unwrap_or_default(),
            gateway: gateway.to_string(),
        }),
        NextHopSpec::Ecmp { members } => Kind::Ecmp(pb::EcmpNextHop { members }),
        NextHopSpec::Discard => Kind::Discard(pb::Discard {}),
        NextHopSpec::Receive => Kind::Receive(pb::Receive {}),
    };
    let state = match v.state {
        NextHopState::Ready => pb::NextHopState::Ready,
        NextHopState::Unresolved => pb::NextHopState::Unresolved,
        NextHopState::InterfaceMissing => pb::NextHopState::InterfaceMissing,
    };
    pb::NextHop {
        id: v.id,
        kind: Some(kind),
        packets: v.stats.packets,
        bytes: v.stats.bytes,
        routes: v.routes,
        state: state.into(),
        resolved_mac: v.resolved_mac.map(|m| m.to_string()).unwrap_or_default(),
    }
}

fn encode_route(r: &RouteSpec) -> pb::Route {
    pb::Route { vrf: r.vrf, prefix: r.prefix.to_string(), next_hop: r.nexthop }
}

/// A request's `atomicity` as the domain takes it.
fn atomicity(value: i32) -> Result<Atomicity, DomainError> {
    match pb::Atomicity::try_from(value) {
        Ok(pb::Atomicity::Unspecified | pb::Atomicity::AllOrNothing) => Ok(Atomicity::AllOrNothing),
        Ok(pb::Atomicity::ContinueOnError) => Ok(Atomicity::ContinueOnError),
        Err(_) => Err(DomainError::invalid("atomicity", format!("unknown atomicity {value}"))),
    }
}

/// The request's `replace` flag as the domain takes it.
fn on_existing(replace: bool) -> OnExisting {
    if replace {
        OnExisting::Replace
    } else {
        OnExisting::Refuse
    }
}
