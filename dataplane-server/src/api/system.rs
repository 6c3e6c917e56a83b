//! `dataplane.v1.System`.

use std::sync::Arc;

use dataplane_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{blocking, interfaces::encode_mode};
use crate::domain::{Dataplane, Domain, DomainError, Hook, PinFix, PinRepair, StatusView};

/// Facts about the server process that are not dataplane state.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub version: String,
    pub kernel_version: String,
}

pub struct SystemService<D: Dataplane> {
    domain: Arc<Domain<D>>,
    info: ServerInfo,
    /// Told when a Reset asks the server to exit.
    exit: tokio::sync::watch::Sender<bool>,
}

impl<D: Dataplane> SystemService<D> {
    pub fn new(domain: Arc<Domain<D>>, info: ServerInfo, exit: tokio::sync::watch::Sender<bool>) -> Self {
        Self { domain, info, exit }
    }
}

#[tonic::async_trait]
impl<D: Dataplane> pb::system_server::System for SystemService<D> {
    async fn get_status(&self, _req: Request<pb::GetStatusRequest>) -> Result<Response<pb::GetStatusResponse>, Status> {
        let s = self.domain.status()?;
        let mut r = encode_status(&self.info, s);
        r.resync_open = self.domain.resync_open();
        r.instance_id = self.domain.instance_id().to_owned();
        r.sessions = self
            .domain
            .arbiter()
            .sessions()
            .into_iter()
            .map(|v| pb::SessionStatus {
                role: v.role,
                election_id: Some(super::controller::encode_id(v.election_id)),
                primary: v.primary,
                misses: v.misses,
                lost: v.lost,
                decisions: v.decisions,
            })
            .collect();
        Ok(Response::new(r))
    }

    async fn begin_resync(
        &self,
        _req: Request<pb::BeginResyncRequest>,
    ) -> Result<Response<pb::BeginResyncResponse>, Status> {
        Ok(Response::new(pb::BeginResyncResponse { generation: self.domain.begin_resync() }))
    }

    async fn end_resync(&self, _req: Request<pb::EndResyncRequest>) -> Result<Response<pb::EndResyncResponse>, Status> {
        let domain = self.domain.clone();
        let r = blocking(move || domain.end_resync()).await??;
        Ok(Response::new(pb::EndResyncResponse {
            generation: r.generation,
            routes: r.routes,
            next_hops: r.nexthops,
            policy_attachments: r.attachments,
            policies: r.policies,
            interfaces: r.interfaces,
            vrfs: r.vrfs,
            kept: r.kept,
        }))
    }

    async fn upgrade_programs(
        &self,
        req: Request<pb::UpgradeProgramsRequest>,
    ) -> Result<Response<pb::UpgradeProgramsResponse>, Status> {
        let path = req.into_inner().object_path;
        // Off the runtime: a path names whatever the caller likes (a FIFO that never opens, a
        // device that never ends), and nothing may hold up the other calls meanwhile.
        let object = match path.as_str() {
            "" => None,
            _ => Some(blocking(move || read_object(&path)).await??),
        };
        let domain = self.domain.clone();
        let (programs, generation) = blocking(move || domain.upgrade_programs(object.as_deref())).await??;
        Ok(Response::new(pb::UpgradeProgramsResponse {
            programs: programs.into_iter().map(encode_program).collect(),
            generation,
        }))
    }

    async fn reset(&self, _req: Request<pb::ResetRequest>) -> Result<Response<pb::ResetResponse>, Status> {
        let domain = self.domain.clone();
        blocking(move || domain.reset()).await?;
        let _ = self.exit.send(true);
        Ok(Response::new(pb::ResetResponse {}))
    }
}

/// The most of an object file `UpgradePrograms` reads (the server's own is well under).
const MAX_OBJECT: u64 = 64 << 20;

/// At most this much of a caller's path is echoed back in an error.
const ECHO_MAX: usize = 256;

/// The ELF object at `path`: a regular file of at most [`MAX_OBJECT`] bytes, or
/// INVALID_ARGUMENT naming `object_path`.
fn read_object(path: &str) -> Result<Vec<u8>, DomainError> {
    use std::{io::Read, os::unix::fs::OpenOptionsExt};
    let shown = if path.len() > ECHO_MAX {
        let cut = (0..=ECHO_MAX).rev().find(|i| path.is_char_boundary(*i)).unwrap_or(0);
        format!("{}... ({} bytes)", &path[..cut], path.len())
    } else {
        path.to_owned()
    };
    let bad = |why: String| DomainError::invalid("object_path", format!("{shown}: {why}"));
    // Non-blocking: opening a FIFO for reading would otherwise wait for a writer.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| bad(e.to_string()))?;
    let meta = f.metadata().map_err(|e| bad(e.to_string()))?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() > MAX_OBJECT {
        return Err(bad(format!("{} bytes, more than the {MAX_OBJECT} an object may have", meta.len())));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // Bounded even if the file grows while it is read.
    f.take(MAX_OBJECT + 1).read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
    if bytes.len() as u64 > MAX_OBJECT {
        return Err(bad(format!("more than the {MAX_OBJECT} bytes an object may have")));
    }
    Ok(bytes)
}

fn encode_program(p: crate::domain::ProgramStatus) -> pb::ProgramStatus {
    pb::ProgramStatus {
        name: p.name,
        r#type: p.kind.to_owned(),
        kernel_id: p.kernel_id,
        tag: format!("{:016x}", p.tag),
    }
}

fn encode_status(info: &ServerInfo, s: StatusView) -> pb::GetStatusResponse {
    pb::GetStatusResponse {
        version: info.version.clone(),
        kernel_version: info.kernel_version.clone(),
        uptime_seconds: s.uptime.as_secs(),
        generation: s.generation,
        bpffs_root: s.bpffs_root,
        restore: s.restore.map(|r| pb::RestoreStatus {
            state_file: r.state_file,
            adopted: r.adopted,
            disagreements: r.disagreements,
            dropped: r.dropped,
            rolled_back: r
                .rolled_back
                .map(|b| pb::RolledBackBatch { generation: b.generation, operations: b.ops as u64 }),
        }),
        programs: s.programs.into_iter().map(encode_program).collect(),
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
        resync_open: false,
        pin_health: Some(pb::PinHealth {
            repairs_total: s.pin_health.total,
            repairs: s.pin_health.repairs.into_iter().map(encode_pin_repair).collect(),
        }),
        held_misses: s.held,
        unanswered_misses: s.unanswered,
        // Filled in by the caller, from outside the domain's state.
        instance_id: String::new(),
        sessions: Vec::new(),
    }
}

fn encode_pin_repair(r: PinRepair) -> pb::PinRepair {
    let map_id = match r.fix {
        PinFix::Repinned { map_id } | PinFix::MovedAsideAndRepinned { map_id, .. } => map_id,
        PinFix::Created { .. } => 0,
    };
    pb::PinRepair {
        map: r.map.to_owned(),
        found: r.found.to_string(),
        done: r.fix.to_string(),
        phase: r.phase.to_string(),
        at_unix_ms: r.at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        map_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_object_refuses_devices_directories_and_missing_files_naming_the_field() {
        for p in ["/dev/zero", "/", "/no/such/object.o"] {
            let e = read_object(p).unwrap_err();
            let s = Status::from(e);
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{p}");
            assert!(s.message().starts_with("object_path"), "{p}: {}", s.message());
        }
        let long = "x".repeat(1 << 20);
        let s = Status::from(read_object(&long).unwrap_err());
        assert!(s.message().len() < 600, "a 1 MiB path is not echoed whole: {} bytes", s.message().len());
    }
}
