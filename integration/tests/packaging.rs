//! The packaging in `deploy/`: the systemd unit passes `systemd-analyze verify` without a
//! warning, and the capabilities it grants are enough: a server run with exactly that bounding
//! set (by `setpriv`) attaches, reports its status, answers gRPC health and forwards pings in
//! XDP. The Kubernetes manifests validate against the API's schemas (`kubernetes-validate
//! --strict`), grant the same capabilities, and are not privileged. The Dockerfile builds with
//! the tested bootstrap.

use std::{collections::BTreeSet, path::PathBuf, process::Command};

use integration::{program_router, Server, Topology};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const UNIT: &str = "deploy/systemd/dataplane-server.service";

/// The unit's `CapabilityBoundingSet`, without the `CAP_` prefix, lower case.
fn unit_caps() -> BTreeSet<String> {
    let unit = read(UNIT);
    let line = unit.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).expect("a bounding set");
    line.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_lowercase()).collect()
}

#[test]
fn systemd_unit_verifies_without_warnings() {
    // The unit as installed, but naming this build's binary (verify checks it is executable).
    let dir = std::env::temp_dir().join(integration::unique("unit-"));
    std::fs::create_dir_all(&dir).unwrap();
    let unit =
        read(UNIT).replace("/usr/local/bin/dataplane-server", integration::bin("dataplane-server").to_str().unwrap());
    let path = dir.join("dataplane-server.service");
    std::fs::write(&path, unit).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_capabilities_run_the_server_and_forward() {
    let caps = unit_caps();
    let set =
        std::iter::once("-all".to_owned()).chain(caps.iter().map(|c| format!("+{c}"))).collect::<Vec<_>>().join(",");
    let topo = Topology::routed().unwrap();
    let server = Server::start_wrapped(&topo.rtr, &["setpriv", "--bounding-set", &set, "--"], &[]).unwrap();

    // It runs with those and no others.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid().unwrap())).unwrap();
    let eff = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_owned();
    let bits = u64::from_str_radix(&eff, 16).unwrap();
    let want: u64 = caps
        .iter()
        .map(|c| match c.as_str() {
            "net_admin" => 1 << 12,
            "net_raw" => 1 << 13,
            "sys_admin" => 1 << 21,
            "sys_resource" => 1 << 24,
            "perfmon" => 1 << 38,
            "bpf" => 1 << 39,
            other => panic!("a capability this test does not know: {other}"),
        })
        .sum();
    assert_eq!(bits, want, "CapEff {eff}");

    let mut c = server.client().await.unwrap();
    program_router(&topo, &mut c).await.unwrap();
    c.system.get_status(controller_client::pb::GetStatusRequest {}).await.expect("status reads maps by id");
    topo.ping_h1_to_h2(3).expect("forwarded in XDP by a server with the unit's capabilities");
    let health = server.dpctl(&["health"]);
    assert!(health.status.success(), "{}", String::from_utf8_lossy(&health.stderr));
    assert_eq!(String::from_utf8_lossy(&health.stdout).trim(), "SERVING");
    assert!(!server.log_text().contains("Operation not permitted"), "{}", server.log_text());
}

#[test]
fn kubernetes_manifests_validate_and_grant_the_units_capabilities() {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    let out = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(&files)
        .output()
        .expect("kubernetes-validate (scripts/bootstrap.sh installs it)");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let ds = read("deploy/kubernetes/daemonset.yaml");
    let ds: serde_yaml::Value = serde_yaml::from_str(&ds).unwrap();
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["privileged"], serde_yaml::Value::Bool(false));
    let added: BTreeSet<String> =
        sc["capabilities"]["add"].as_sequence().unwrap().iter().map(|c| c.as_str().unwrap().to_lowercase()).collect();
    assert_eq!(added, unit_caps(), "the DaemonSet and the unit grant the same capabilities");
    assert_eq!(ds["spec"]["template"]["spec"]["hostNetwork"], serde_yaml::Value::Bool(true));
    for probe in ["livenessProbe", "readinessProbe"] {
        let cmd = container[probe]["exec"]["command"].as_sequence().unwrap();
        assert!(cmd.iter().any(|a| a.as_str() == Some("health")), "{probe}: gRPC health through dpctl");
    }
}

#[test]
fn dockerfile_builds_with_the_tested_bootstrap_and_ships_the_probe() {
    let d = read("Dockerfile");
    assert!(d.contains("scripts/bootstrap.sh"), "the image is built by the bootstrap the tests run");
    assert!(d.contains("cargo build --release --locked"), "from the locked dependencies");
    // The DaemonSet's probes run dpctl from the image.
    let runtime = d.rsplit("FROM ").next().unwrap();
    assert!(runtime.contains("dpctl") && runtime.contains("dataplane-server"), "{runtime}");
}
