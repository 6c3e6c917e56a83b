//! The Routing service: `dpctl vrf`, `dpctl nexthop` and `dpctl route`.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use controller_client::{pb, Client};

use crate::{output, Failure, Output};

/// `dpctl vrf`.
#[derive(Debug, Subcommand)]
pub enum VrfCmd {
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

/// `dpctl nexthop`.
#[derive(Debug, Subcommand)]
pub enum NexthopCmd {
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
        /// Apply the valid entries and report the others, instead of refusing the whole batch.
        #[arg(long)]
        continue_on_error: bool,
    },
    #[command(alias = "delete")]
    Del {
        #[arg(required = true)]
        ids: Vec<u32>,
        /// Apply the valid entries and report the others, instead of refusing the whole batch.
        #[arg(long)]
        continue_on_error: bool,
    },
    #[command(alias = "ls")]
    List,
}

/// `dpctl route`.
#[derive(Debug, Subcommand)]
pub enum RouteCmd {
    /// Add one route, or every route of --file (lines: PREFIX NEXTHOP [VRF]; # comments).
    Add {
        #[arg(required_unless_present = "file")]
        prefix: Option<String>,
        #[arg(long, required_unless_present = "file")]
        nexthop: Option<u32>,
        #[arg(long, default_value_t = 0)]
        vrf: u32,
        #[arg(long, conflicts_with = "prefix")]
        file: Option<PathBuf>,
        /// Point existing routes at their new next hop in place instead of refusing them.
        #[arg(long)]
        replace: bool,
        /// Apply the valid entries and report the others, instead of refusing the whole batch.
        #[arg(long)]
        continue_on_error: bool,
    },
    /// Delete one route, or every route of --file (same format; the next hop column is ignored).
    #[command(alias = "delete")]
    Del {
        #[arg(required_unless_present = "file")]
        prefix: Option<String>,
        #[arg(long, default_value_t = 0)]
        vrf: u32,
        #[arg(long, conflicts_with = "prefix")]
        file: Option<PathBuf>,
        /// Apply the valid entries and report the others, instead of refusing the whole batch.
        #[arg(long)]
        continue_on_error: bool,
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

/// Adds, deletes or lists VRFs.
pub async fn vrf(c: &mut Client, output: Output, cmd: VrfCmd) -> Result<(), Failure> {
    match cmd {
        VrfCmd::Add { id, kernel_fib, table } => {
            let mode = if kernel_fib { pb::VrfMode::KernelFib } else { pb::VrfMode::Routes };
            let req = pb::AddVrfRequest { id, mode: mode.into(), kernel_table: table.unwrap_or(0) };
            let r = c.routing.add_vrf(req).await?.into_inner();
            output::done(output, format!("added vrf {id}"), r.generation);
        }
        VrfCmd::Del { id } => {
            let r = c.routing.delete_vrf(pb::DeleteVrfRequest { id }).await?.into_inner();
            output::done(output, format!("deleted vrf {id}"), r.generation);
        }
        VrfCmd::List => {
            let r = c.routing.list_vrfs(pb::ListVrfsRequest {}).await?.into_inner();
            output::vrfs(output, &r.vrfs);
        }
    }
    Ok(())
}

/// Adds, deletes or lists next hops.
pub async fn nexthop(c: &mut Client, output: Output, cmd: NexthopCmd) -> Result<(), Failure> {
    use pb::next_hop::Kind;
    match cmd {
        NexthopCmd::Add {
            id,
            interface,
            dst_mac,
            gateway,
            src_mac,
            ecmp,
            discard,
            receive,
            replace,
            continue_on_error,
        } => {
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
            let req =
                pb::AddNextHopsRequest { next_hops: vec![nh], replace, atomicity: atomicity(continue_on_error).into() };
            let r = c.routing.add_next_hops(req).await?.into_inner();
            output::done(output, format!("added next hop {id}"), r.generation);
        }
        NexthopCmd::Del { ids, continue_on_error } => {
            let shown = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            let req = pb::DeleteNextHopsRequest { ids, atomicity: atomicity(continue_on_error).into() };
            let r = c.routing.delete_next_hops(req).await?.into_inner();
            output::done(output, format!("deleted next hop(s) {shown}"), r.generation);
        }
        NexthopCmd::List => {
            let r = c.routing.list_next_hops(pb::ListNextHopsRequest {}).await?.into_inner();
            output::next_hops(output, &r.next_hops);
        }
    }
    Ok(())
}

/// A batch's atomicity from `--continue-on-error`.
fn atomicity(continue_on_error: bool) -> pb::Atomicity {
    if continue_on_error {
        pb::Atomicity::ContinueOnError
    } else {
        pb::Atomicity::AllOrNothing
    }
}

/// Routes from a file: `PREFIX NEXTHOP [VRF]` per line, blank lines and `#` comments skipped.
fn read_routes(path: &Path, default_vrf: u32) -> Result<Vec<pb::Route>, Failure> {
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

/// Adds, deletes, lists or looks up routes.
pub async fn route(c: &mut Client, output: Output, cmd: RouteCmd) -> Result<(), Failure> {
    match cmd {
        RouteCmd::Add { prefix, nexthop, vrf, file, replace, continue_on_error } => {
            let routes = match file {
                Some(f) => read_routes(&f, vrf)?,
                None => {
                    vec![pb::Route { vrf, prefix: prefix.unwrap_or_default(), next_hop: nexthop.unwrap_or_default() }]
                }
            };
            let n = routes.len();
            let req = pb::AddRoutesRequest { routes, replace, atomicity: atomicity(continue_on_error).into() };
            let r = c.routing.add_routes(req).await?.into_inner();
            output::done(output, format!("added {n} route(s)"), r.generation);
        }
        RouteCmd::Del { prefix, vrf, file, continue_on_error } => {
            let routes = match file {
                Some(f) => read_routes(&f, vrf)?,
                None => vec![pb::Route { vrf, prefix: prefix.unwrap_or_default(), next_hop: 0 }],
            };
            let n = routes.len();
            let req = pb::DeleteRoutesRequest { routes, atomicity: atomicity(continue_on_error).into() };
            let r = c.routing.delete_routes(req).await?.into_inner();
            output::done(output, format!("deleted {n} route(s)"), r.generation);
        }
        RouteCmd::List { vrf, prefix } => {
            let req = pb::ListRoutesRequest { vrf, prefix: prefix.unwrap_or_default() };
            let mut stream = c.routing.list_routes(req).await?.into_inner();
            let mut all = Vec::new();
            while let Some(chunk) = stream.message().await? {
                all.extend(chunk.routes);
            }
            output::routes(output, &all);
        }
        RouteCmd::Lookup { address, vrf } => {
            let r =
                c.routing.lookup_route(pb::LookupRouteRequest { vrf, address: address.clone() }).await?.into_inner();
            output::lookup(output, &address, vrf, &r);
        }
    }
    Ok(())
}
