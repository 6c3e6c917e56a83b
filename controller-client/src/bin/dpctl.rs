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
    /// Interfaces the dataplane owns.
    #[command(subcommand, alias = "if")]
    Interface(InterfaceCmd),
}

#[derive(Debug, Subcommand)]
enum InterfaceCmd {
    /// Attach the dataplane to a kernel interface.
    Add {
        name: String,
        #[arg(long, value_enum, default_value_t = Mode::Auto)]
        mode: Mode,
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
    }
}

enum Failure {
    Status(tonic::Status),
    Other(anyhow::Error),
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
        Command::Interface(InterfaceCmd::Add { name, mode }) => {
            let xdp_mode = match mode {
                Mode::Auto => pb::XdpMode::Auto,
                Mode::Native => pb::XdpMode::Native,
                Mode::Generic => pb::XdpMode::Generic,
            };
            let r = client
                .interfaces
                .add_interface(pb::AddInterfaceRequest { name, xdp_mode: xdp_mode.into(), vrf: 0 })
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
    }
    Ok(())
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
    rows.extend(s.programs.iter().map(|p| vec![p.name.clone(), p.r#type.clone(), p.kernel_id.to_string(), p.tag.clone()]));
    print_table(&rows);
    println!();
    let mut rows = vec![vec!["INTERFACE".into(), "IFINDEX".into(), "HOOK".into(), "MODE".into(), "LINK".into()]];
    rows.extend(s.attachments.iter().map(|a| {
        vec![a.interface.clone(), a.ifindex.to_string(), hook(a.hook).into(), mode_name(a.xdp_mode).into(), a.link_id.to_string()]
    }));
    print_table(&rows);
    println!();
    let mut rows = vec![vec!["MAP".into(), "TYPE".into(), "ID".into(), "USED".into(), "MAX".into(), "PIN".into()]];
    rows.extend(s.maps.iter().map(|m| {
        vec![m.name.clone(), m.r#type.clone(), m.kernel_id.to_string(), m.occupancy.to_string(), m.max_entries.to_string(), m.pin_path.clone()]
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
