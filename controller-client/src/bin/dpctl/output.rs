//! Everything dpctl prints, in both formats: `-o table` (aligned columns or one line of text)
//! and `-o json` (one value, or one object per line for streams). The service modules only send
//! requests and hand the answers here, so a format change is made once and the two formats of
//! one answer sit side by side. An enum value prints as the same name in both formats.

use clap::ValueEnum;
use controller_client::pb;
use serde_json::{json, Value};

/// The output format (`-o`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
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

/// The printed name of an API enum value, from a table of `(value, name)`; `unknown` for a value
/// this build does not know (a newer server's).
fn named<E: TryFrom<i32> + PartialEq>(value: i32, names: &[(E, &'static str)], unknown: &'static str) -> &'static str {
    let value = E::try_from(value).ok();
    names.iter().find(|(e, _)| Some(e) == value.as_ref()).map_or(unknown, |&(_, name)| name)
}

/// A table's header row.
fn header(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// Prints a JSON array of `items`.
fn print_array<T>(items: &[T], item: impl Fn(&T) -> Value) {
    println!("{}", Value::Array(items.iter().map(item).collect()));
}

/// The failed entries of a batch write, on stderr below the error line (which names the first):
/// one line each, then what was applied. A batch of one entry that failed says it all already.
pub fn failed_entries(batch: &pb::BatchStatus) {
    let failed = batch.failed.len() + batch.unlisted as usize;
    if failed <= 1 && batch.applied == 0 {
        return;
    }
    for e in &batch.failed {
        let code = controller_client::code_name(tonic::Code::from_i32(e.code));
        eprintln!("  entry {}: {code}: {}", e.index, e.message);
    }
    if batch.unlisted > 0 {
        eprintln!("  ... and {} more", batch.unlisted);
    }
    eprintln!(
        "{failed} of {} entries failed, {} applied, generation {}",
        batch.entries, batch.applied, batch.generation
    );
}

/// A change the server made: `WHAT, generation N`, or `{"generation": N}`.
pub fn done(output: Output, what: impl std::fmt::Display, generation: u64) {
    match output {
        Output::Json => println!("{}", json!({ "generation": generation })),
        Output::Table => println!("{what}, generation {generation}"),
    }
}

// ---------------------------------------------------------------------------------------------
// System.

/// `status`: a summary, then programs, attachments and maps as three tables.
/// A session's election id in decimal.
fn election_id(s: &pb::SessionStatus) -> String {
    s.election_id.as_ref().map(|id| controller_client::stream_channel::from_uint128(id).to_string()).unwrap_or_default()
}

pub fn status(output: Output, s: &pb::GetStatusResponse) {
    if output == Output::Json {
        let program =
            |p: &pb::ProgramStatus| json!({"name": p.name, "type": p.r#type, "kernel_id": p.kernel_id, "tag": p.tag});
        let attachment = |a: &pb::AttachmentStatus| {
            json!({"interface": a.interface, "ifindex": a.ifindex, "hook": hook(a.hook), "program": a.program,
                   "xdp_mode": xdp_mode(a.xdp_mode), "link_id": a.link_id})
        };
        let map = |m: &pb::MapStatus| {
            json!({"name": m.name, "type": m.r#type, "kernel_id": m.kernel_id, "max_entries": m.max_entries,
                   "key_size": m.key_size, "value_size": m.value_size, "occupancy": m.occupancy,
                   "pin_path": m.pin_path})
        };
        let v = json!({
            "version": s.version,
            "kernel_version": s.kernel_version,
            "uptime_seconds": s.uptime_seconds,
            "generation": s.generation,
            "bpffs_root": s.bpffs_root,
            "instance_id": s.instance_id,
            "sessions": s.sessions.iter().map(|c| json!({"role": c.role, "election_id": election_id(c),
                "primary": c.primary, "misses": c.misses, "lost": c.lost, "decisions": c.decisions}))
                .collect::<Vec<_>>(),
            "programs": s.programs.iter().map(program).collect::<Vec<_>>(),
            "attachments": s.attachments.iter().map(attachment).collect::<Vec<_>>(),
            "maps": s.maps.iter().map(map).collect::<Vec<_>>(),
            "pin_health": s.pin_health.as_ref().map(|h| json!({
                "repairs_total": h.repairs_total,
                "repairs": h.repairs.iter().map(|r| json!({"map": r.map, "found": r.found, "done": r.done,
                    "phase": r.phase, "at_unix_ms": r.at_unix_ms, "map_id": r.map_id})).collect::<Vec<_>>(),
            })),
        });
        println!("{v}");
        return;
    }
    println!("version     {}", s.version);
    println!("kernel      {}", s.kernel_version);
    println!("uptime      {}s", s.uptime_seconds);
    println!("generation  {}", s.generation);
    println!("bpffs       {}", s.bpffs_root);
    println!("instance    {}", s.instance_id);
    println!();
    // Only with controller sessions open: a node without controllers reads as before.
    if !s.sessions.is_empty() {
        let mut rows = vec![header(&["ROLE", "ELECTION ID", "PRIMARY", "MISSES", "LOST", "DECISIONS"])];
        rows.extend(s.sessions.iter().map(|c| {
            vec![
                if c.role.is_empty() { "\"\"".into() } else { c.role.clone() },
                election_id(c),
                if c.primary { "yes" } else { "backup" }.into(),
                c.misses.to_string(),
                c.lost.to_string(),
                c.decisions.to_string(),
            ]
        }));
        print_table(&rows);
        println!();
    }
    let mut rows = vec![header(&["PROGRAM", "TYPE", "ID", "TAG"])];
    rows.extend(
        s.programs.iter().map(|p| vec![p.name.clone(), p.r#type.clone(), p.kernel_id.to_string(), p.tag.clone()]),
    );
    print_table(&rows);
    println!();
    let mut rows = vec![header(&["INTERFACE", "IFINDEX", "HOOK", "MODE", "LINK"])];
    rows.extend(s.attachments.iter().map(|a| {
        vec![
            a.interface.clone(),
            a.ifindex.to_string(),
            hook(a.hook).into(),
            xdp_mode(a.xdp_mode).into(),
            a.link_id.to_string(),
        ]
    }));
    print_table(&rows);
    println!();
    let mut rows = vec![header(&["MAP", "TYPE", "ID", "USED", "MAX", "PIN"])];
    rows.extend(s.maps.iter().map(|m| {
        vec![
            m.name.clone(),
            m.r#type.clone(),
            m.kernel_id.to_string(),
            m.occupancy.to_string(),
            m.max_entries.to_string(),
            m.pin_path.clone(),
        ]
    }));
    print_table(&rows);
    // Only when something was repaired: an undamaged node's status stays as it was.
    if let Some(h) = s.pin_health.as_ref().filter(|h| h.repairs_total > 0) {
        println!();
        println!("pin repairs {} since start (latest {})", h.repairs_total, h.repairs.len());
        let mut rows = vec![header(&["MAP", "PHASE", "FOUND", "DONE"])];
        rows.extend(h.repairs.iter().map(|r| vec![r.map.clone(), r.phase.clone(), r.found.clone(), r.done.clone()]));
        print_table(&rows);
    }
}

fn hook(h: i32) -> &'static str {
    named(h, &[(pb::Hook::XdpIngress, "xdp-ingress"), (pb::Hook::TcEgress, "tc-egress")], "-")
}

/// `system upgrade`: the new programs' ids.
pub fn upgraded(output: Output, r: &pb::UpgradeProgramsResponse) {
    match output {
        Output::Json => {
            let programs: Vec<Value> =
                r.programs.iter().map(|p| json!({"name": p.name, "id": p.kernel_id, "tag": p.tag})).collect();
            println!("{}", json!({"generation": r.generation, "programs": programs}))
        }
        Output::Table => {
            let ids: Vec<String> = r.programs.iter().map(|p| format!("{} id {}", p.name, p.kernel_id)).collect();
            println!("programs upgraded: {}, generation {}", ids.join(", "), r.generation);
        }
    }
}

/// `system resync-end`: what was removed, and what was kept because it is still used.
pub fn resync_ended(output: Output, r: &pb::EndResyncResponse) {
    match output {
        Output::Json => println!(
            "{}",
            json!({"generation": r.generation, "removed": {"routes": r.routes, "next_hops": r.next_hops,
                   "policy_attachments": r.policy_attachments, "policies": r.policies, "interfaces": r.interfaces,
                   "vrfs": r.vrfs}, "kept": r.kept})
        ),
        Output::Table => println!(
            concat!(
                "resync ended, generation {}: removed {} route(s), {} next hop(s), {} policy attachment(s), ",
                "{} policy(ies), {} interface(s), {} vrf(s){}"
            ),
            r.generation,
            r.routes,
            r.next_hops,
            r.policy_attachments,
            r.policies,
            r.interfaces,
            r.vrfs,
            if r.kept.is_empty() { String::new() } else { format!("; kept (still used): {}", r.kept.join(", ")) }
        ),
    }
}

/// `system reset`.
pub fn reset(output: Output) {
    match output {
        Output::Json => println!("{}", json!({"reset": true})),
        Output::Table => println!("reset: the dataplane is detached, its pins removed; the server exits"),
    }
}

// ---------------------------------------------------------------------------------------------
// Interfaces.

fn xdp_mode(m: i32) -> &'static str {
    named(m, &[(pb::XdpMode::Native, "native"), (pb::XdpMode::Generic, "generic"), (pb::XdpMode::Auto, "auto")], "-")
}

fn counters(i: &pb::Interface) -> pb::InterfaceCounters {
    i.counters.clone().unwrap_or_default()
}

fn interface_json(i: &pb::Interface) -> Value {
    let c = counters(i);
    let reasons: serde_json::Map<String, Value> =
        c.reasons.iter().map(|r| (r.reason.clone(), json!(r.packets))).collect();
    json!({
        "name": i.name,
        "ifindex": i.ifindex,
        "slot": i.slot,
        "requested_xdp_mode": xdp_mode(i.requested_xdp_mode),
        "xdp_mode": xdp_mode(i.xdp_mode),
        "rx_packets": c.rx_packets,
        "rx_bytes": c.rx_bytes,
        "tx_packets": c.tx_packets,
        "tx_bytes": c.tx_bytes,
        "rx_dropped": c.rx_dropped,
        "rx_parse_errors": c.rx_parse_errors,
        "reasons": reasons,
    })
}

/// `interface add`: where the interface landed (ifindex, slot, XDP mode).
pub fn interface_added(output: Output, r: &pb::AddInterfaceResponse) {
    let iface = r.interface.clone().unwrap_or_default();
    match output {
        Output::Json => println!("{}", json!({"interface": interface_json(&iface), "generation": r.generation})),
        Output::Table => println!(
            "attached {} (ifindex {}, slot {}, xdp {}), generation {}",
            iface.name,
            iface.ifindex,
            iface.slot,
            xdp_mode(iface.xdp_mode),
            r.generation
        ),
    }
}

/// `interface list`: one row per interface with its counters and non-zero drop reasons.
pub fn interfaces(output: Output, list: &[pb::Interface]) {
    if output == Output::Json {
        print_array(list, interface_json);
        return;
    }
    let mut rows = vec![header(&[
        "NAME",
        "IFINDEX",
        "SLOT",
        "XDP",
        "RX_PKTS",
        "RX_BYTES",
        "TX_PKTS",
        "TX_BYTES",
        "DROPS",
        "PARSE_ERR",
        "REASONS",
    ])];
    for i in list {
        let c = counters(i);
        let reasons: Vec<String> =
            c.reasons.iter().filter(|r| r.packets > 0).map(|r| format!("{}={}", r.reason, r.packets)).collect();
        rows.push(vec![
            i.name.clone(),
            i.ifindex.to_string(),
            i.slot.to_string(),
            xdp_mode(i.xdp_mode).into(),
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

// ---------------------------------------------------------------------------------------------
// Routing.

/// `vrf list`.
pub fn vrfs(output: Output, list: &[pb::Vrf]) {
    if output == Output::Json {
        print_array(list, |v| {
            let mode = if v.mode() == pb::VrfMode::KernelFib { "kernel-fib" } else { "routes" };
            json!({"id": v.id, "mode": mode, "kernel_table": v.kernel_table, "interfaces": v.interfaces,
                   "routes": v.routes, "ipv4_lookup": ipv4_lookup(v.ipv4_lookup()),
                   "ipv4_flat_chunks": v.ipv4_flat_chunks})
        });
        return;
    }
    let mut rows = vec![header(&["VRF", "MODE", "INTERFACES", "ROUTES", "IPV4 LOOKUP"])];
    rows.extend(list.iter().map(|v| {
        let lookup = match v.ipv4_lookup() {
            pb::Ipv4Lookup::Flat => format!("flat ({} KiB)", v.ipv4_flat_chunks),
            other => ipv4_lookup(other).to_owned(),
        };
        vec![v.id.to_string(), vrf_mode(v), v.interfaces.to_string(), v.routes.to_string(), lookup]
    }));
    print_table(&rows);
}

fn ipv4_lookup(l: pb::Ipv4Lookup) -> &'static str {
    match l {
        pb::Ipv4Lookup::Flat => "flat",
        pb::Ipv4Lookup::Trie => "trie",
        pb::Ipv4Lookup::Unspecified => "-",
    }
}

fn vrf_mode(v: &pb::Vrf) -> String {
    match pb::VrfMode::try_from(v.mode) {
        Ok(pb::VrfMode::KernelFib) if v.kernel_table != 0 => format!("kernel-fib table {}", v.kernel_table),
        Ok(pb::VrfMode::KernelFib) => "kernel-fib".into(),
        _ => "routes".into(),
    }
}

fn next_hop_state(n: &pb::NextHop) -> &'static str {
    named(
        n.state,
        &[
            (pb::NextHopState::Ready, "ready"),
            (pb::NextHopState::Unresolved, "unresolved"),
            (pb::NextHopState::InterfaceMissing, "interface-missing"),
        ],
        "-",
    )
}

/// A next hop's kind and what it forwards to, as one line.
fn next_hop_kind(n: &pb::NextHop) -> (String, String) {
    use pb::next_hop::Kind;
    let src = |e: &pb::EncapNextHop| if e.src_mac.is_empty() { String::new() } else { format!(" src {}", e.src_mac) };
    match &n.kind {
        Some(Kind::Encap(e)) if !e.gateway.is_empty() => {
            let mac = if n.resolved_mac.is_empty() { "unresolved" } else { &n.resolved_mac };
            ("encap".into(), format!("{} gateway {} ({mac}){}", e.interface, e.gateway, src(e)))
        }
        Some(Kind::Encap(e)) => ("encap".into(), format!("{} dst {}{}", e.interface, e.dst_mac, src(e))),
        Some(Kind::Ecmp(g)) => ("ecmp".into(), g.members.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
        Some(Kind::Discard(_)) => ("discard".into(), "-".into()),
        Some(Kind::Receive(_)) => ("receive".into(), "-".into()),
        None => ("-".into(), "-".into()),
    }
}

/// `nexthop list`.
pub fn next_hops(output: Output, list: &[pb::NextHop]) {
    if output == Output::Json {
        print_array(list, |n| {
            let (kind, detail) = next_hop_kind(n);
            json!({"id": n.id, "kind": kind, "detail": detail, "state": next_hop_state(n),
                   "resolved_mac": n.resolved_mac, "routes": n.routes, "packets": n.packets, "bytes": n.bytes})
        });
        return;
    }
    let mut rows = vec![header(&["ID", "KIND", "DETAIL", "STATE", "ROUTES", "PACKETS", "BYTES"])];
    rows.extend(list.iter().map(|n| {
        let (kind, detail) = next_hop_kind(n);
        vec![
            n.id.to_string(),
            kind,
            detail,
            next_hop_state(n).into(),
            n.routes.to_string(),
            n.packets.to_string(),
            n.bytes.to_string(),
        ]
    }));
    print_table(&rows);
}

/// `route list`.
pub fn routes(output: Output, list: &[pb::Route]) {
    if output == Output::Json {
        print_array(list, |r| json!({"vrf": r.vrf, "prefix": r.prefix, "next_hop": r.next_hop}));
        return;
    }
    let mut rows = vec![header(&["VRF", "PREFIX", "NEXTHOP"])];
    rows.extend(list.iter().map(|r| vec![r.vrf.to_string(), r.prefix.clone(), r.next_hop.to_string()]));
    print_table(&rows);
}

/// `route lookup`: the matching route, or none.
pub fn lookup(output: Output, address: &str, vrf: u32, r: &pb::LookupRouteResponse) {
    let route = r.route.clone().unwrap_or_default();
    match (output, r.found) {
        (Output::Json, true) => {
            println!("{}", json!({"found": true, "vrf": route.vrf, "prefix": route.prefix, "next_hop": route.next_hop}))
        }
        (Output::Json, false) => println!("{}", json!({"found": false})),
        (Output::Table, true) => println!("{address} vrf {vrf}: {} via next hop {}", route.prefix, route.next_hop),
        (Output::Table, false) => println!("{address} vrf {vrf}: no route"),
    }
}

// ---------------------------------------------------------------------------------------------
// Policy.

/// A policy direction's name (also used in the policy verbs' confirmations).
pub fn direction(d: i32) -> &'static str {
    named(d, &[(pb::Direction::Ingress, "ingress"), (pb::Direction::Egress, "egress")], "?")
}

fn rule_action(a: i32) -> &'static str {
    named(a, &[(pb::Action::Allow, "allow"), (pb::Action::Deny, "deny"), (pb::Action::Punt, "punt")], "?")
}

fn policy_json(p: &pb::PolicyInfo) -> Value {
    json!({
        "name": p.name,
        "attachments": p.attachments.iter().map(|a| json!({
            "interface": a.interface,
            "direction": direction(a.direction),
            "default": rule_action(a.default_action),
        })).collect::<Vec<_>>(),
        "rules": p.rules.iter().map(|r| json!({
            "priority": r.priority,
            "src": r.src_prefix,
            "dst": r.dst_prefix,
            "protocol": r.protocol,
            "src_ports": r.src_ports.map(|p| json!([p.first, p.last])),
            "dst_ports": r.dst_ports.map(|p| json!([p.first, p.last])),
            "icmp_type": r.icmp_type,
            "icmp_code": r.icmp_code,
            "tcp_flags": r.tcp_flags.map(|f| json!({"mask": f.mask, "value": f.value})),
            "action": rule_action(r.action),
            "packets": r.packets,
            "bytes": r.bytes,
        })).collect::<Vec<_>>(),
    })
}

/// A rule's row: `*` for a field the rule does not match on.
fn rule_row(r: &pb::Rule) -> Vec<String> {
    let any = || "*".to_owned();
    let or_any = |s: &str| if s.is_empty() { any() } else { s.to_owned() };
    let range = |p: &Option<pb::PortRange>| {
        p.map(|p| if p.first == p.last { p.first.to_string() } else { format!("{}-{}", p.first, p.last) })
            .unwrap_or_else(any)
    };
    let number = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_else(any);
    vec![
        r.priority.to_string(),
        or_any(&r.src_prefix),
        or_any(&r.dst_prefix),
        number(r.protocol),
        range(&r.src_ports),
        range(&r.dst_ports),
        match (r.icmp_type, r.icmp_code) {
            (None, None) => any(),
            (t, c) => format!("{}/{}", number(t), number(c)),
        },
        r.tcp_flags.map(|f| format!("{:#04x}/{:#04x}", f.value, f.mask)).unwrap_or_else(any),
        rule_action(r.action).to_owned(),
        r.packets.to_string(),
        r.bytes.to_string(),
    ]
}

/// `policy list`: per policy, a line of attachments and a table of rules.
pub fn policies(output: Output, list: &[pb::PolicyInfo]) {
    if output == Output::Json {
        print_array(list, policy_json);
        return;
    }
    for p in list {
        let att: Vec<String> = p
            .attachments
            .iter()
            .map(|a| format!("{} {} (default {})", a.interface, direction(a.direction), rule_action(a.default_action)))
            .collect();
        let att = if att.is_empty() { "-".into() } else { att.join(", ") };
        println!("policy {}: {} rules, attached: {att}", p.name, p.rules.len());
        let mut rows = vec![header(&[
            "PRIO", "SRC", "DST", "PROTO", "SPORTS", "DPORTS", "ICMP", "FLAGS", "ACTION", "PACKETS", "BYTES",
        ])];
        rows.extend(p.rules.iter().map(rule_row));
        print_table(&rows);
    }
}

// ---------------------------------------------------------------------------------------------
// Flows.

fn flow_key_text(k: &pb::FlowKey) -> String {
    format!("vrf {} proto {} {}:{} -> {}:{}", k.vrf, k.protocol, k.src, k.src_port, k.dst, k.dst_port)
}

fn flow_key_json(k: &pb::FlowKey) -> Value {
    json!({"vrf": k.vrf, "src": k.src, "dst": k.dst, "protocol": k.protocol, "src_port": k.src_port,
           "dst_port": k.dst_port})
}

fn flow_action(a: i32) -> &'static str {
    named(
        a,
        &[(pb::FlowAction::Forward, "forward"), (pb::FlowAction::Drop, "drop"), (pb::FlowAction::Hold, "hold")],
        "?",
    )
}

/// One message of `flows watch`: a line of text or one JSON object per line.
pub fn flow_miss(output: Output, m: pb::FlowMissMessage) {
    use pb::flow_miss_message::Kind;
    match (m.kind, output) {
        (Some(Kind::Miss(m)), Output::Json) => println!(
            "{}",
            json!({"seq": m.seq, "request_id": m.request_id, "interface": m.interface, "reason": m.reason,
                   "key": m.key.as_ref().map(flow_key_json), "packet_length": m.packet_length})
        ),
        (Some(Kind::Miss(m)), Output::Table) => println!(
            "#{} {} {} {} ({} bytes) request {}",
            m.seq,
            m.interface,
            m.reason,
            m.key.as_ref().map(flow_key_text).unwrap_or_default(),
            m.packet_length,
            m.request_id
        ),
        (Some(Kind::Lagged(n)), Output::Json) => println!("{}", json!({"lagged": n})),
        (Some(Kind::Lagged(n)), Output::Table) => println!("lagged: {n} events lost"),
        (None, _) => {}
    }
}

/// `flow list`.
pub fn flows(output: Output, list: &[pb::Flow]) {
    if output == Output::Json {
        print_array(list, |f| {
            json!({"key": f.key.as_ref().map(flow_key_json), "action": flow_action(f.action), "next_hop": f.next_hop,
                   "request_id": f.request_id, "packets": f.packets, "bytes": f.bytes, "idle_ms": f.idle_ms})
        });
        return;
    }
    let mut rows = vec![header(&["VRF", "PROTO", "SRC", "DST", "ACTION", "NEXTHOP", "PACKETS", "BYTES", "IDLE_MS"])];
    for f in list {
        let k = f.key.clone().unwrap_or_default();
        rows.push(vec![
            k.vrf.to_string(),
            k.protocol.to_string(),
            format!("{}:{}", k.src, k.src_port),
            format!("{}:{}", k.dst, k.dst_port),
            flow_action(f.action).into(),
            if f.action == pb::FlowAction::Forward as i32 { f.next_hop.to_string() } else { "-".into() },
            f.packets.to_string(),
            f.bytes.to_string(),
            f.idle_ms.to_string(),
        ]);
    }
    print_table(&rows);
}

// ---------------------------------------------------------------------------------------------
// Events.

/// One message of `events watch`: a line of text or one JSON object per line.
pub fn netlink_event(output: Output, m: pb::NetlinkEventMessage) {
    use pb::netlink_event_message::Kind;
    match (m.kind, output) {
        (Some(Kind::Event(e)), Output::Json) => println!("{}", event_json(&e)),
        (Some(Kind::Event(e)), Output::Table) => println!("{}", event_text(&e)),
        (Some(Kind::Lagged(n)), Output::Json) => println!("{}", json!({"lagged": n})),
        (Some(Kind::Lagged(n)), Output::Table) => println!("lagged: {n} events lost"),
        (Some(Kind::SnapshotDone(d)), Output::Json) => println!("{}", json!({"snapshot_done": d.entries})),
        (Some(Kind::SnapshotDone(d)), Output::Table) => {
            println!("-- snapshot: {} entries; live events follow --", d.entries)
        }
        (Some(Kind::KernelOverrun(o)), Output::Json) => println!("{}", json!({"kernel_overrun": o.seq})),
        (Some(Kind::KernelOverrun(o)), Output::Table) => {
            println!("#{} the kernel dropped events (netlink overrun): resubscribe with --snapshot to resync", o.seq)
        }
        (None, _) => {}
    }
}

fn event_action(e: &pb::NetlinkEvent) -> &'static str {
    named(
        e.action,
        &[
            (pb::EventAction::Added, "added"),
            (pb::EventAction::Removed, "removed"),
            (pb::EventAction::Changed, "changed"),
        ],
        "?",
    )
}

fn event_json(e: &pb::NetlinkEvent) -> Value {
    use pb::netlink_event::Detail;
    let mut v = json!({"seq": e.seq, "snapshot": e.snapshot, "action": event_action(e), "ifindex": e.ifindex,
                       "interface": e.interface});
    let (kind, detail) = match &e.detail {
        Some(Detail::Link(l)) => (
            "link",
            json!({"up": l.up, "running": l.running, "mtu": l.mtu, "mac": l.mac, "changes": l.changes,
                   "owned": l.owned}),
        ),
        Some(Detail::Address(a)) => ("address", json!({"address": a.address, "prefix_len": a.prefix_len})),
        Some(Detail::Route(r)) => (
            "route",
            json!({"destination": r.destination, "gateway": r.gateway, "table": r.table, "metric": r.metric,
                   "protocol": r.protocol, "type": r.r#type}),
        ),
        Some(Detail::Neighbour(n)) => {
            ("neighbour", json!({"address": n.address, "mac": n.mac, "state": n.state, "router": n.router}))
        }
        None => ("?", json!({})),
    };
    v["kind"] = json!(kind);
    v[kind] = detail;
    v
}

fn event_text(e: &pb::NetlinkEvent) -> String {
    use pb::netlink_event::Detail;
    let head = if e.snapshot { "snapshot".to_owned() } else { format!("#{}", e.seq) };
    let action = event_action(e);
    let what = match &e.detail {
        Some(Detail::Link(l)) => format!(
            "link {action} {} (ifindex {}) {} mtu {} {}{}{}",
            e.interface,
            e.ifindex,
            if l.up { "up" } else { "down" },
            l.mtu,
            l.mac,
            if l.changes.is_empty() { String::new() } else { format!(" changed: {}", l.changes.join(",")) },
            if l.owned { " [owned]" } else { "" }
        ),
        Some(Detail::Address(a)) => format!("address {action} {}/{} dev {}", a.address, a.prefix_len, e.interface),
        Some(Detail::Route(r)) => format!(
            "route {action} {}{} dev {} table {} metric {} proto {} type {}",
            r.destination,
            if r.gateway.is_empty() { String::new() } else { format!(" via {}", r.gateway) },
            if e.interface.is_empty() { "-" } else { &e.interface },
            r.table,
            r.metric,
            r.protocol,
            r.r#type
        ),
        Some(Detail::Neighbour(n)) => format!(
            "neighbour {action} {} dev {} lladdr {} {}{}",
            n.address,
            e.interface,
            if n.mac.is_empty() { "-" } else { &n.mac },
            n.state,
            if n.router { " router" } else { "" }
        ),
        None => "?".into(),
    };
    format!("{head} {what}")
}

/// One interval of `dpctl stats watch`: per-second rates from a snapshot of deltas.
pub fn stats_rates(output: Output, s: &pb::StatsSnapshot) {
    let secs = (s.elapsed_ns as f64 / 1e9).max(1e-9);
    let rate = |n: u64| n as f64 / secs;
    match output {
        Output::Json => {
            let interfaces: Vec<Value> = s
                .interfaces
                .iter()
                .map(|i| {
                    let c = i.counters.clone().unwrap_or_default();
                    let reasons: serde_json::Map<String, Value> =
                        c.reasons.iter().map(|r| (r.reason.clone(), json!(rate(r.packets)))).collect();
                    json!({"interface": i.name, "rx_pps": rate(c.rx_packets), "rx_bps": rate(c.rx_bytes * 8),
                           "tx_pps": rate(c.tx_packets), "tx_bps": rate(c.tx_bytes * 8),
                           "drops_per_s": rate(c.rx_dropped), "reasons_per_s": reasons})
                })
                .collect();
            let next_hops: Vec<Value> = s
                .next_hops
                .iter()
                .map(|n| json!({"id": n.id, "pps": rate(n.packets), "bps": rate(n.bytes * 8)}))
                .collect();
            println!("{}", json!({"seq": s.seq, "seconds": secs, "interfaces": interfaces, "next_hops": next_hops}));
        }
        Output::Table => {
            println!("-- {:.2} s --", secs);
            println!(
                "{:<16} {:>12} {:>14} {:>12} {:>14} {:>10}",
                "INTERFACE", "RX_PPS", "RX_BPS", "TX_PPS", "TX_BPS", "DROPS/S"
            );
            for i in &s.interfaces {
                let c = i.counters.clone().unwrap_or_default();
                println!(
                    "{:<16} {:>12.0} {:>14.0} {:>12.0} {:>14.0} {:>10.0}",
                    i.name,
                    rate(c.rx_packets),
                    rate(c.rx_bytes * 8),
                    rate(c.tx_packets),
                    rate(c.tx_bytes * 8),
                    rate(c.rx_dropped)
                );
                for r in c.reasons.iter().filter(|r| r.packets != 0) {
                    println!("  {:<30} {:>12.0}/s", r.reason, rate(r.packets));
                }
            }
            for n in s.next_hops.iter().filter(|n| n.packets != 0) {
                println!("nexthop {:<8} {:>12.0} pps {:>14.0} bps", n.id, rate(n.packets), rate(n.bytes * 8));
            }
        }
    }
}
