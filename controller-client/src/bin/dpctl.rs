//! `dpctl`: the operator's command line for a node's dataplane server.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use controller_client::{code_name, pb, Client, ServerAddress, DEFAULT_SERVER};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(version, about = "Operate a node's eBPF dataplane")]
struct Cli {
    /// Server address: unix:PATH or http://HOST:PORT.
    #[arg(long, global = true, env = "DPCTL_SERVER", default_value = DEFAULT_SERVER)]
    server: String,
    /// Output format.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Server version, kernel, programs, attachments and maps.
    Status,
    /// The dataplane as a whole: program upgrades, resync, reset.
    #[command(subcommand)]
    System(SystemCmd),
    /// Interfaces the dataplane owns.
    #[command(subcommand, alias = "if")]
    Interface(InterfaceCmd),
    /// VRFs (routing table ids).
    #[command(subcommand)]
    Vrf(VrfCmd),
    /// Next hops.
    #[command(subcommand, alias = "nh")]
    Nexthop(NexthopCmd),
    /// Routes.
    #[command(subcommand)]
    Route(RouteCmd),
    /// Policies: ordered rules attached to interfaces.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Flow-miss stream.
    #[command(subcommand)]
    Flows(FlowsCmd),
    /// Flows.
    #[command(subcommand)]
    Flow(FlowCmd),
    /// Flow mode of an interface.
    #[command(subcommand)]
    Flowmode(FlowmodeCmd),
    /// The kernel's link, address, route and neighbour events in the server's namespace.
    #[command(subcommand)]
    Events(EventsCmd),
}

#[derive(Debug, Subcommand)]
enum SystemCmd {
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

#[derive(Debug, Subcommand)]
enum EventsCmd {
    /// Print netlink events as they come (Ctrl-C to stop); -o json prints one JSON object per line.
    Watch {
        /// Only these kinds (repeatable): link, address, route, neighbour.
        #[arg(long = "kind", value_parser = ["link", "address", "route", "neighbour"])]
        kinds: Vec<String>,
        /// Only events of this interface.
        #[arg(long)]
        interface: Option<String>,
        /// Start with the current state.
        #[arg(long)]
        snapshot: bool,
    },
}

#[derive(Debug, Subcommand)]
enum FlowsCmd {
    /// Print flow misses as they come (Ctrl-C to stop); -o json prints one JSON object per line.
    Watch {
        #[arg(long)]
        interface: Option<String>,
        #[arg(long)]
        vrf: Option<u32>,
    },
}

/// A flow key on the command line.
#[derive(Debug, clap::Args)]
struct FlowKeyArgs {
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

#[derive(Debug, Subcommand)]
enum FlowCmd {
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

#[derive(Debug, Subcommand)]
enum FlowmodeCmd {
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

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MissMode {
    Drop,
    Route,
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Create or atomically replace a policy from a YAML or JSON rules file.
    Put {
        name: String,
        #[arg(long)]
        file: std::path::PathBuf,
    },
    #[command(alias = "delete")]
    Del { name: String },
    /// Policies with their rules, per-rule hit counters and attachments.
    #[command(alias = "ls")]
    List { name: Option<String> },
    /// Attach to an interface and direction (replacing what is there, atomically).
    Attach {
        name: String,
        #[arg(long)]
        interface: String,
        #[arg(long, value_enum, default_value_t = Dir::Ingress)]
        direction: Dir,
        /// What happens when no rule matches.
        #[arg(long = "default", value_enum, default_value_t = DefaultAction::Allow)]
        default_action: DefaultAction,
    },
    Detach {
        #[arg(long)]
        interface: String,
        #[arg(long, value_enum, default_value_t = Dir::Ingress)]
        direction: Dir,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Dir {
    Ingress,
    Egress,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DefaultAction {
    Allow,
    Deny,
}

#[derive(Debug, Subcommand)]
enum VrfCmd {
    Add {
        id: u32,
        /// Forward by the kernel's routing and neighbour tables (`ip route`) instead of routes
        /// added through the API.
        #[arg(long)]
        kernel_fib: bool,
        /// With --kernel-fib: the kernel table to look up (default: the kernel's own choice).
        #[arg(long, requires = "kernel_fib")]
        table: Option<u32>,
    },
    #[command(alias = "delete")]
    Del { id: u32 },
    #[command(alias = "ls")]
    List,
}

#[derive(Debug, Subcommand)]
enum NexthopCmd {
    /// Add a next hop: --interface + --dst-mac or --gateway (ENCAP), --ecmp, --discard or --receive.
    Add {
        id: u32,
        #[arg(long, conflicts_with_all = ["ecmp", "discard", "receive"])]
        interface: Option<String>,
        #[arg(long, requires = "interface", conflicts_with = "gateway")]
        dst_mac: Option<String>,
        /// A neighbour on the interface's link, resolved by the kernel (ARP/ND) and followed.
        #[arg(long, requires = "interface")]
        gateway: Option<String>,
        #[arg(long, requires = "interface")]
        src_mac: Option<String>,
        /// Member next-hop ids, comma-separated.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["discard", "receive"])]
        ecmp: Option<Vec<u32>>,
        #[arg(long, conflicts_with = "receive")]
        discard: bool,
        #[arg(long)]
        receive: bool,
        /// Rewrite the next hop in place if the id exists (routes using it follow at once).
        #[arg(long)]
        replace: bool,
    },
    #[command(alias = "delete")]
    Del {
        #[arg(required = true)]
        ids: Vec<u32>,
    },
    #[command(alias = "ls")]
    List,
}

#[derive(Debug, Subcommand)]
enum RouteCmd {
    /// Add one route, or every route of --file (lines: PREFIX NEXTHOP [VRF]; # comments).
    Add {
        #[arg(required_unless_present = "file")]
        prefix: Option<String>,
        #[arg(long, required_unless_present = "file")]
        nexthop: Option<u32>,
        #[arg(long, default_value_t = 0)]
        vrf: u32,
        #[arg(long, conflicts_with = "prefix")]
        file: Option<std::path::PathBuf>,
        /// Point existing routes at their new next hop in place instead of refusing them.
        #[arg(long)]
        replace: bool,
    },
    /// Delete one route, or every route of --file (same format; the next hop column is ignored).
    #[command(alias = "delete")]
    Del {
        #[arg(required_unless_present = "file")]
        prefix: Option<String>,
        #[arg(long, default_value_t = 0)]
        vrf: u32,
        #[arg(long, conflicts_with = "prefix")]
        file: Option<std::path::PathBuf>,
    },
    #[command(alias = "ls")]
    List {
        #[arg(long)]
        vrf: Option<u32>,
        /// Only routes inside this prefix.
        #[arg(long)]
        prefix: Option<String>,
    },
    /// The longest-prefix match for an address, as the XDP program sees it.
    Lookup {
        address: String,
        #[arg(long, default_value_t = 0)]
        vrf: u32,
    },
}

#[derive(Debug, Subcommand)]
enum InterfaceCmd {
    /// Attach the dataplane to a kernel interface.
    Add {
        name: String,
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
        /// VRF whose routes forward this interface's traffic.
        #[arg(long, default_value_t = 0)]
        vrf: u32,
    },
    /// Detach the dataplane from an interface.
    #[command(alias = "delete")]
    Del { name: String },
    /// Attached interfaces with their counters.
    #[command(alias = "ls")]
    List { name: Option<String> },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Mode {
    Auto,
    Native,
    Generic,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Status(s)) => {
            eprintln!("error: {}: {}", code_name(s.code()), s.message());
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

enum Failure {
    Status(tonic::Status),
    Other(anyhow::Error),
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
    match cli.command {
        Command::Status => {
            let s = client.system.get_status(pb::GetStatusRequest {}).await.map_err(Failure::Status)?.into_inner();
            print_status(cli.output, &s);
        }
        Command::System(cmd) => system(&mut client, cli.output, cmd).await?,
        Command::Interface(InterfaceCmd::Add { name, mode, vrf }) => {
            let xdp_mode = match mode {
                Mode::Auto => pb::XdpMode::Auto,
                Mode::Native => pb::XdpMode::Native,
                Mode::Generic => pb::XdpMode::Generic,
            };
            let r = client
                .interfaces
                .add_interface(pb::AddInterfaceRequest { name, xdp_mode: xdp_mode.into(), vrf })
                .await
                .map_err(Failure::Status)?
                .into_inner();
            let iface = r.interface.unwrap_or_default();
            match cli.output {
                Output::Json => println!("{}", json!({"interface": iface_json(&iface), "generation": r.generation})),
                Output::Table => println!(
                    "attached {} (ifindex {}, slot {}, xdp {}), generation {}",
                    iface.name,
                    iface.ifindex,
                    iface.slot,
                    mode_name(iface.xdp_mode),
                    r.generation
                ),
            }
        }
        Command::Interface(InterfaceCmd::Del { name }) => {
            let r = client
                .interfaces
                .delete_interface(pb::DeleteInterfaceRequest { name: name.clone() })
                .await
                .map_err(Failure::Status)?
                .into_inner();
            match cli.output {
                Output::Json => println!("{}", json!({"generation": r.generation})),
                Output::Table => println!("detached {name}, generation {}", r.generation),
            }
        }
        Command::Interface(InterfaceCmd::List { name }) => {
            let r = client
                .interfaces
                .list_interfaces(pb::ListInterfacesRequest { name: name.unwrap_or_default() })
                .await
                .map_err(Failure::Status)?
                .into_inner();
            print_interfaces(cli.output, &r.interfaces);
        }
        Command::Vrf(cmd) => routing::vrf(&mut client, cli.output, cmd).await?,
        Command::Nexthop(cmd) => routing::nexthop(&mut client, cli.output, cmd).await?,
        Command::Route(cmd) => routing::route(&mut client, cli.output, cmd).await?,
        Command::Policy(cmd) => policy::run(&mut client, cli.output, cmd).await?,
        Command::Flows(cmd) => flows::watch(&mut client, cli.output, cmd).await?,
        Command::Flow(cmd) => flows::flow(&mut client, cli.output, cmd).await?,
        Command::Flowmode(cmd) => flows::mode(&mut client, cli.output, cmd).await?,
        Command::Events(cmd) => events::watch(&mut client, cli.output, cmd).await?,
    }
    Ok(())
}

async fn system(client: &mut controller_client::Client, output: Output, cmd: SystemCmd) -> Result<(), Failure> {
    use serde_json::json;
    match cmd {
        SystemCmd::Upgrade { object } => {
            let r = client
                .system
                .upgrade_programs(pb::UpgradeProgramsRequest { object_path: object.unwrap_or_default() })
                .await?
                .into_inner();
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"generation": r.generation, "programs": r.programs.iter().map(|p| json!({"name": p.name, "id": p.kernel_id, "tag": p.tag})).collect::<Vec<_>>()})
                ),
                Output::Table => {
                    let ids: Vec<String> =
                        r.programs.iter().map(|p| format!("{} id {}", p.name, p.kernel_id)).collect();
                    println!("programs upgraded: {}, generation {}", ids.join(", "), r.generation);
                }
            }
        }
        SystemCmd::ResyncBegin => {
            let r = client.system.begin_resync(pb::BeginResyncRequest {}).await?.into_inner();
            routing::generation(output, "resync begun".into(), r.generation);
        }
        SystemCmd::ResyncEnd => {
            let r = client.system.end_resync(pb::EndResyncRequest {}).await?.into_inner();
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"generation": r.generation, "removed": {"routes": r.routes, "next_hops": r.next_hops,
                           "policy_attachments": r.policy_attachments, "policies": r.policies, "interfaces": r.interfaces,
                           "vrfs": r.vrfs}, "kept": r.kept})
                ),
                Output::Table => println!(
                    "resync ended, generation {}: removed {} route(s), {} next hop(s), {} policy attachment(s), {} policy(ies), {} interface(s), {} vrf(s){}",
                    r.generation,
                    r.routes,
                    r.next_hops,
                    r.policy_attachments,
                    r.policies,
                    r.interfaces,
                    r.vrfs,
                    if r.kept.is_empty() { String::new() } else { format!("; kept (still used): {}", r.kept.join(", ")) }
                ),
            }
        }
        SystemCmd::Reset => {
            client.system.reset(pb::ResetRequest {}).await?;
            match output {
                Output::Json => println!("{}", json!({"reset": true})),
                Output::Table => println!("reset: the dataplane is detached, its pins removed; the server exits"),
            }
        }
    }
    Ok(())
}

mod events {
    //! `dpctl events watch`.

    use controller_client::{pb, Client};
    use serde_json::json;

    use super::{EventsCmd, Failure, Output};

    pub async fn watch(client: &mut Client, output: Output, cmd: EventsCmd) -> Result<(), Failure> {
        let EventsCmd::Watch { kinds, interface, snapshot } = cmd;
        let kinds = kinds
            .iter()
            .map(|k| match k.as_str() {
                "link" => pb::NetlinkEventKind::Link,
                "address" => pb::NetlinkEventKind::Address,
                "route" => pb::NetlinkEventKind::Route,
                _ => pb::NetlinkEventKind::Neighbour,
            } as i32)
            .collect();
        let req = pb::SubscribeNetlinkEventsRequest { kinds, interface: interface.unwrap_or_default(), snapshot };
        let mut stream = client.events.subscribe_netlink_events(req).await?.into_inner();
        while let Some(m) = stream.message().await? {
            use pb::netlink_event_message::Kind;
            match (m.kind, output) {
                (Some(Kind::Event(e)), Output::Json) => println!("{}", event_json(&e)),
                (Some(Kind::Event(e)), Output::Table) => println!("{}", event_text(&e)),
                (Some(Kind::Lagged(n)), Output::Json) => println!("{}", json!({"lagged": n})),
                (Some(Kind::Lagged(n)), Output::Table) => println!("lagged: {n} events lost"),
                (Some(Kind::SnapshotDone(d)), Output::Json) => println!("{}", json!({"snapshot_done": d.entries})),
                (Some(Kind::SnapshotDone(d)), Output::Table) => {
                    println!("-- snapshot: {} entries; live events follow --", d.entries)
                }
                (Some(Kind::KernelOverrun(o)), Output::Json) => println!("{}", json!({"kernel_overrun": o.seq})),
                (Some(Kind::KernelOverrun(o)), Output::Table) => {
                    println!(
                        "#{} the kernel dropped events (netlink overrun): resubscribe with --snapshot to resync",
                        o.seq
                    )
                }
                (None, _) => {}
            }
        }
        Ok(())
    }

    fn action(e: &pb::NetlinkEvent) -> &'static str {
        match pb::EventAction::try_from(e.action) {
            Ok(pb::EventAction::Added) => "added",
            Ok(pb::EventAction::Removed) => "removed",
            Ok(pb::EventAction::Changed) => "changed",
            _ => "?",
        }
    }

    fn event_json(e: &pb::NetlinkEvent) -> serde_json::Value {
        use pb::netlink_event::Detail;
        let mut v = json!({"seq": e.seq, "snapshot": e.snapshot, "action": action(e), "ifindex": e.ifindex, "interface": e.interface});
        let (kind, detail) = match &e.detail {
            Some(Detail::Link(l)) => (
                "link",
                json!({"up": l.up, "running": l.running, "mtu": l.mtu, "mac": l.mac, "changes": l.changes, "owned": l.owned}),
            ),
            Some(Detail::Address(a)) => ("address", json!({"address": a.address, "prefix_len": a.prefix_len})),
            Some(Detail::Route(r)) => (
                "route",
                json!({"destination": r.destination, "gateway": r.gateway, "table": r.table, "metric": r.metric, "protocol": r.protocol, "type": r.r#type}),
            ),
            Some(Detail::Neighbour(n)) => {
                ("neighbour", json!({"address": n.address, "mac": n.mac, "state": n.state, "router": n.router}))
            }
            None => ("?", json!({})),
        };
        v["kind"] = json!(kind);
        v[kind] = detail;
        v
    }

    fn event_text(e: &pb::NetlinkEvent) -> String {
        use pb::netlink_event::Detail;
        let head = if e.snapshot { "snapshot".to_owned() } else { format!("#{}", e.seq) };
        let what = match &e.detail {
            Some(Detail::Link(l)) => format!(
                "link {} {} (ifindex {}) {} mtu {} {}{}{}",
                action(e),
                e.interface,
                e.ifindex,
                if l.up { "up" } else { "down" },
                l.mtu,
                l.mac,
                if l.changes.is_empty() { String::new() } else { format!(" changed: {}", l.changes.join(",")) },
                if l.owned { " [owned]" } else { "" }
            ),
            Some(Detail::Address(a)) => {
                format!("address {} {}/{} dev {}", action(e), a.address, a.prefix_len, e.interface)
            }
            Some(Detail::Route(r)) => format!(
                "route {} {}{} dev {} table {} metric {} proto {} type {}",
                action(e),
                r.destination,
                if r.gateway.is_empty() { String::new() } else { format!(" via {}", r.gateway) },
                if e.interface.is_empty() { "-" } else { &e.interface },
                r.table,
                r.metric,
                r.protocol,
                r.r#type
            ),
            Some(Detail::Neighbour(n)) => format!(
                "neighbour {} {} dev {} lladdr {} {}{}",
                action(e),
                n.address,
                e.interface,
                if n.mac.is_empty() { "-" } else { &n.mac },
                n.state,
                if n.router { " router" } else { "" }
            ),
            None => "?".into(),
        };
        format!("{head} {what}")
    }
}

mod flows {
    //! The flow verbs.

    use controller_client::{pb, Client};
    use serde_json::{json, Value};

    use super::{print_table, Failure, FlowCmd, FlowKeyArgs, FlowmodeCmd, FlowsCmd, MissMode, Output};

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

    fn key_text(k: &pb::FlowKey) -> String {
        format!("vrf {} proto {} {}:{} -> {}:{}", k.vrf, k.protocol, k.src, k.src_port, k.dst, k.dst_port)
    }

    fn key_json(k: &pb::FlowKey) -> Value {
        json!({"vrf": k.vrf, "src": k.src, "dst": k.dst, "protocol": k.protocol, "src_port": k.src_port, "dst_port": k.dst_port})
    }

    pub async fn watch(client: &mut Client, output: Output, cmd: FlowsCmd) -> Result<(), Failure> {
        let FlowsCmd::Watch { interface, vrf } = cmd;
        let mut stream = client
            .flows
            .subscribe_flow_misses(pb::SubscribeFlowMissesRequest { interface: interface.unwrap_or_default(), vrf })
            .await?
            .into_inner();
        while let Some(m) = stream.message().await? {
            match (m.kind, output) {
                (Some(pb::flow_miss_message::Kind::Miss(m)), Output::Json) => println!(
                    "{}",
                    json!({"seq": m.seq, "request_id": m.request_id, "interface": m.interface, "reason": m.reason,
                           "key": m.key.as_ref().map(key_json), "packet_length": m.packet_length})
                ),
                (Some(pb::flow_miss_message::Kind::Miss(m)), Output::Table) => println!(
                    "#{} {} {} {} ({} bytes) request {}",
                    m.seq,
                    m.interface,
                    m.reason,
                    m.key.as_ref().map(key_text).unwrap_or_default(),
                    m.packet_length,
                    m.request_id
                ),
                (Some(pb::flow_miss_message::Kind::Lagged(n)), Output::Json) => println!("{}", json!({"lagged": n})),
                (Some(pb::flow_miss_message::Kind::Lagged(n)), Output::Table) => println!("lagged: {n} events lost"),
                (None, _) => {}
            }
        }
        Ok(())
    }

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
                let r = client.flows.install_flows(pb::InstallFlowsRequest { flows: vec![flow] }).await?.into_inner();
                match output {
                    Output::Json => println!("{}", json!({"generation": r.generation})),
                    Output::Table => println!("flow installed, generation {}", r.generation),
                }
            }
            FlowCmd::Del { key: k } => {
                let r = client.flows.delete_flows(pb::DeleteFlowsRequest { keys: vec![key(k)?] }).await?.into_inner();
                match output {
                    Output::Json => println!("{}", json!({"generation": r.generation})),
                    Output::Table => println!("flow deleted, generation {}", r.generation),
                }
            }
            FlowCmd::List { vrf } => {
                let mut stream = client.flows.list_flows(pb::ListFlowsRequest { vrf }).await?.into_inner();
                let mut flows = Vec::new();
                while let Some(c) = stream.message().await? {
                    flows.extend(c.flows);
                }
                let action = |a: i32| match pb::FlowAction::try_from(a) {
                    Ok(pb::FlowAction::Forward) => "forward",
                    Ok(pb::FlowAction::Drop) => "drop",
                    Ok(pb::FlowAction::Hold) => "hold",
                    _ => "?",
                };
                match output {
                    Output::Json => {
                        let v: Vec<Value> = flows
                            .iter()
                            .map(|f| json!({"key": f.key.as_ref().map(key_json), "action": action(f.action), "next_hop": f.next_hop,
                                            "request_id": f.request_id, "packets": f.packets, "bytes": f.bytes, "idle_ms": f.idle_ms}))
                            .collect();
                        println!("{}", Value::Array(v));
                    }
                    Output::Table => {
                        let mut rows =
                            vec![["VRF", "PROTO", "SRC", "DST", "ACTION", "NEXTHOP", "PACKETS", "BYTES", "IDLE_MS"]
                                .map(String::from)
                                .to_vec()];
                        for f in &flows {
                            let k = f.key.clone().unwrap_or_default();
                            rows.push(vec![
                                k.vrf.to_string(),
                                k.protocol.to_string(),
                                format!("{}:{}", k.src, k.src_port),
                                format!("{}:{}", k.dst, k.dst_port),
                                action(f.action).into(),
                                if f.action == pb::FlowAction::Forward as i32 {
                                    f.next_hop.to_string()
                                } else {
                                    "-".into()
                                },
                                f.packets.to_string(),
                                f.bytes.to_string(),
                                f.idle_ms.to_string(),
                            ]);
                        }
                        print_table(&rows);
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn mode(client: &mut Client, output: Output, cmd: FlowmodeCmd) -> Result<(), Failure> {
        let FlowmodeCmd::Set { interface, off, miss, hold_cap, punt_rate, punt_burst } = cmd;
        let miss_action = match miss {
            MissMode::Drop => pb::MissAction::Drop,
            MissMode::Route => pb::MissAction::ForwardByRoute,
        } as i32;
        let r = client
            .flows
            .set_flow_mode(pb::SetFlowModeRequest {
                interface: interface.clone(),
                enabled: !off,
                miss_action,
                hold_cap,
                punt_rate,
                punt_burst,
            })
            .await?
            .into_inner();
        match output {
            Output::Json => println!("{}", json!({"generation": r.generation})),
            Output::Table => {
                println!("flow mode {} for {interface}, generation {}", if off { "off" } else { "on" }, r.generation)
            }
        }
        Ok(())
    }
}

mod policy {
    //! The policy verbs.

    use controller_client::{pb, policy_file, Client};
    use serde_json::{json, Value};

    use super::{print_table, DefaultAction, Dir, Failure, Output, PolicyCmd};

    fn direction(d: Dir) -> i32 {
        match d {
            Dir::Ingress => pb::Direction::Ingress as i32,
            Dir::Egress => pb::Direction::Egress as i32,
        }
    }

    fn dir_name(d: i32) -> &'static str {
        match pb::Direction::try_from(d) {
            Ok(pb::Direction::Ingress) => "ingress",
            Ok(pb::Direction::Egress) => "egress",
            _ => "?",
        }
    }

    fn action_name(a: i32) -> &'static str {
        match pb::Action::try_from(a) {
            Ok(pb::Action::Allow) => "allow",
            Ok(pb::Action::Deny) => "deny",
            Ok(pb::Action::Punt) => "punt",
            _ => "?",
        }
    }

    fn done(output: Output, what: String, generation: u64) {
        match output {
            Output::Json => println!("{}", json!({ "generation": generation })),
            Output::Table => println!("{what}, generation {generation}"),
        }
    }

    pub async fn run(client: &mut Client, output: Output, cmd: PolicyCmd) -> Result<(), Failure> {
        match cmd {
            PolicyCmd::Put { name, file } => {
                let text =
                    std::fs::read_to_string(&file).map_err(|e| Failure::Usage(format!("{}: {e}", file.display())))?;
                let rules = policy_file::parse(&text).map_err(|e| {
                    // FILE:LINE:COLUMN: rules[3].field: why (compiler style).
                    let sep = if e.at.is_some() { ":" } else { ": " };
                    Failure::Usage(format!("{}{sep}{e}", file.display()))
                })?;
                let n = rules.len();
                let r =
                    client.policy.put_policy(pb::PutPolicyRequest { name: name.clone(), rules }).await?.into_inner();
                done(output, format!("policy {name}: {n} rules"), r.generation);
            }
            PolicyCmd::Del { name } => {
                let r = client.policy.delete_policy(pb::DeletePolicyRequest { name: name.clone() }).await?.into_inner();
                done(output, format!("deleted policy {name}"), r.generation);
            }
            PolicyCmd::Attach { name, interface, direction: d, default_action } => {
                let default_action = match default_action {
                    DefaultAction::Allow => pb::Action::Allow,
                    DefaultAction::Deny => pb::Action::Deny,
                } as i32;
                let r = client
                    .policy
                    .attach_policy(pb::AttachPolicyRequest {
                        policy: name.clone(),
                        interface: interface.clone(),
                        direction: direction(d),
                        default_action,
                    })
                    .await?
                    .into_inner();
                done(output, format!("attached policy {name} to {interface} {}", dir_name(direction(d))), r.generation);
            }
            PolicyCmd::Detach { interface, direction: d } => {
                let r = client
                    .policy
                    .detach_policy(pb::DetachPolicyRequest { interface: interface.clone(), direction: direction(d) })
                    .await?
                    .into_inner();
                done(output, format!("detached {interface} {}", dir_name(direction(d))), r.generation);
            }
            PolicyCmd::List { name } => {
                let r = client
                    .policy
                    .list_policies(pb::ListPoliciesRequest { name: name.unwrap_or_default() })
                    .await?
                    .into_inner();
                match output {
                    Output::Json => {
                        let v: Vec<Value> = r.policies.iter().map(policy_json).collect();
                        println!("{}", Value::Array(v));
                    }
                    Output::Table => {
                        for p in &r.policies {
                            let att: Vec<String> = p
                                .attachments
                                .iter()
                                .map(|a| {
                                    format!(
                                        "{} {} (default {})",
                                        a.interface,
                                        dir_name(a.direction),
                                        action_name(a.default_action)
                                    )
                                })
                                .collect();
                            println!(
                                "policy {}: {} rules, attached: {}",
                                p.name,
                                p.rules.len(),
                                if att.is_empty() { "-".into() } else { att.join(", ") }
                            );
                            let mut rows = vec![[
                                "PRIO", "SRC", "DST", "PROTO", "SPORTS", "DPORTS", "ICMP", "FLAGS", "ACTION",
                                "PACKETS", "BYTES",
                            ]
                            .map(String::from)
                            .to_vec()];
                            for r in &p.rules {
                                let or_any = |s: &str| if s.is_empty() { "*".to_owned() } else { s.to_owned() };
                                let range = |p: &Option<pb::PortRange>| {
                                    p.map(|p| {
                                        if p.first == p.last {
                                            p.first.to_string()
                                        } else {
                                            format!("{}-{}", p.first, p.last)
                                        }
                                    })
                                    .unwrap_or_else(|| "*".into())
                                };
                                rows.push(vec![
                                    r.priority.to_string(),
                                    or_any(&r.src_prefix),
                                    or_any(&r.dst_prefix),
                                    r.protocol.map(|p| p.to_string()).unwrap_or_else(|| "*".into()),
                                    range(&r.src_ports),
                                    range(&r.dst_ports),
                                    match (r.icmp_type, r.icmp_code) {
                                        (None, None) => "*".into(),
                                        (t, c) => format!(
                                            "{}/{}",
                                            t.map(|t| t.to_string()).unwrap_or("*".into()),
                                            c.map(|c| c.to_string()).unwrap_or("*".into())
                                        ),
                                    },
                                    r.tcp_flags
                                        .map(|f| format!("{:#04x}/{:#04x}", f.value, f.mask))
                                        .unwrap_or_else(|| "*".into()),
                                    action_name(r.action).to_owned(),
                                    r.packets.to_string(),
                                    r.bytes.to_string(),
                                ]);
                            }
                            print_table(&rows);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn policy_json(p: &pb::PolicyInfo) -> Value {
        json!({
            "name": p.name,
            "attachments": p.attachments.iter().map(|a| json!({
                "interface": a.interface,
                "direction": dir_name(a.direction),
                "default": action_name(a.default_action),
            })).collect::<Vec<_>>(),
            "rules": p.rules.iter().map(|r| json!({
                "priority": r.priority,
                "src": r.src_prefix,
                "dst": r.dst_prefix,
                "protocol": r.protocol,
                "src_ports": r.src_ports.map(|p| json!([p.first, p.last])),
                "dst_ports": r.dst_ports.map(|p| json!([p.first, p.last])),
                "icmp_type": r.icmp_type,
                "icmp_code": r.icmp_code,
                "tcp_flags": r.tcp_flags.map(|f| json!({"mask": f.mask, "value": f.value})),
                "action": action_name(r.action),
                "packets": r.packets,
                "bytes": r.bytes,
            })).collect::<Vec<_>>(),
        })
    }
}

mod routing {
    //! The routing verbs.

    use controller_client::{pb, Client};
    use serde_json::{json, Value};

    use super::{print_table, Failure, NexthopCmd, Output, RouteCmd, VrfCmd};

    pub(super) fn generation(output: Output, what: String, generation: u64) {
        match output {
            Output::Json => println!("{}", json!({ "generation": generation })),
            Output::Table => println!("{what}, generation {generation}"),
        }
    }

    pub async fn vrf(c: &mut Client, output: Output, cmd: VrfCmd) -> Result<(), Failure> {
        match cmd {
            VrfCmd::Add { id, kernel_fib, table } => {
                let mode = if kernel_fib { pb::VrfMode::KernelFib } else { pb::VrfMode::Routes };
                let req = pb::AddVrfRequest { id, mode: mode.into(), kernel_table: table.unwrap_or(0) };
                let r = c.routing.add_vrf(req).await?.into_inner();
                generation(output, format!("added vrf {id}"), r.generation);
            }
            VrfCmd::Del { id } => {
                let r = c.routing.delete_vrf(pb::DeleteVrfRequest { id }).await?.into_inner();
                generation(output, format!("deleted vrf {id}"), r.generation);
            }
            VrfCmd::List => {
                let r = c.routing.list_vrfs(pb::ListVrfsRequest {}).await?.into_inner();
                if output == Output::Json {
                    let v: Vec<Value> = r
                        .vrfs
                        .iter()
                        .map(|v| json!({"id": v.id, "mode": if v.mode() == pb::VrfMode::KernelFib { "kernel-fib" } else { "routes" }, "kernel_table": v.kernel_table, "interfaces": v.interfaces, "routes": v.routes, "ipv4_lookup": ipv4_lookup(v), "ipv4_flat_chunks": v.ipv4_flat_chunks}))
                        .collect();
                    println!("{}", Value::Array(v));
                } else {
                    let mut rows = vec![vec![
                        "VRF".into(),
                        "MODE".into(),
                        "INTERFACES".into(),
                        "ROUTES".into(),
                        "IPV4 LOOKUP".into(),
                    ]];
                    rows.extend(r.vrfs.iter().map(|v| {
                        let lookup = match v.ipv4_lookup() {
                            pb::Ipv4Lookup::Flat => format!("flat ({} KiB)", v.ipv4_flat_chunks),
                            other => ipv4_lookup_name(other).to_owned(),
                        };
                        vec![v.id.to_string(), vrf_mode(v), v.interfaces.to_string(), v.routes.to_string(), lookup]
                    }));
                    print_table(&rows);
                }
            }
        }
        Ok(())
    }

    fn ipv4_lookup(v: &pb::Vrf) -> &'static str {
        ipv4_lookup_name(v.ipv4_lookup())
    }

    fn ipv4_lookup_name(l: pb::Ipv4Lookup) -> &'static str {
        match l {
            pb::Ipv4Lookup::Flat => "flat",
            pb::Ipv4Lookup::Trie => "trie",
            pb::Ipv4Lookup::Unspecified => "-",
        }
    }

    fn vrf_mode(v: &pb::Vrf) -> String {
        match pb::VrfMode::try_from(v.mode) {
            Ok(pb::VrfMode::KernelFib) if v.kernel_table != 0 => format!("kernel-fib table {}", v.kernel_table),
            Ok(pb::VrfMode::KernelFib) => "kernel-fib".into(),
            _ => "routes".into(),
        }
    }

    fn state(n: &pb::NextHop) -> &'static str {
        match pb::NextHopState::try_from(n.state) {
            Ok(pb::NextHopState::Ready) => "ready",
            Ok(pb::NextHopState::Unresolved) => "unresolved",
            Ok(pb::NextHopState::InterfaceMissing) => "interface-missing",
            _ => "-",
        }
    }

    fn describe(n: &pb::NextHop) -> (String, String) {
        use pb::next_hop::Kind;
        match &n.kind {
            Some(Kind::Encap(e)) if !e.gateway.is_empty() => (
                "encap".into(),
                format!(
                    "{} gateway {} ({}){}",
                    e.interface,
                    e.gateway,
                    if n.resolved_mac.is_empty() { "unresolved" } else { &n.resolved_mac },
                    if e.src_mac.is_empty() { String::new() } else { format!(" src {}", e.src_mac) }
                ),
            ),
            Some(Kind::Encap(e)) => (
                "encap".into(),
                format!(
                    "{} dst {}{}",
                    e.interface,
                    e.dst_mac,
                    if e.src_mac.is_empty() { String::new() } else { format!(" src {}", e.src_mac) }
                ),
            ),
            Some(Kind::Ecmp(g)) => ("ecmp".into(), g.members.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
            Some(Kind::Discard(_)) => ("discard".into(), "-".into()),
            Some(Kind::Receive(_)) => ("receive".into(), "-".into()),
            None => ("-".into(), "-".into()),
        }
    }

    pub async fn nexthop(c: &mut Client, output: Output, cmd: NexthopCmd) -> Result<(), Failure> {
        use pb::next_hop::Kind;
        match cmd {
            NexthopCmd::Add { id, interface, dst_mac, gateway, src_mac, ecmp, discard, receive, replace } => {
                let kind = match (interface, ecmp, discard, receive) {
                    (Some(interface), None, false, false) => Kind::Encap(pb::EncapNextHop {
                        interface,
                        dst_mac: dst_mac.unwrap_or_default(),
                        src_mac: src_mac.unwrap_or_default(),
                        gateway: gateway.unwrap_or_default(),
                    }),
                    (None, Some(members), false, false) => Kind::Ecmp(pb::EcmpNextHop { members }),
                    (None, None, true, false) => Kind::Discard(pb::Discard {}),
                    (None, None, false, true) => Kind::Receive(pb::Receive {}),
                    _ => {
                        return Err(Failure::Usage(
                            "give one of --interface with --dst-mac or --gateway, --ecmp, --discard, --receive".into(),
                        ))
                    }
                };
                let nh = pb::NextHop { id, kind: Some(kind), ..Default::default() };
                let r = c
                    .routing
                    .add_next_hops(pb::AddNextHopsRequest { next_hops: vec![nh], replace })
                    .await?
                    .into_inner();
                generation(output, format!("added next hop {id}"), r.generation);
            }
            NexthopCmd::Del { ids } => {
                let shown = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                let r = c.routing.delete_next_hops(pb::DeleteNextHopsRequest { ids }).await?.into_inner();
                generation(output, format!("deleted next hop(s) {shown}"), r.generation);
            }
            NexthopCmd::List => {
                let r = c.routing.list_next_hops(pb::ListNextHopsRequest {}).await?.into_inner();
                if output == Output::Json {
                    let v: Vec<Value> = r
                        .next_hops
                        .iter()
                        .map(|n| {
                            let (kind, detail) = describe(n);
                            json!({"id": n.id, "kind": kind, "detail": detail, "state": state(n), "resolved_mac": n.resolved_mac,
                                   "routes": n.routes, "packets": n.packets, "bytes": n.bytes})
                        })
                        .collect();
                    println!("{}", Value::Array(v));
                } else {
                    let mut rows = vec![vec![
                        "ID".into(),
                        "KIND".into(),
                        "DETAIL".into(),
                        "STATE".into(),
                        "ROUTES".into(),
                        "PACKETS".into(),
                        "BYTES".into(),
                    ]];
                    rows.extend(r.next_hops.iter().map(|n| {
                        let (kind, detail) = describe(n);
                        vec![
                            n.id.to_string(),
                            kind,
                            detail,
                            state(n).into(),
                            n.routes.to_string(),
                            n.packets.to_string(),
                            n.bytes.to_string(),
                        ]
                    }));
                    print_table(&rows);
                }
            }
        }
        Ok(())
    }

    /// Routes from a file: `PREFIX NEXTHOP [VRF]` per line, blank lines and `#` comments skipped.
    fn read_routes(path: &std::path::Path, default_vrf: u32) -> Result<Vec<pb::Route>, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))?;
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let bad =
                || Failure::Usage(format!("{}:{}: expected PREFIX NEXTHOP [VRF], got {line:?}", path.display(), n + 1));
            if f.len() < 2 || f.len() > 3 {
                return Err(bad());
            }
            let next_hop = f[1].parse().map_err(|_| bad())?;
            let vrf = match f.get(2) {
                Some(v) => v.parse().map_err(|_| bad())?,
                None => default_vrf,
            };
            out.push(pb::Route { vrf, prefix: f[0].to_owned(), next_hop });
        }
        Ok(out)
    }

    pub async fn route(c: &mut Client, output: Output, cmd: RouteCmd) -> Result<(), Failure> {
        match cmd {
            RouteCmd::Add { prefix, nexthop, vrf, file, replace } => {
                let routes = match file {
                    Some(f) => read_routes(&f, vrf)?,
                    None => vec![pb::Route {
                        vrf,
                        prefix: prefix.unwrap_or_default(),
                        next_hop: nexthop.unwrap_or_default(),
                    }],
                };
                let n = routes.len();
                let r = c.routing.add_routes(pb::AddRoutesRequest { routes, replace }).await?.into_inner();
                generation(output, format!("added {n} route(s)"), r.generation);
            }
            RouteCmd::Del { prefix, vrf, file } => {
                let routes = match file {
                    Some(f) => read_routes(&f, vrf)?,
                    None => vec![pb::Route { vrf, prefix: prefix.unwrap_or_default(), next_hop: 0 }],
                };
                let n = routes.len();
                let r = c.routing.delete_routes(pb::DeleteRoutesRequest { routes }).await?.into_inner();
                generation(output, format!("deleted {n} route(s)"), r.generation);
            }
            RouteCmd::List { vrf, prefix } => {
                let mut stream = c
                    .routing
                    .list_routes(pb::ListRoutesRequest { vrf, prefix: prefix.unwrap_or_default() })
                    .await?
                    .into_inner();
                let mut all = Vec::new();
                while let Some(chunk) = stream.message().await? {
                    all.extend(chunk.routes);
                }
                if output == Output::Json {
                    let v: Vec<Value> =
                        all.iter().map(|r| json!({"vrf": r.vrf, "prefix": r.prefix, "next_hop": r.next_hop})).collect();
                    println!("{}", Value::Array(v));
                } else {
                    let mut rows = vec![vec!["VRF".into(), "PREFIX".into(), "NEXTHOP".into()]];
                    rows.extend(all.iter().map(|r| vec![r.vrf.to_string(), r.prefix.clone(), r.next_hop.to_string()]));
                    print_table(&rows);
                }
            }
            RouteCmd::Lookup { address, vrf } => {
                let r = c
                    .routing
                    .lookup_route(pb::LookupRouteRequest { vrf, address: address.clone() })
                    .await?
                    .into_inner();
                let route = r.route.unwrap_or_default();
                match (output, r.found) {
                    (Output::Json, true) => println!(
                        "{}",
                        json!({"found": true, "vrf": route.vrf, "prefix": route.prefix, "next_hop": route.next_hop})
                    ),
                    (Output::Json, false) => println!("{}", json!({"found": false})),
                    (Output::Table, true) => {
                        println!("{address} vrf {vrf}: {} via next hop {}", route.prefix, route.next_hop)
                    }
                    (Output::Table, false) => println!("{address} vrf {vrf}: no route"),
                }
            }
        }
        Ok(())
    }
}

fn mode_name(m: i32) -> &'static str {
    match pb::XdpMode::try_from(m) {
        Ok(pb::XdpMode::Native) => "native",
        Ok(pb::XdpMode::Generic) => "generic",
        Ok(pb::XdpMode::Auto) => "auto",
        _ => "-",
    }
}

fn counters(i: &pb::Interface) -> pb::InterfaceCounters {
    i.counters.clone().unwrap_or_default()
}

fn iface_json(i: &pb::Interface) -> Value {
    let c = counters(i);
    let reasons: serde_json::Map<String, Value> =
        c.reasons.iter().map(|r| (r.reason.clone(), json!(r.packets))).collect();
    json!({
        "name": i.name,
        "ifindex": i.ifindex,
        "slot": i.slot,
        "requested_xdp_mode": mode_name(i.requested_xdp_mode),
        "xdp_mode": mode_name(i.xdp_mode),
        "rx_packets": c.rx_packets,
        "rx_bytes": c.rx_bytes,
        "tx_packets": c.tx_packets,
        "tx_bytes": c.tx_bytes,
        "rx_dropped": c.rx_dropped,
        "rx_parse_errors": c.rx_parse_errors,
        "reasons": reasons,
    })
}

fn print_interfaces(output: Output, list: &[pb::Interface]) {
    if output == Output::Json {
        println!("{}", Value::Array(list.iter().map(iface_json).collect()));
        return;
    }
    let mut rows = vec![vec![
        "NAME".into(),
        "IFINDEX".into(),
        "SLOT".into(),
        "XDP".into(),
        "RX_PKTS".into(),
        "RX_BYTES".into(),
        "TX_PKTS".into(),
        "TX_BYTES".into(),
        "DROPS".into(),
        "PARSE_ERR".into(),
        "REASONS".into(),
    ]];
    for i in list {
        let c = counters(i);
        let reasons: Vec<String> =
            c.reasons.iter().filter(|r| r.packets > 0).map(|r| format!("{}={}", r.reason, r.packets)).collect();
        rows.push(vec![
            i.name.clone(),
            i.ifindex.to_string(),
            i.slot.to_string(),
            mode_name(i.xdp_mode).into(),
            c.rx_packets.to_string(),
            c.rx_bytes.to_string(),
            c.tx_packets.to_string(),
            c.tx_bytes.to_string(),
            c.rx_dropped.to_string(),
            c.rx_parse_errors.to_string(),
            if reasons.is_empty() { "-".into() } else { reasons.join(",") },
        ]);
    }
    print_table(&rows);
}

fn print_status(output: Output, s: &pb::GetStatusResponse) {
    let hook = |h: i32| match pb::Hook::try_from(h) {
        Ok(pb::Hook::XdpIngress) => "xdp-ingress",
        Ok(pb::Hook::TcEgress) => "tc-egress",
        _ => "-",
    };
    if output == Output::Json {
        let v = json!({
            "version": s.version,
            "kernel_version": s.kernel_version,
            "uptime_seconds": s.uptime_seconds,
            "generation": s.generation,
            "bpffs_root": s.bpffs_root,
            "programs": s.programs.iter().map(|p| json!({"name": p.name, "type": p.r#type, "kernel_id": p.kernel_id, "tag": p.tag})).collect::<Vec<_>>(),
            "attachments": s.attachments.iter().map(|a| json!({"interface": a.interface, "ifindex": a.ifindex, "hook": hook(a.hook), "program": a.program, "xdp_mode": mode_name(a.xdp_mode), "link_id": a.link_id})).collect::<Vec<_>>(),
            "maps": s.maps.iter().map(|m| json!({"name": m.name, "type": m.r#type, "kernel_id": m.kernel_id, "max_entries": m.max_entries, "key_size": m.key_size, "value_size": m.value_size, "occupancy": m.occupancy, "pin_path": m.pin_path})).collect::<Vec<_>>(),
        });
        println!("{v}");
        return;
    }
    println!("version     {}", s.version);
    println!("kernel      {}", s.kernel_version);
    println!("uptime      {}s", s.uptime_seconds);
    println!("generation  {}", s.generation);
    println!("bpffs       {}", s.bpffs_root);
    println!();
    let mut rows = vec![vec!["PROGRAM".into(), "TYPE".into(), "ID".into(), "TAG".into()]];
    rows.extend(
        s.programs.iter().map(|p| vec![p.name.clone(), p.r#type.clone(), p.kernel_id.to_string(), p.tag.clone()]),
    );
    print_table(&rows);
    println!();
    let mut rows = vec![vec!["INTERFACE".into(), "IFINDEX".into(), "HOOK".into(), "MODE".into(), "LINK".into()]];
    rows.extend(s.attachments.iter().map(|a| {
        vec![
            a.interface.clone(),
            a.ifindex.to_string(),
            hook(a.hook).into(),
            mode_name(a.xdp_mode).into(),
            a.link_id.to_string(),
        ]
    }));
    print_table(&rows);
    println!();
    let mut rows = vec![vec!["MAP".into(), "TYPE".into(), "ID".into(), "USED".into(), "MAX".into(), "PIN".into()]];
    rows.extend(s.maps.iter().map(|m| {
        vec![
            m.name.clone(),
            m.r#type.clone(),
            m.kernel_id.to_string(),
            m.occupancy.to_string(),
            m.max_entries.to_string(),
            m.pin_path.clone(),
        ]
    }));
    print_table(&rows);
}

/// Prints rows as left-aligned columns separated by two spaces.
fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(c, s)| format!("{:<w$}", s, w = widths[c])).collect();
        println!("{}", line.join("  ").trim_end());
    }
}
