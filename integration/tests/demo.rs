//! The README's first command: scripts/demo.sh, two nodes programmed by the reference
//! controller from one file, forwards v4/v6 pings and iperf3 across both through XDP with their
//! kernel forwarding off, admits one web port and refuses another by the flow rules, runs to
//! completion (with the binaries this test run built) and leaves no namespace, pin, socket or
//! process behind.

use std::process::Command;

fn netns_list() -> String {
    integration::run("ip", &["netns", "list"]).unwrap()
}

#[test]
fn demo_script_runs_to_completion_and_leaves_nothing_behind() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/demo.sh");
    let out = Command::new("bash").arg(script).env("DEMO_BIN_DIR", integration::bin_dir()).output().expect("bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    // Kernel forwarding is off in the router: these crossed it through XDP only.
    assert!(stdout.contains("no answer (as expected)"), "{stdout}");
    assert_eq!(stdout.matches("5 packets transmitted, 5 received").count(), 2, "v4 and v6 pings: {stdout}");
    assert!(stdout.lines().any(|l| l.ends_with("receiver") && l.contains("bits/sec")), "iperf3: {stdout}");
    assert!(stdout.contains("From 192.0.2.1 icmp_seq=1 Time to live exceeded"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("r0 ")).unwrap_or_else(|| panic!("{stdout}"));
    let forwarded: u64 = row
        .split([' ', ','])
        .find_map(|f| f.strip_prefix("forwarded="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no forwarded counter: {row}"));
    assert!(row.contains("native") && forwarded > 1000, "{row}");
    // The flow rules: 8000 admitted (the page came back), 8080 refused.
    assert!(stdout.contains("port 8000: admitted: hello from h2"), "{stdout}");
    assert!(stdout.contains("port 8080: refused"), "{stdout}");
    // The controller's status: both nodes ready, decisions counted on node A.
    let node_a = stdout
        .lines()
        .rfind(|l| l.starts_with("node-a ") && !l.contains("rule hits"))
        .unwrap_or_else(|| panic!("{stdout}"));
    let cols: Vec<&str> = node_a.split_whitespace().collect();
    assert_eq!(cols[1], "ready", "{node_a}");
    let (misses, forwarded, dropped): (u64, u64, u64) =
        (cols[5].parse().unwrap(), cols[6].parse().unwrap(), cols[7].parse().unwrap());
    assert!(forwarded >= 4 && dropped >= 1 && misses == forwarded + dropped, "{node_a}");
    assert!(stdout.lines().any(|l| l.starts_with("node-b ") && l.contains(" ready ")), "{stdout}");
    assert!(stdout.contains("demo: cleaned up"), "{stdout}");

    // The script names everything after its pid; none of it may survive.
    let pid_tag = stdout
        .lines()
        .find_map(|l| l.split("demo-rtr-").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .expect("demo prints its router namespace")
        .to_owned();
    assert!(!netns_list().contains(&format!("-{pid_tag}")), "namespaces left: {}", netns_list());
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/dataplane-demo-{pid_tag}")).exists());
    assert!(!std::path::Path::new(&format!("/run/dataplane-demo-{pid_tag}")).exists());
}
