//! The gRPC protos (`proto/mecgw/v1`) are `buf lint` clean under the repository's `buf.yaml`
//! (STANDARD rules). `cargo xtask setup` installs buf (PyPI buf-bin).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, process::Command};

fn buf_lint(dir: &Path) -> (bool, String) {
    let out = Command::new("buf")
        .arg("lint")
        .current_dir(dir)
        .output()
        .expect("buf is not installed: run `cargo xtask setup`");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn protos_are_buf_lint_clean() {
    let (ok, text) = buf_lint(repo());
    assert!(ok, "buf lint:\n{text}");
    assert_eq!(text.trim(), "", "buf lint printed findings");
}

/// The lint really runs on these files: a copy with a badly named RPC request fails it.
#[test]
fn buf_lint_catches_a_bad_proto() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(repo().join("buf.yaml"), dir.path().join("buf.yaml")).unwrap();
    let v1 = dir.path().join("proto/mecgw/v1");
    std::fs::create_dir_all(&v1).unwrap();
    let good = std::fs::read_to_string(repo().join("proto/mecgw/v1/status.proto")).unwrap();
    let bad = good.replace("GetStatusRequest", "StatusQuery");
    assert_ne!(good, bad);
    std::fs::write(v1.join("status.proto"), bad).unwrap();
    let (ok, text) = buf_lint(dir.path());
    assert!(!ok, "buf lint accepted a bad proto:\n{text}");
    assert!(text.contains("StatusQuery"), "{text}");
}
