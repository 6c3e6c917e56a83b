//! `dataplane.v1.Policy`: named rule lists, attached to interfaces per direction.

use std::sync::Arc;

use dataplane_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::{
    domain::{Dataplane, Direction, Domain, DomainError, InterfaceName, PolicyName, PolicyView, RuleAction, RuleSpec},
    net::Prefix,
};

pub struct PolicyService<D: Dataplane> {
    domain: Arc<Domain<D>>,
}

impl<D: Dataplane> PolicyService<D> {
    pub fn new(domain: Arc<Domain<D>>) -> Self {
        Self { domain }
    }
}

#[tonic::async_trait]
impl<D: Dataplane> pb::policy_server::Policy for PolicyService<D> {
    async fn put_policy(&self, req: Request<pb::PutPolicyRequest>) -> Result<Response<pb::PutPolicyResponse>, Status> {
        let req = req.into_inner();
        let name = PolicyName::parse("name", &req.name)?;
        let rules = req
            .rules
            .into_iter()
            .enumerate()
            .map(|(i, r)| decode_rule(&format!("rules[{i}]"), r))
            .collect::<Result<Vec<_>, _>>()?;
        let generation = self.domain.put_policy(name, rules)?;
        Ok(Response::new(pb::PutPolicyResponse { generation }))
    }

    async fn delete_policy(
        &self,
        req: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let name = PolicyName::parse("name", &req.into_inner().name)?;
        let generation = self.domain.delete_policy(&name)?;
        Ok(Response::new(pb::DeletePolicyResponse { generation }))
    }

    async fn list_policies(
        &self,
        req: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let req = req.into_inner();
        let name = match req.name.as_str() {
            "" => None,
            n => Some(PolicyName::parse("name", n)?),
        };
        let policies = self.domain.list_policies(name.as_ref())?.into_iter().map(encode_policy).collect();
        Ok(Response::new(pb::ListPoliciesResponse { policies }))
    }

    async fn attach_policy(
        &self,
        req: Request<pb::AttachPolicyRequest>,
    ) -> Result<Response<pb::AttachPolicyResponse>, Status> {
        let req = req.into_inner();
        let policy = PolicyName::parse("policy", &req.policy)?;
        let interface = InterfaceName::parse("interface", &req.interface)?;
        let direction = decode_direction(req.direction)?;
        let default_deny = match pb::Action::try_from(req.default_action) {
            Ok(pb::Action::Unspecified | pb::Action::Allow) => false,
            Ok(pb::Action::Deny) => true,
            _ => return Err(DomainError::invalid("default_action", "ALLOW or DENY").into()),
        };
        let generation = self.domain.attach_policy(&policy, &interface, direction, default_deny)?;
        Ok(Response::new(pb::AttachPolicyResponse { generation }))
    }

    async fn detach_policy(
        &self,
        req: Request<pb::DetachPolicyRequest>,
    ) -> Result<Response<pb::DetachPolicyResponse>, Status> {
        let req = req.into_inner();
        let interface = InterfaceName::parse("interface", &req.interface)?;
        let direction = decode_direction(req.direction)?;
        let generation = self.domain.detach_policy(&interface, direction)?;
        Ok(Response::new(pb::DetachPolicyResponse { generation }))
    }
}

fn decode_direction(d: i32) -> Result<Direction, DomainError> {
    match pb::Direction::try_from(d) {
        Ok(pb::Direction::Ingress) => Ok(Direction::Ingress),
        Ok(pb::Direction::Egress) => Ok(Direction::Egress),
        _ => Err(DomainError::invalid("direction", "INGRESS or EGRESS is required")),
    }
}

fn decode_rule(at: &str, r: pb::Rule) -> Result<RuleSpec, DomainError> {
    let f = |name: &str| format!("{at}.{name}");
    let prefix = |name: &str, s: &str| -> Result<Option<Prefix>, DomainError> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|e: crate::net::ParseError| DomainError::invalid(f(name), e.to_string()))
    };
    let byte = |name: &str, v: Option<u32>| -> Result<Option<u8>, DomainError> {
        v.map(|v| u8::try_from(v).map_err(|_| DomainError::invalid(f(name), format!("{v} is not 0-255")))).transpose()
    };
    let ports = |name: &str, p: Option<pb::PortRange>| -> Result<Option<(u16, u16)>, DomainError> {
        p.map(|p| {
            let a = u16::try_from(p.first)
                .map_err(|_| DomainError::invalid(f(name), format!("first {} is not a port", p.first)))?;
            let b = u16::try_from(p.last)
                .map_err(|_| DomainError::invalid(f(name), format!("last {} is not a port", p.last)))?;
            Ok((a, b))
        })
        .transpose()
    };
    let tcp_flags = match r.tcp_flags {
        None => None,
        Some(t) => {
            let mask = u8::try_from(t.mask).map_err(|_| DomainError::invalid(f("tcp_flags.mask"), "not 0-255"))?;
            let value = u8::try_from(t.value).map_err(|_| DomainError::invalid(f("tcp_flags.value"), "not 0-255"))?;
            Some((mask, value))
        }
    };
    let action = match pb::Action::try_from(r.action) {
        Ok(pb::Action::Allow) => RuleAction::Allow,
        Ok(pb::Action::Deny) => RuleAction::Deny,
        Ok(pb::Action::Punt) => RuleAction::Punt,
        _ => return Err(DomainError::invalid(f("action"), "ALLOW, DENY or PUNT is required")),
    };
    Ok(RuleSpec {
        priority: r.priority,
        src: prefix("src_prefix", &r.src_prefix)?,
        dst: prefix("dst_prefix", &r.dst_prefix)?,
        protocol: byte("protocol", r.protocol)?,
        src_ports: ports("src_ports", r.src_ports)?,
        dst_ports: ports("dst_ports", r.dst_ports)?,
        icmp_type: byte("icmp_type", r.icmp_type)?,
        icmp_code: byte("icmp_code", r.icmp_code)?,
        tcp_flags,
        action,
    })
}

fn encode_policy(p: PolicyView) -> pb::PolicyInfo {
    pb::PolicyInfo {
        name: p.name.to_string(),
        rules: p
            .rules
            .into_iter()
            .map(|v| {
                let r = v.rule;
                pb::Rule {
                    priority: r.priority,
                    src_prefix: r.src.map(|p| p.to_string()).unwrap_or_default(),
                    dst_prefix: r.dst.map(|p| p.to_string()).unwrap_or_default(),
                    protocol: r.protocol.map(u32::from),
                    src_ports: r.src_ports.map(|(a, b)| pb::PortRange { first: a.into(), last: b.into() }),
                    dst_ports: r.dst_ports.map(|(a, b)| pb::PortRange { first: a.into(), last: b.into() }),
                    icmp_type: r.icmp_type.map(u32::from),
                    icmp_code: r.icmp_code.map(u32::from),
                    tcp_flags: r.tcp_flags.map(|(m, v)| pb::TcpFlags { mask: m.into(), value: v.into() }),
                    action: match r.action {
                        RuleAction::Allow => pb::Action::Allow,
                        RuleAction::Deny => pb::Action::Deny,
                        RuleAction::Punt => pb::Action::Punt,
                    } as i32,
                    packets: v.packets,
                    bytes: v.bytes,
                }
            })
            .collect(),
        attachments: p
            .attachments
            .into_iter()
            .map(|a| pb::PolicyAttachment {
                interface: a.interface.to_string(),
                direction: match a.direction {
                    Direction::Ingress => pb::Direction::Ingress,
                    Direction::Egress => pb::Direction::Egress,
                } as i32,
                default_action: if a.default_deny { pb::Action::Deny } else { pb::Action::Allow } as i32,
            })
            .collect(),
    }
}
