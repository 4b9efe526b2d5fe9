//! `cargo xtask testbed up|down`: builds and runs `mecgw-testbed` (testbed/src/bin), which owns
//! the four-namespace testbed's topology (the `mecgw-testbed` crate).

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
            "mecgw-testbed",
            "--bin",
            "mecgw-testbed",
        ],
    )?;
    let tool = shell::target_dir().join("debug").join("mecgw-testbed");
    shell::run(&[&tool.to_string_lossy(), action])
}
