//! `dataplane-bench`: the dataplane's benchmarks, each case measured next to its baseline in the
//! same run (these machines are noisy; only ratios mean something), every figure repeated, the
//! result written as markdown (docs/benchmarks.md).
//!
//! The process moves itself into a network namespace of its own before doing anything, so every
//! interface it creates there disappears with it, crash included; its bpffs pins are removed on
//! exit. The veth forwarding case needs named namespaces (`dpbench-<pid>-*`, see `netns`): they
//! go on exit and on Ctrl-C/SIGTERM, and a run removes those of a bench that was killed outright.

mod flows;
mod netns;
mod packet;
mod rawmap;
mod report;
mod sandbox;
mod setups;
mod storm;
mod veth;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(version, about = "Benchmarks of the eBPF dataplane, each next to a baseline measured in the same run")]
struct Args {
    /// Tiny sizes: every case runs, in seconds (the test suite runs this so the bench never rots).
    #[arg(long)]
    quick: bool,
    /// Write the markdown report here (e.g. docs/benchmarks.md); stdout always gets it too.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Repetitions of each figure (min/median/max are over these).
    #[arg(long)]
    runs: Option<usize>,
    /// BPF_PROG_TEST_RUN repeat count per figure.
    #[arg(long)]
    repeat: Option<u32>,
    /// Route-table sizes of the packet-path cases, comma-separated.
    #[arg(long, value_delimiter = ',')]
    routes: Option<Vec<usize>>,
    /// Flows set up per run in the flow-setup case.
    #[arg(long)]
    flows: Option<usize>,
    /// Policy sizes (rules) of the policy cases, comma-separated.
    #[arg(long, value_delimiter = ',')]
    rules: Option<Vec<usize>>,
    /// Only the flow-setup, miss-storm and control-path cases (their section on stdout).
    #[arg(long)]
    only_flows: bool,
    /// Seconds of traffic per run and variant of the veth forwarding case.
    #[arg(long)]
    veth_seconds: Option<f64>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    sandbox::remove_stale();
    // Before any thread exists, so that every thread lives in the namespace.
    sandbox::enter_private_netns()?;
    let config = packet::Config {
        runs: args.runs.unwrap_or(5).max(1),
        repeat: args.repeat.unwrap_or(if args.quick { 10_000 } else { 1_000_000 }),
        route_counts: args.routes.clone().unwrap_or_else(|| {
            if args.quick {
                vec![10, 1_000]
            } else {
                vec![10, 10_000, 100_000, 1_000_000]
            }
        }),
        rule_counts: args.rules.clone().unwrap_or_else(|| {
            if args.quick {
                vec![1, 100]
            } else {
                vec![1, 100, 1_000, 10_000]
            }
        }),
    };
    let command = std::env::var("DATAPLANE_BENCH_COMMAND").unwrap_or_else(|_| {
        std::iter::once("dataplane-bench".to_owned()).chain(std::env::args().skip(1)).collect::<Vec<_>>().join(" ")
    });

    if args.only_flows {
        let flows = flows::run(&flow_config(&args, config.runs))?;
        let mut md = String::new();
        report::render_setups(&mut md, &flows);
        print!("{md}");
        return Ok(());
    }
    let sandbox = sandbox::Sandbox::new()?;
    eprintln!(
        "packet path: BPF_PROG_TEST_RUN, repeat {}, {} runs, routes {:?}",
        config.repeat, config.runs, config.route_counts
    );
    let packet = packet::run(&sandbox, &config)?;
    drop(sandbox);
    let veth_config = veth::Config {
        runs: if args.quick && args.runs.is_none() { 2 } else { config.runs },
        duration: std::time::Duration::from_secs_f64(args.veth_seconds.unwrap_or(if args.quick { 0.3 } else { 2.0 })),
        warmup: std::time::Duration::from_millis(if args.quick { 100 } else { 300 }),
    };
    eprintln!("forwarding on veth: {} runs of {:?} per variant", veth_config.runs, veth_config.duration);
    let veth = veth::run(&veth_config)?;
    let flow_config = flow_config(&args, config.runs);
    eprintln!("flow setup: {} flows per run, {} runs", flow_config.flows, flow_config.runs);
    let flows = flows::run(&flow_config)?;

    let md = report::render(&command, &packet, &veth, &flows);
    print!("{md}");
    if let Some(path) = &args.output {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The flow cases' settings.
fn flow_config(args: &Args, runs: usize) -> flows::Config {
    flows::Config {
        flows: args.flows.unwrap_or(if args.quick { 200 } else { 20_000 }),
        latency_misses: if args.quick { 100 } else { 2000 },
        sustained_misses: if args.quick { 500 } else { 50_000 },
        sustained_pps: 50_000,
        python_flows: if args.quick { 200 } else { 5_000 },
        runs,
        routes: if args.quick { 2_000 } else { 100_000 },
        memory_routes: if args.quick { 20_000 } else { 1_000_000 },
        storm: storm::Config {
            // At least 9 pairs of windows unless asked otherwise: the machine's own drift from one
            // window to the next is of the size of what is measured.
            runs: match (args.quick, args.runs) {
                (true, None) => 2,
                (false, None) => runs.max(9),
                (_, Some(_)) => runs,
            },
            window: std::time::Duration::from_millis(if args.quick { 300 } else { 2000 }),
            repeat: if args.quick { 100_000 } else { 5_000_000 },
        },
    }
}
