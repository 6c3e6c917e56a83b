//! The Flows service: `dpctl flowmode set`, `dpctl flow add|del|list` and `dpctl flows watch`.

use clap::{Args, Subcommand, ValueEnum};
use controller_client::{pb, Client};

use crate::{output, Failure, Output};

/// `dpctl flows`.
#[derive(Debug, Subcommand)]
pub enum FlowsCmd {
    /// Print flow misses as they come (Ctrl-C to stop); -o json prints one JSON object per line.
    Watch {
        #[arg(long)]
        interface: Option<String>,
        #[arg(long)]
        vrf: Option<u32>,
    },
}

/// A flow key on the command line.
#[derive(Debug, Args)]
pub struct FlowKeyArgs {
    #[arg(long)]
    src: String,
    #[arg(long)]
    dst: String,
    /// tcp, udp, icmp, icmpv6 or a number.
    #[arg(long)]
    proto: String,
    #[arg(long, default_value_t = 0)]
    sport: u32,
    #[arg(long, default_value_t = 0)]
    dport: u32,
    #[arg(long, default_value_t = 0)]
    vrf: u32,
}

/// `dpctl flow`.
#[derive(Debug, Subcommand)]
pub enum FlowCmd {
    /// Install a flow: --nexthop ID (forward) or --drop; --reverse-nexthop ID also installs the
    /// reply direction.
    Add {
        #[command(flatten)]
        key: FlowKeyArgs,
        #[arg(long, conflicts_with = "drop", required_unless_present = "drop")]
        nexthop: Option<u32>,
        #[arg(long)]
        drop: bool,
        #[arg(long)]
        reverse_nexthop: Option<u32>,
    },
    #[command(alias = "delete")]
    Del {
        #[command(flatten)]
        key: FlowKeyArgs,
    },
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        vrf: Option<u32>,
    },
}

/// `dpctl flowmode`.
#[derive(Debug, Subcommand)]
pub enum FlowmodeCmd {
    /// Turn flow mode on (or off with --off) for an interface.
    Set {
        interface: String,
        #[arg(long)]
        off: bool,
        /// While a flow is held: drop (its first packet is re-injected once installed) or
        /// forward by route.
        #[arg(long, value_enum, default_value_t = MissMode::Drop)]
        miss: MissMode,
        #[arg(long, default_value_t = 4096)]
        hold_cap: u32,
        /// Punts per second per CPU.
        #[arg(long, default_value_t = 1000)]
        punt_rate: u32,
        #[arg(long, default_value_t = 100)]
        punt_burst: u32,
    },
}

/// `--miss`: what a packet of a held flow meets.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum MissMode {
    Drop,
    Route,
}

fn key(k: FlowKeyArgs) -> Result<pb::FlowKey, Failure> {
    let protocol = match k.proto.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" => 1,
        "icmpv6" => 58,
        other => other
            .parse()
            .map_err(|_| Failure::Usage(format!("--proto {other:?}: tcp, udp, icmp, icmpv6 or a number")))?,
    };
    Ok(pb::FlowKey { vrf: k.vrf, src: k.src, dst: k.dst, protocol, src_port: k.sport, dst_port: k.dport })
}

/// Prints flow misses until the stream ends or dpctl is stopped.
pub async fn watch(client: &mut Client, output: Output, cmd: FlowsCmd) -> Result<(), Failure> {
    let FlowsCmd::Watch { interface, vrf } = cmd;
    let req = pb::SubscribeFlowMissesRequest { interface: interface.unwrap_or_default(), vrf };
    let mut stream = client.flows.subscribe_flow_misses(req).await?.into_inner();
    while let Some(m) = stream.message().await? {
        output::flow_miss(output, m);
    }
    Ok(())
}

/// Installs, deletes or lists flows.
pub async fn flow(client: &mut Client, output: Output, cmd: FlowCmd) -> Result<(), Failure> {
    match cmd {
        FlowCmd::Add { key: k, nexthop, drop, reverse_nexthop } => {
            let (action, next_hop) =
                if drop { (pb::FlowAction::Drop, 0) } else { (pb::FlowAction::Forward, nexthop.unwrap_or(0)) };
            let flow = pb::Flow {
                key: Some(key(k)?),
                action: action as i32,
                next_hop,
                reverse_action: if reverse_nexthop.is_some() { pb::FlowAction::Forward as i32 } else { 0 },
                reverse_next_hop: reverse_nexthop.unwrap_or(0),
                ..Default::default()
            };
            let r = client
                .flows
                .install_flows(pb::InstallFlowsRequest { flows: vec![flow], ..Default::default() })
                .await?
                .into_inner();
            output::done(output, "flow installed", r.generation);
        }
        FlowCmd::Del { key: k } => {
            let r = client
                .flows
                .delete_flows(pb::DeleteFlowsRequest { keys: vec![key(k)?], ..Default::default() })
                .await?
                .into_inner();
            output::done(output, "flow deleted", r.generation);
        }
        FlowCmd::List { vrf } => {
            let mut stream = client.flows.list_flows(pb::ListFlowsRequest { vrf }).await?.into_inner();
            let mut flows = Vec::new();
            while let Some(c) = stream.message().await? {
                flows.extend(c.flows);
            }
            output::flows(output, &flows);
        }
    }
    Ok(())
}

/// Sets an interface's flow mode.
pub async fn mode(client: &mut Client, output: Output, cmd: FlowmodeCmd) -> Result<(), Failure> {
    let FlowmodeCmd::Set { interface, off, miss, hold_cap, punt_rate, punt_burst } = cmd;
    let miss_action = match miss {
        MissMode::Drop => pb::MissAction::Drop,
        MissMode::Route => pb::MissAction::ForwardByRoute,
    } as i32;
    let req = pb::SetFlowModeRequest {
        interface: interface.clone(),
        enabled: !off,
        miss_action,
        hold_cap,
        punt_rate,
        punt_burst,
    };
    let r = client.flows.set_flow_mode(req).await?.into_inner();
    output::done(output, format!("flow mode {} for {interface}", if off { "off" } else { "on" }), r.generation);
    Ok(())
}
