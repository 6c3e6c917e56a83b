//! The Events service: `dpctl events watch`.

use clap::Subcommand;
use controller_client::{pb, Client};

use crate::{output, Failure, Output};

/// `dpctl events`.
#[derive(Debug, Subcommand)]
pub enum EventsCmd {
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

/// Prints the server's netlink events until the stream ends or dpctl is stopped.
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
        output::netlink_event(output, m);
    }
    Ok(())
}
