//! `dataplane-controller`: the reference controller. Programs one or many nodes from one
//! declarative YAML file, answers their flow misses by the file's flow rules, and resyncs a
//! node whenever it (or the controller) restarts.
//!
//! ```text
//! dataplane-controller run --file nodes.yaml [--status-socket PATH] [--log-format text|json]
//! dataplane-controller check --file nodes.yaml
//! dataplane-controller status [--status-socket PATH] [-o table|json]
//! ```

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use controller_client::controller::{self, status::ControllerStatus};

const DEFAULT_STATUS_SOCKET: &str = "/run/dataplane-controller/status.sock";

#[derive(Parser)]
#[command(version, about = "Reference controller for the dataplane: one YAML file, many nodes")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Program the file's nodes and keep them so (the file is watched; SIGHUP re-reads it).
    Run {
        #[arg(long)]
        file: PathBuf,
        /// Serve the status here (HTTP/1.0 JSON on a unix socket).
        #[arg(long, default_value = DEFAULT_STATUS_SOCKET)]
        status_socket: PathBuf,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
        /// This controller's election id on every node (decimal, non-zero): among controllers
        /// of the same role, the highest open id is the node's primary; the others stand by.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u128))]
        election_id: u128,
        /// Arbitration role (controllers of different roles do not fence each other).
        #[arg(long, default_value = "")]
        role: String,
    },
    /// Validate the file and exit (0: valid; 2: the error, as FILE:LINE:COLUMN: FIELD: REASON).
    Check {
        #[arg(long)]
        file: PathBuf,
    },
    /// A running controller's status: nodes, connection, generation, flow decisions.
    Status {
        #[arg(long, default_value = DEFAULT_STATUS_SOCKET)]
        status_socket: PathBuf,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dataplane-controller: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run { file, status_socket, log_format, election_id, role } => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
            let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
            match log_format {
                LogFormat::Text => builder.init(),
                LogFormat::Json => builder.json().init(),
            }
            if election_id == 0 {
                eprintln!("dataplane-controller: --election-id must not be zero");
                return ExitCode::from(2);
            }
            let identity = controller::session::Identity { role, election_id };
            match rt.block_on(run(file, status_socket, identity)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("dataplane-controller: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Check { file } => match controller::config::load(&file) {
            Ok(d) => {
                let n = &d.nodes;
                println!(
                    "{}: valid: {} node(s), {} route(s), {} next hop(s), {} polic(ies), {} flow rule(s)",
                    file.display(),
                    n.len(),
                    n.values().map(|n| n.routes.len()).sum::<usize>(),
                    n.values().map(|n| n.next_hops.len()).sum::<usize>(),
                    n.values().map(|n| n.policies.len()).sum::<usize>(),
                    n.values().map(|n| n.flow_rules.len()).sum::<usize>(),
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Status { status_socket, output } => match rt.block_on(controller::status::fetch(&status_socket)) {
            Ok(s) => {
                match output {
                    Output::Json => {
                        println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default())
                    }
                    Output::Table => print_table(&s),
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("dataplane-controller: {}: {e}", status_socket.display());
                ExitCode::FAILURE
            }
        },
    }
}

async fn run(
    file: PathBuf,
    status_socket: PathBuf,
    identity: controller::session::Identity,
) -> Result<(), controller::RunError> {
    let mut stopped_by_signal = false;
    let r = tokio::select! {
        r = controller::run(file, Some(status_socket.clone()), identity) => r,
        _ = stop() => {
            tracing::info!("stopping; the nodes keep their state and keep forwarding");
            stopped_by_signal = true;
            Ok(())
        }
    };
    // Only our own socket: one refused as another controller's stays.
    if stopped_by_signal {
        let _ = std::fs::remove_file(&status_socket);
    }
    r
}

async fn stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
        }
        _ => std::future::pending().await,
    }
}

fn print_table(s: &ControllerStatus) {
    println!(
        "file {} (version {}){}",
        s.file,
        s.file_version,
        s.file_error.as_ref().map(|e| format!("\n  refused: {e}")).unwrap_or_default()
    );
    println!(
        "{:<12} {:<13} {:>10} {:>8} {:>7} {:>8} {:>9} {:>8} {:>7}  LAST ERROR",
        "NODE", "STATE", "GENERATION", "SESSIONS", "APPLIES", "MISSES", "FORWARDED", "DROPPED", "STALE",
    );
    for (name, n) in &s.nodes {
        println!(
            "{:<12} {:<13} {:>10} {:>8} {:>7} {:>8} {:>9} {:>8} {:>7}  {}",
            name,
            n.state,
            n.generation,
            n.sessions,
            n.applies,
            n.flows.misses,
            n.flows.forwarded,
            n.flows.dropped + n.flows.no_route,
            n.flows.stale,
            n.last_error.as_deref().unwrap_or("-")
        );
    }
    for (name, n) in &s.nodes {
        if !n.rule_hits.is_empty() {
            let hits: Vec<String> = n.rule_hits.iter().enumerate().map(|(i, h)| format!("#{i}: {h}")).collect();
            println!("{name} flow rule hits: {} (no rule: {})", hits.join(", "), n.flows.no_rule);
        }
    }
}
