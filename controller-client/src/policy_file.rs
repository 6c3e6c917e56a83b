//! The policy file `dpctl policy put --file` reads: YAML or JSON (JSON is YAML), either a list
//! of rules or `{rules: [...]}`.
//!
//! ```yaml
//! rules:
//!   - priority: 10
//!     dst: 198.51.100.0/24        # src/dst: CIDR prefixes; absent = any
//!     protocol: tcp               # tcp, udp, icmp, icmpv6 or a number
//!     dst_ports: 80-89            # a port or FIRST-LAST (TCP/UDP only)
//!     action: deny                # allow, deny, punt
//!   - priority: 20
//!     protocol: tcp
//!     dst_ports: 22
//!     tcp_flags: syn-only         # or {mask: 0x12, value: 0x02}
//!     action: deny
//!   - priority: 30
//!     protocol: icmp
//!     icmp_type: 8
//!     action: allow
//! ```

use serde::Deserialize;

use crate::pb;

/// Why a policy file was rejected; names the rule (by position) and field.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("not a policy file: {0}")]
    Syntax(#[from] serde_yaml::Error),
    #[error("rules[{index}].{field}: {reason}")]
    Field { index: usize, field: &'static str, reason: String },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Doc {
    Wrapped { rules: Vec<FileRule> },
    List(Vec<FileRule>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    priority: u32,
    #[serde(default)]
    src: Option<String>,
    #[serde(default)]
    dst: Option<String>,
    #[serde(default)]
    protocol: Option<Scalar>,
    #[serde(default)]
    src_ports: Option<Scalar>,
    #[serde(default)]
    dst_ports: Option<Scalar>,
    #[serde(default)]
    icmp_type: Option<u32>,
    #[serde(default)]
    icmp_code: Option<u32>,
    #[serde(default)]
    tcp_flags: Option<Flags>,
    action: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Num(u32),
    Text(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Flags {
    Name(String),
    Mask { mask: u32, value: u32 },
}

/// Parses a policy file into API rules (the server validates the values).
pub fn parse(text: &str) -> Result<Vec<pb::Rule>, PolicyFileError> {
    let rules = match serde_yaml::from_str::<Doc>(text)? {
        Doc::Wrapped { rules } | Doc::List(rules) => rules,
    };
    rules.into_iter().enumerate().map(|(index, r)| rule(index, r)).collect()
}

fn rule(index: usize, r: FileRule) -> Result<pb::Rule, PolicyFileError> {
    let bad = |field: &'static str, reason: String| PolicyFileError::Field { index, field, reason };
    let protocol = match r.protocol {
        None => None,
        Some(Scalar::Num(n)) => Some(n),
        Some(Scalar::Text(t)) => Some(match t.to_ascii_lowercase().as_str() {
            "tcp" => 6,
            "udp" => 17,
            "icmp" => 1,
            "icmpv6" | "ipv6-icmp" => 58,
            other => other.parse().map_err(|_| bad("protocol", format!("{t:?} is not tcp, udp, icmp, icmpv6 or a number")))?,
        }),
    };
    let ports = |field: &'static str, s: Option<Scalar>| -> Result<Option<pb::PortRange>, PolicyFileError> {
        Ok(match s {
            None => None,
            Some(Scalar::Num(p)) => Some(pb::PortRange { first: p, last: p }),
            Some(Scalar::Text(t)) => {
                let (a, b) = t.split_once('-').unwrap_or((&t, &t));
                let num = |v: &str| v.trim().parse::<u32>().map_err(|_| bad(field, format!("{t:?} is not PORT or FIRST-LAST")));
                Some(pb::PortRange { first: num(a)?, last: num(b)? })
            }
        })
    };
    let tcp_flags = match r.tcp_flags {
        None => None,
        Some(Flags::Mask { mask, value }) => Some(pb::TcpFlags { mask, value }),
        Some(Flags::Name(n)) => match n.as_str() {
            // SYN set, ACK clear: the first segment of a connection.
            "syn-only" | "syn" => Some(pb::TcpFlags { mask: 0x12, value: 0x02 }),
            other => return Err(bad("tcp_flags", format!("{other:?} is not syn-only or {{mask, value}}"))),
        },
    };
    let action = match r.action.to_ascii_lowercase().as_str() {
        "allow" => pb::Action::Allow,
        "deny" | "drop" => pb::Action::Deny,
        "punt" => pb::Action::Punt,
        other => return Err(bad("action", format!("{other:?} is not allow, deny or punt"))),
    };
    Ok(pb::Rule {
        priority: r.priority,
        src_prefix: r.src.unwrap_or_default(),
        dst_prefix: r.dst.unwrap_or_default(),
        protocol,
        src_ports: ports("src_ports", r.src_ports)?,
        dst_ports: ports("dst_ports", r.dst_ports)?,
        icmp_type: r.icmp_type,
        icmp_code: r.icmp_code,
        tcp_flags,
        action: action as i32,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_yaml_and_json_parse_to_the_same_rules() {
        let yaml = "rules:\n  - priority: 10\n    dst: 198.51.100.0/24\n    protocol: tcp\n    dst_ports: 80-89\n    action: deny\n  - priority: 20\n    protocol: tcp\n    dst_ports: 22\n    tcp_flags: syn-only\n    action: deny\n";
        let json = r#"[{"priority":10,"dst":"198.51.100.0/24","protocol":"tcp","dst_ports":"80-89","action":"deny"},
                      {"priority":20,"protocol":6,"dst_ports":22,"tcp_flags":{"mask":18,"value":2},"action":"deny"}]"#;
        let a = parse(yaml).unwrap();
        let b = parse(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].dst_ports, Some(pb::PortRange { first: 80, last: 89 }));
        assert_eq!(a[1].tcp_flags, Some(pb::TcpFlags { mask: 0x12, value: 0x02 }));
    }

    #[test]
    fn policy_file_bad_field_names_rule_and_field() {
        let e = parse("- priority: 1\n  action: maybe\n").unwrap_err();
        assert_eq!(e.to_string(), "rules[0].action: \"maybe\" is not allow, deny or punt");
        let e = parse("- priority: 1\n  action: allow\n  colour: red\n").unwrap_err();
        assert!(matches!(e, PolicyFileError::Syntax(_)), "{e}");
    }
}
