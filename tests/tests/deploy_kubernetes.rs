//! The Kubernetes manifests (deploy/kubernetes, issue #13.2): each overlay renders with
//! `kubectl kustomize`, every object passes `kubernetes-validate --strict -k 1.29` (the
//! ServiceMonitor, a CRD, its own schema), the DaemonSet keeps what docs/deploy.md promises
//! (deploy/kubernetes/validate.py), and the policy in the ConfigMap passes `mecgw policy check`.
//! kubectl and kubernetes-validate are installed by `cargo xtask setup`: no skipping here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Kubernetes version the manifests must be valid for (the oldest supported).
const KUBERNETES: &str = "1.29";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (cargo xtask setup installs it)"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn render(overlay: &str) -> String {
    let dir = deploy_dir().join("overlays").join(overlay);
    let out = run(Command::new("kubectl").arg("kustomize").arg(&dir));
    assert!(
        out.status.success(),
        "kubectl kustomize {overlay}: {}",
        text(&out)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn validate(rendered: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, rendered).unwrap();
    run(Command::new("python3")
        .arg(deploy_dir().join("validate.py"))
        .arg(&file)
        .args(["--kubernetes", KUBERNETES]))
}

#[test]
fn every_overlay_renders_and_every_object_validates() {
    for overlay in ["lab", "production"] {
        let rendered = render(overlay);
        let out = validate(&rendered);
        println!("{overlay}:\n{}", text(&out));
        assert!(out.status.success(), "{overlay}: {}", text(&out));
        // Namespace, ConfigMap, Service, DaemonSet by kubernetes-validate; the ServiceMonitor
        // by its schema.
        assert_eq!(
            text(&out).matches(" passed for resource ").count(),
            5,
            "{overlay}"
        );
    }
}

#[test]
fn the_validation_catches_a_typo_and_a_capability_too_many() {
    let rendered = render("lab");
    let typo = rendered.replacen("hostNetwork: true", "hostNetwrk: true", 1);
    let out = validate(&typo);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("kubernetes-validate --strict"),
        "{}",
        text(&out)
    );
    let privileged = rendered.replacen("- PERFMON", "- PERFMON\n            - SYS_ADMIN", 1);
    assert_ne!(privileged, rendered);
    let out = validate(&privileged);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("must add exactly"), "{}", text(&out));
}

#[test]
fn the_configmap_policy_passes_mecgw_policy_check() {
    let policy = deploy_dir().join("base/config/policy.yaml");
    let out = run(Command::new(mecgw_tests::mecgw_bin().unwrap())
        .args(["policy", "check"])
        .arg(&policy));
    assert!(out.status.success(), "{}", text(&out));
}
