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

use crate::{
    pb,
    yaml_fields::{split_location, RuleDoc},
};

/// Why a policy file was rejected: the rule's path and field, with the line and column.
#[derive(Debug, thiserror::Error)]
#[error("{}{message}", at.map(|(l, c)| format!("{l}:{c}: ")).unwrap_or_default())]
pub struct PolicyFileError {
    /// `rules[3].dst_ports: "80-x" is not PORT or FIRST-LAST (ports 0-65535)`
    pub message: String,
    pub at: Option<(usize, usize)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapped {
    rules: Vec<RuleDoc>,
}

/// Parses a policy file into API rules (the server validates combinations).
pub fn parse(text: &str) -> Result<Vec<pb::Rule>, PolicyFileError> {
    let fail = |e: serde_yaml::Error| {
        let (message, at) = split_location(&e);
        // A top-level list's items have no parent name (".[3].action"): call them rules too.
        let message = match message.strip_prefix(".[") {
            Some(rest) => format!("rules[{rest}"),
            None => message,
        };
        PolicyFileError { message, at }
    };
    // An untagged enum would hide the field's error behind "did not match any variant": pick
    // the shape (list or map) first, then deserialize that shape for precise errors.
    let rules = match serde_yaml::from_str::<serde_yaml::Value>(text).map_err(fail)? {
        serde_yaml::Value::Sequence(_) => serde_yaml::from_str::<Vec<RuleDoc>>(text).map_err(fail)?,
        _ => serde_yaml::from_str::<Wrapped>(text).map_err(fail)?.rules,
    };
    Ok(rules.iter().map(pb::Rule::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_file_yaml_and_json_parse_to_the_same_rules() {
        let yaml = concat!(
            "rules:\n",
            "  - priority: 10\n    dst: 198.51.100.0/24\n    protocol: tcp\n    dst_ports: 80-89\n    action: deny\n",
            "  - priority: 20\n    protocol: tcp\n    dst_ports: 22\n    tcp_flags: syn-only\n    action: deny\n",
        );
        let json = r#"[{"priority":10,"dst":"198.51.100.0/24","protocol":"tcp","dst_ports":"80-89","action":"deny"},
                      {"priority":20,"protocol":6,"dst_ports":22,"tcp_flags":{"mask":18,"value":2},"action":"deny"}]"#;
        let a = parse(yaml).unwrap();
        let b = parse(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a[0].dst_ports, Some(pb::PortRange { first: 80, last: 89 }));
        assert_eq!(a[1].tcp_flags, Some(pb::TcpFlags { mask: 0x12, value: 0x02 }));
    }

    #[test]
    fn policy_file_bad_field_names_rule_field_and_line() {
        let e = parse("- priority: 1\n  action: maybe\n").unwrap_err();
        assert_eq!(e.to_string(), "2:11: rules[0].action: \"maybe\" is not allow, deny or punt");
        let e = parse("rules:\n  - priority: 1\n    action: allow\n    colour: red\n").unwrap_err();
        assert!(e.to_string().starts_with("4:5: rules[0]: unknown field `colour`"), "{e}");
        let e = parse("rules:\n  - priority: 1\n    dst_ports: 90-80\n    action: allow\n").unwrap_err();
        assert_eq!(e.to_string(), "3:16: rules[0].dst_ports: \"90-80\": the first port is above the last");
    }
}
