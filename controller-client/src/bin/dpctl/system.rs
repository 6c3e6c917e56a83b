//! The System service: `dpctl status` and `dpctl system upgrade|resync-begin|resync-end|reset`.

use clap::Subcommand;
use controller_client::{pb, Client};

use crate::{output, Failure, Output};

/// `dpctl system`.
#[derive(Debug, Subcommand)]
pub enum SystemCmd {
    /// Switch every interface to new programs, hitless: this server build's, or --object FILE.
    Upgrade {
        #[arg(long)]
        object: Option<String>,
    },
    /// Open a resync: replays of existing state succeed and mark it kept.
    ResyncBegin,
    /// Close the resync: remove everything not replayed since resync-begin.
    ResyncEnd,
    /// Detach the dataplane everywhere, remove every pin and the state file; the server exits.
    Reset,
}

/// `dpctl health`: the server's gRPC health (`grpc.health.v1.Health/Check`); exits 0 only when
/// SERVING, so it serves as a liveness or readiness probe.
pub async fn health(client: &mut Client, service: String) -> Result<(), Failure> {
    use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
    let r = client.health().check(HealthCheckRequest { service }).await?.into_inner();
    let status = ServingStatus::try_from(r.status).unwrap_or(ServingStatus::Unknown);
    println!("{}", status.as_str_name());
    if status == ServingStatus::Serving {
        Ok(())
    } else {
        Err(Failure::Status(tonic::Status::unavailable(format!("health: {}", status.as_str_name()))))
    }
}

/// `dpctl status`.
pub async fn status(client: &mut Client, output: Output) -> Result<(), Failure> {
    let s = client.system.get_status(pb::GetStatusRequest {}).await?.into_inner();
    output::status(output, &s);
    Ok(())
}

/// Upgrades programs, opens or closes a resync, or resets the dataplane.
pub async fn run(client: &mut Client, output: Output, cmd: SystemCmd) -> Result<(), Failure> {
    match cmd {
        SystemCmd::Upgrade { object } => {
            let req = pb::UpgradeProgramsRequest { object_path: object.unwrap_or_default() };
            let r = client.system.upgrade_programs(req).await?.into_inner();
            output::upgraded(output, &r);
        }
        SystemCmd::ResyncBegin => {
            let r = client.system.begin_resync(pb::BeginResyncRequest {}).await?.into_inner();
            output::done(output, "resync begun", r.generation);
        }
        SystemCmd::ResyncEnd => {
            let r = client.system.end_resync(pb::EndResyncRequest {}).await?.into_inner();
            output::resync_ended(output, &r);
        }
        SystemCmd::Reset => {
            client.system.reset(pb::ResetRequest {}).await?;
            output::reset(output);
        }
    }
    Ok(())
}
