//! docker-compose.yml parses, names every service, and its commands are ones
//! the real CLI accepts. Needs no Docker engine (none runs here); when the
//! `docker compose` plugin is present, `docker compose config` checks it too.

use std::collections::BTreeSet;
use std::path::PathBuf;

use clap::Parser;
use marketmux::cli::Cli;
use serde_yaml::Value;

fn repo_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name)
}

fn compose() -> Value {
    let text = std::fs::read_to_string(repo_file("docker-compose.yml"))
        .expect("docker-compose.yml at the repo root");
    let mut v: Value = serde_yaml::from_str(&text).expect("docker-compose.yml is valid YAML");
    v.apply_merge().expect("merge keys resolve");
    v
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn compose_names_every_service_and_role() {
    let doc = compose();
    let services = doc["services"].as_mapping().expect("services");
    let names: BTreeSet<String> = services
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect();
    for want in [
        "kafka",
        "kafka-init",
        "redis",
        "postgres",
        "ingest",
        "bridge",
        "alerts",
        "gateway-1",
        "gateway-2",
    ] {
        assert!(
            names.contains(want),
            "service {want} missing from docker-compose.yml: {names:?}"
        );
    }

    let mut host_ports = BTreeSet::new();
    for (name, svc) in services {
        let name = name.as_str().unwrap();
        assert!(
            svc.get("image").is_some() || svc.get("build").is_some(),
            "{name}: no image or build"
        );
        for p in strings(&svc["ports"]) {
            let host = p.split(':').next().unwrap().to_string();
            assert!(
                host_ports.insert(host.clone()),
                "{name}: host port {host} used twice"
            );
        }
        if let Some(deps) = svc.get("depends_on").and_then(Value::as_mapping) {
            for d in deps.keys() {
                assert!(
                    names.contains(d.as_str().unwrap()),
                    "{name} depends on unknown {d:?}"
                );
            }
        }
        // Every service built from our Dockerfile runs a command our CLI accepts.
        if svc.get("build").is_some() && strings(&svc["entrypoint"]).is_empty() {
            let mut argv = vec!["marketmux".to_string()];
            argv.extend(strings(&svc["command"]));
            if let Err(e) = Cli::try_parse_from(&argv) {
                panic!(
                    "{name}: `{}` is not a valid marketmux command: {e}",
                    argv.join(" ")
                );
            }
            let env = svc["environment"].as_mapping().expect("environment");
            for k in env.keys().filter_map(Value::as_str) {
                assert!(
                    k.starts_with("MARKETMUX_") || ["RUST_LOG", "FINNHUB_API_KEY"].contains(&k),
                    "{name}: unknown setting {k}"
                );
            }
        }
    }
    let dockerfile =
        std::fs::read_to_string(repo_file("Dockerfile")).expect("Dockerfile at the repo root");
    for bin in ["marketmux", "mock-publisher", "load-test"] {
        assert!(
            dockerfile.contains(&format!("target/release/{bin}")),
            "Dockerfile ships {bin}"
        );
    }

    let plugin = std::process::Command::new("docker")
        .args(["compose", "version"])
        .output();
    match plugin {
        Ok(out) if out.status.success() => {
            let check = std::process::Command::new("docker")
                .args(["compose", "-f"])
                .arg(repo_file("docker-compose.yml"))
                .args(["config", "-q"])
                .output()
                .expect("docker compose config");
            assert!(
                check.status.success(),
                "{}",
                String::from_utf8_lossy(&check.stderr)
            );
        }
        _ if legacy_compose_accepts_it() => {}
        _ => eprintln!(
            "note: no `docker compose` here; checked the file with serde_yaml and the CLI only"
        ),
    }
}

/// Validates the file with the Python `docker-compose` 1.29 (Debian package
/// `docker-compose`), which needs no engine either. It predates the top-level
/// `name:`, so it checks a copy without that line. False when it is absent.
fn legacy_compose_accepts_it() -> bool {
    let present = std::process::Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !present {
        return false;
    }
    let text = std::fs::read_to_string(repo_file("docker-compose.yml")).expect("compose file");
    let without_name: String = text
        .lines()
        .filter(|l| !l.starts_with("name:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let copy = std::env::temp_dir().join(format!("marketmux-compose-{}.yml", std::process::id()));
    std::fs::write(&copy, without_name).expect("write the compose copy");
    let check = std::process::Command::new("docker-compose")
        .arg("-f")
        .arg(&copy)
        .arg("--project-directory")
        .arg(repo_file(""))
        .args(["config", "-q"])
        .output()
        .expect("docker-compose config");
    let _ = std::fs::remove_file(&copy);
    assert!(
        check.status.success(),
        "docker-compose 1.29 refuses the file: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    true
}
