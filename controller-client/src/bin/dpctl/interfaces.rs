//! The Interfaces service: `dpctl interface add|del|list`.

use clap::{Subcommand, ValueEnum};
use controller_client::{pb, Client};

use crate::{output, Failure, Output};

/// `dpctl interface`.
#[derive(Debug, Subcommand)]
pub enum InterfaceCmd {
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

/// `--mode`: the XDP attach mode.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    Auto,
    Native,
    Generic,
}

/// Attaches, detaches or lists interfaces.
pub async fn run(client: &mut Client, output: Output, cmd: InterfaceCmd) -> Result<(), Failure> {
    match cmd {
        InterfaceCmd::Add { name, mode, vrf } => {
            let xdp_mode = match mode {
                Mode::Auto => pb::XdpMode::Auto,
                Mode::Native => pb::XdpMode::Native,
                Mode::Generic => pb::XdpMode::Generic,
            };
            let req = pb::AddInterfaceRequest { name, xdp_mode: xdp_mode.into(), vrf };
            let r = client.interfaces.add_interface(req).await?.into_inner();
            output::interface_added(output, &r);
        }
        InterfaceCmd::Del { name } => {
            let req = pb::DeleteInterfaceRequest { name: name.clone() };
            let r = client.interfaces.delete_interface(req).await?.into_inner();
            output::done(output, format!("detached {name}"), r.generation);
        }
        InterfaceCmd::List { name } => {
            let req = pb::ListInterfacesRequest { name: name.unwrap_or_default() };
            let r = client.interfaces.list_interfaces(req).await?.into_inner();
            output::interfaces(output, &r.interfaces);
        }
    }
    Ok(())
}
