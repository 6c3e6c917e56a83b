//! The Policy service: `dpctl policy put|del|list|attach|detach`.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use controller_client::{pb, policy_file, Client};

use crate::{output, Failure, Output};

/// `dpctl policy`.
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Create or atomically replace a policy from a YAML or JSON rules file.
    Put {
        name: String,
        #[arg(long)]
        file: PathBuf,
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

/// `--direction`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Dir {
    Ingress,
    Egress,
}

/// `--default`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DefaultAction {
    Allow,
    Deny,
}

fn direction(d: Dir) -> i32 {
    match d {
        Dir::Ingress => pb::Direction::Ingress as i32,
        Dir::Egress => pb::Direction::Egress as i32,
    }
}

/// Puts, deletes, attaches, detaches or lists policies.
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
            let r = client.policy.put_policy(pb::PutPolicyRequest { name: name.clone(), rules }).await?.into_inner();
            output::done(output, format!("policy {name}: {n} rules"), r.generation);
        }
        PolicyCmd::Del { name } => {
            let r = client.policy.delete_policy(pb::DeletePolicyRequest { name: name.clone() }).await?.into_inner();
            output::done(output, format!("deleted policy {name}"), r.generation);
        }
        PolicyCmd::Attach { name, interface, direction: d, default_action } => {
            let default_action = match default_action {
                DefaultAction::Allow => pb::Action::Allow,
                DefaultAction::Deny => pb::Action::Deny,
            } as i32;
            let req = pb::AttachPolicyRequest {
                policy: name.clone(),
                interface: interface.clone(),
                direction: direction(d),
                default_action,
            };
            let r = client.policy.attach_policy(req).await?.into_inner();
            let what = format!("attached policy {name} to {interface} {}", output::direction(direction(d)));
            output::done(output, what, r.generation);
        }
        PolicyCmd::Detach { interface, direction: d } => {
            let req = pb::DetachPolicyRequest { interface: interface.clone(), direction: direction(d) };
            let r = client.policy.detach_policy(req).await?.into_inner();
            output::done(output, format!("detached {interface} {}", output::direction(direction(d))), r.generation);
        }
        PolicyCmd::List { name } => {
            let req = pb::ListPoliciesRequest { name: name.unwrap_or_default() };
            let r = client.policy.list_policies(req).await?.into_inner();
            output::policies(output, &r.policies);
        }
    }
    Ok(())
}
