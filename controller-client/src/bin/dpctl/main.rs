//! `dpctl`: the operator's command line for a node's dataplane server.
//!
//! One module per gRPC service, as the server's `api/` has them: each holds its verbs' arguments
//! and turns them into requests. Everything printed goes through [`output`], so table and JSON
//! formats are written in one place.

mod events;
mod flows;
mod interfaces;
mod output;
mod policy;
mod routing;
mod stats;
mod system;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use controller_client::{code_name, Client, ServerAddress, DEFAULT_SERVER};

use output::Output;

#[derive(Debug, Parser)]
#[command(version, about = "Operate a node's eBPF dataplane")]
struct Cli {
    /// Server address: unix:PATH or http://HOST:PORT.
    #[arg(long, global = true, env = "DPCTL_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Write as the controller with this election id (metadata dataplane-election-id): needed
    /// while a controller session is the primary of the role.
    #[arg(long, global = true, env = "DPCTL_ELECTION_ID", value_parser = clap::value_parser!(u128))]
    election_id: Option<u128>,
    /// Arbitration role the election id belongs to.
    #[arg(long, global = true, env = "DPCTL_ROLE", default_value = "")]
    role: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Server version, kernel, programs, attachments and maps.
    Status,
    /// gRPC health (grpc.health.v1): prints the serving status, exits 0 only when SERVING (a
    /// liveness/readiness probe over the unix socket).
    Health {
        /// A service's own status (e.g. dataplane.v1.Routing); "" is the server's.
        #[arg(long, default_value = "")]
        service: String,
    },
    /// The dataplane as a whole: program upgrades, resync, reset.
    #[command(subcommand)]
    System(system::SystemCmd),
    /// Interfaces the dataplane owns.
    #[command(subcommand, alias = "if")]
    Interface(interfaces::InterfaceCmd),
    /// VRFs (routing table ids).
    #[command(subcommand)]
    Vrf(routing::VrfCmd),
    /// Next hops.
    #[command(subcommand, alias = "nh")]
    Nexthop(routing::NexthopCmd),
    /// Routes.
    #[command(subcommand)]
    Route(routing::RouteCmd),
    /// Policies: ordered rules attached to interfaces.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Flow-miss stream.
    #[command(subcommand)]
    Flows(flows::FlowsCmd),
    /// Flows.
    #[command(subcommand)]
    Flow(flows::FlowCmd),
    /// Flow mode of an interface.
    #[command(subcommand)]
    Flowmode(flows::FlowmodeCmd),
    /// The kernel's link, address, route and neighbour events in the server's namespace.
    #[command(subcommand)]
    Events(events::EventsCmd),
    /// Counters, live.
    #[command(subcommand)]
    Stats(stats::StatsCmd),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Status(s)) => {
            eprintln!("error: {}: {}", code_name(s.code()), s.message());
            if let Some(batch) = controller_client::batch_status(&s) {
                output::failed_entries(&batch);
            }
            ExitCode::from(1)
        }
        Err(Failure::Other(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Why a command failed; the exit code tells a refusal by the server (1) from everything that
/// never reached it (2), so scripts can tell "the dataplane said no" from "dpctl could not ask".
enum Failure {
    /// The server answered with an error status: exit 1.
    Status(tonic::Status),
    /// No answer (connection, transport): exit 2.
    Other(anyhow::Error),
    /// The command line or a file it names is wrong: exit 2.
    Usage(String),
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Self {
        Self::Status(s)
    }
}

impl From<controller_client::ConnectError> for Failure {
    fn from(e: controller_client::ConnectError) -> Self {
        Self::Other(e.into())
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let address: ServerAddress = cli.server.parse()?;
    let mut client = Client::connect(&address).await?;
    if let Some(id) = cli.election_id {
        client = client.with_credentials(controller_client::Credentials::new(&cli.role, id)?);
    }
    let (c, o) = (&mut client, cli.output);
    match cli.command {
        Command::Status => system::status(c, o).await,
        Command::Health { service } => system::health(c, service).await,
        Command::System(cmd) => system::run(c, o, cmd).await,
        Command::Interface(cmd) => interfaces::run(c, o, cmd).await,
        Command::Vrf(cmd) => routing::vrf(c, o, cmd).await,
        Command::Nexthop(cmd) => routing::nexthop(c, o, cmd).await,
        Command::Route(cmd) => routing::route(c, o, cmd).await,
        Command::Policy(cmd) => policy::run(c, o, cmd).await,
        Command::Flows(cmd) => flows::watch(c, o, cmd).await,
        Command::Stats(cmd) => stats::watch(c, o, cmd).await,
        Command::Flow(cmd) => flows::flow(c, o, cmd).await,
        Command::Flowmode(cmd) => flows::mode(c, o, cmd).await,
        Command::Events(cmd) => events::watch(c, o, cmd).await,
    }
}
