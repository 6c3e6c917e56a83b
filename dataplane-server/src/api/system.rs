//! `dataplane.v1.System`.

use std::sync::Arc;

use dataplane_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::interfaces::encode_mode;
use crate::{
    dataplane::{Dataplane, Hook},
    domain::{Domain, StatusView},
};

/// Facts about the server process that are not dataplane state.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub version: String,
    pub kernel_version: String,
}

pub struct SystemService<D: Dataplane> {
    domain: Arc<Domain<D>>,
    info: ServerInfo,
}

impl<D: Dataplane> SystemService<D> {
    pub fn new(domain: Arc<Domain<D>>, info: ServerInfo) -> Self {
        Self { domain, info }
    }
}

#[tonic::async_trait]
impl<D: Dataplane> pb::system_server::System for SystemService<D> {
    async fn get_status(
        &self,
        _req: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::GetStatusResponse>, Status> {
        let s = self.domain.status()?;
        Ok(Response::new(encode_status(&self.info, s)))
    }
}

fn encode_status(info: &ServerInfo, s: StatusView) -> pb::GetStatusResponse {
    pb::GetStatusResponse {
        version: info.version.clone(),
        kernel_version: info.kernel_version.clone(),
        uptime_seconds: s.uptime.as_secs(),
        generation: s.generation,
        bpffs_root: s.bpffs_root,
        programs: s
            .programs
            .into_iter()
            .map(|p| pb::ProgramStatus {
                name: p.name,
                r#type: p.kind.to_owned(),
                kernel_id: p.kernel_id,
                tag: format!("{:016x}", p.tag),
            })
            .collect(),
        attachments: s
            .attachments
            .into_iter()
            .map(|a| pb::AttachmentStatus {
                interface: a.interface.to_string(),
                ifindex: a.ifindex,
                hook: match a.hook {
                    Hook::XdpIngress => pb::Hook::XdpIngress,
                    Hook::TcEgress => pb::Hook::TcEgress,
                }
                .into(),
                program: a.program.to_owned(),
                xdp_mode: a.xdp_mode.map(|m| encode_mode(m).into()).unwrap_or_default(),
                link_id: a.link_id,
            })
            .collect(),
        maps: s
            .maps
            .into_iter()
            .map(|m| pb::MapStatus {
                name: m.name.to_owned(),
                r#type: m.kind,
                kernel_id: m.kernel_id,
                max_entries: m.max_entries,
                key_size: m.key_size,
                value_size: m.value_size,
                occupancy: m.occupancy,
                pin_path: m.pin_path,
            })
            .collect(),
    }
}
