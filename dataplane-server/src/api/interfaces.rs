//! `dataplane.v1.Interfaces`.

use std::sync::Arc;

use dataplane_common::{reason::ReasonKind, Reason};
use dataplane_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{AddInterface, Dataplane, Domain, DomainError, InterfaceName, InterfaceView, XdpMode};

pub struct InterfacesService<D: Dataplane> {
    domain: Arc<Domain<D>>,
}

impl<D: Dataplane> InterfacesService<D> {
    pub fn new(domain: Arc<Domain<D>>) -> Self {
        Self { domain }
    }
}

#[tonic::async_trait]
impl<D: Dataplane> pb::interfaces_server::Interfaces for InterfacesService<D> {
    async fn add_interface(
        &self,
        req: Request<pb::AddInterfaceRequest>,
    ) -> Result<Response<pb::AddInterfaceResponse>, Status> {
        let req = AddInterface::try_from(req.into_inner())?;
        let (view, generation) = self.domain.add_interface(req)?;
        Ok(Response::new(pb::AddInterfaceResponse { interface: Some(view.into()), generation }))
    }

    async fn delete_interface(
        &self,
        req: Request<pb::DeleteInterfaceRequest>,
    ) -> Result<Response<pb::DeleteInterfaceResponse>, Status> {
        let name = InterfaceName::parse("name", &req.into_inner().name)?;
        let generation = self.domain.delete_interface(&name)?;
        Ok(Response::new(pb::DeleteInterfaceResponse { generation }))
    }

    async fn list_interfaces(
        &self,
        req: Request<pb::ListInterfacesRequest>,
    ) -> Result<Response<pb::ListInterfacesResponse>, Status> {
        let req = req.into_inner();
        let name = match req.name.as_str() {
            "" => None,
            n => Some(InterfaceName::parse("name", n)?),
        };
        let views = self.domain.list_interfaces(name.as_ref())?;
        Ok(Response::new(pb::ListInterfacesResponse { interfaces: views.into_iter().map(Into::into).collect() }))
    }
}

impl TryFrom<pb::AddInterfaceRequest> for AddInterface {
    type Error = DomainError;

    fn try_from(r: pb::AddInterfaceRequest) -> Result<Self, DomainError> {
        Ok(AddInterface {
            name: InterfaceName::parse("name", &r.name)?,
            mode: decode_mode("xdp_mode", r.xdp_mode)?,
            vrf: r.vrf,
        })
    }
}

fn decode_mode(field: &str, v: i32) -> Result<XdpMode, DomainError> {
    match pb::XdpMode::try_from(v) {
        Ok(pb::XdpMode::Unspecified | pb::XdpMode::Auto) => Ok(XdpMode::Auto),
        Ok(pb::XdpMode::Native) => Ok(XdpMode::Native),
        Ok(pb::XdpMode::Generic) => Ok(XdpMode::Generic),
        Err(_) => Err(DomainError::invalid(field, format!("unknown XDP mode {v}"))),
    }
}

pub(super) fn encode_mode(m: XdpMode) -> pb::XdpMode {
    match m {
        XdpMode::Auto => pb::XdpMode::Auto,
        XdpMode::Native => pb::XdpMode::Native,
        XdpMode::Generic => pb::XdpMode::Generic,
    }
}

/// The counters as the API has them; `changed_only` leaves out reasons that counted nothing
/// (what a delta of a few busy reasons needs, not the ~40 there are).
pub(super) fn encode_counters(s: &dataplane_common::InterfaceStats, changed_only: bool) -> pb::InterfaceCounters {
    let mut counters = pb::InterfaceCounters {
        rx_packets: s.rx_packets,
        rx_bytes: s.rx_bytes,
        tx_packets: s.tx_packets,
        tx_bytes: s.tx_bytes,
        ..Default::default()
    };
    for r in Reason::ALL {
        let packets = s.reasons[*r as usize];
        let kind = match r.kind() {
            ReasonKind::Pass => pb::ReasonKind::Pass,
            ReasonKind::ParseError => {
                counters.rx_parse_errors += packets;
                pb::ReasonKind::ParseError
            }
            ReasonKind::Drop => {
                counters.rx_dropped += packets;
                pb::ReasonKind::Drop
            }
        };
        if !changed_only || packets != 0 {
            counters.reasons.push(pb::ReasonCounter { reason: r.name().to_owned(), kind: kind.into(), packets });
        }
    }
    counters
}

impl From<InterfaceView> for pb::Interface {
    fn from(v: InterfaceView) -> Self {
        let counters = encode_counters(&v.stats, false);
        pb::Interface {
            name: v.name.to_string(),
            ifindex: v.link.ifindex,
            slot: v.slot,
            vrf: v.vrf,
            mtu: v.link.mtu,
            mac: v.link.mac.to_string(),
            requested_xdp_mode: encode_mode(v.requested).into(),
            xdp_mode: encode_mode(v.attachment.xdp_mode).into(),
            counters: Some(counters),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_interface_request_unknown_mode_invalid_argument_names_field() {
        let e =
            AddInterface::try_from(pb::AddInterfaceRequest { name: "eth0".into(), xdp_mode: 9, vrf: 0 }).unwrap_err();
        assert_eq!(Status::from(e).message(), "xdp_mode: unknown XDP mode 9");
    }

    #[test]
    fn add_interface_request_unspecified_mode_means_auto() {
        let r = AddInterface::try_from(pb::AddInterfaceRequest { name: "eth0".into(), xdp_mode: 0, vrf: 0 }).unwrap();
        assert_eq!(r.mode, XdpMode::Auto);
    }
}
