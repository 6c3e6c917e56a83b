//! The server binary and its state file: a file this build cannot read stops it before it
//! touches the kernel, with the field named.

use std::process::Command;

const FORMAT1: &str = include_str!("fixtures/state-format1.json");

/// Runs the server over `state` (in a fresh directory) and returns its exit success and stderr.
fn start_with_state_file(test: &str, state: &str) -> (bool, String, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("dataplane-state-file-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state_file = dir.join("state.json");
    std::fs::write(&state_file, state).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dataplane-server"))
        .arg("--grpc-socket")
        .arg(dir.join("dataplane.sock"))
        .arg("--bpffs")
        .arg(dir.join("bpf"))
        .arg("--state-file")
        .arg(&state_file)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned(), dir)
}

fn with_value(from: &str, to: &str) -> String {
    assert!(FORMAT1.contains(from), "{from}");
    FORMAT1.replacen(from, to, 1)
}

#[test]
fn start_state_file_unknown_xdp_mode_refused_naming_the_field() {
    let state = with_value(r#""requested":"native","xdp_mode":"native""#, r#""requested":"native","xdp_mode":"turbo""#);
    let (ok, stderr, dir) = start_with_state_file("xdp-mode", &state);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("reading the state file"), "{stderr}");
    assert!(
        stderr.contains("interfaces[2].xdp_mode: unknown variant `turbo`, expected one of `auto`, `native`, `generic`"),
        "{stderr}"
    );
    assert!(!dir.join("bpf").exists(), "nothing pinned before the file was read");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn start_state_file_unknown_direction_refused_naming_the_field() {
    let state = with_value(r#""direction":"egress""#, r#""direction":"outbound""#);
    let (ok, stderr, dir) = start_with_state_file("direction", &state);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("attachments[1].direction: unknown variant `outbound`"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn start_state_file_bad_prefix_in_rule_refused_naming_the_field() {
    let state = with_value(r#""src":"192.0.2.0/24""#, r#""src":"192.0.2.0/33""#);
    let (ok, stderr, dir) = start_with_state_file("prefix", &state);
    assert!(!ok, "{stderr}");
    assert!(stderr.contains("policies[1].rules[0].src: prefix length 33 is longer than 32 for IPv4"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
