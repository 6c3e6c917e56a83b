//! The Telemetry service: `dpctl stats watch`.

use clap::Subcommand;
use controller_client::{pb, Client};

use crate::{output, Failure, Output};

/// `dpctl stats`.
#[derive(Debug, Subcommand)]
pub enum StatsCmd {
    /// Rates every interval (packets/s, bits/s, drops/s by reason, per interface and next hop)
    /// until Ctrl-C or `--count`; -o json prints one JSON object per interval.
    Watch {
        /// Milliseconds between readings (at least 100).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u32,
        /// Only this interface.
        #[arg(long)]
        interface: Option<String>,
        /// Stop after this many intervals.
        #[arg(long)]
        count: Option<u64>,
    },
}

/// Prints the rates of each interval from the server's counter deltas.
pub async fn watch(client: &mut Client, out: Output, cmd: StatsCmd) -> Result<(), Failure> {
    let StatsCmd::Watch { interval_ms, interface, count } = cmd;
    let req = pb::WatchStatsRequest { interval_ms, deltas: true, interface: interface.unwrap_or_default() };
    let mut stream = client.telemetry.watch_stats(req).await?.into_inner();
    let mut shown = 0u64;
    while let Some(s) = stream.message().await? {
        // The first snapshot holds the totals: the rates start with the second.
        if s.totals {
            continue;
        }
        output::stats_rates(out, &s);
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            break;
        }
    }
    Ok(())
}
