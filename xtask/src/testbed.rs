//! `cargo xtask testbed up|down`: builds and runs `mecgw-testbed` (tests/src/bin), which owns
//! the four-namespace testbed's topology (`mecgw_tests::testbed`).

use crate::shell;

pub fn command(action: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(action, "up" | "down"),
        "unknown testbed action {action:?}: expected up or down"
    );
    shell::step(
        "build the testbed tool",
        &[
            "cargo",
            "build",
            "--package",
            "mecgw-tests",
            "--bin",
            "mecgw-testbed",
        ],
    )?;
    let tool = shell::target_dir().join("debug").join("mecgw-testbed");
    shell::run(&[&tool.to_string_lossy(), action])
}
