//! `cargo xtask testbed up|down`: builds and runs the `mecgw-testbed` tool
//! (testbed/src/bin/mecgw-testbed.rs); the topology is the mecgw-testbed crate's.

use clap::ValueEnum;

use crate::shell;

/// What to do with the testbed.
#[derive(Clone, Copy, ValueEnum)]
pub enum Action {
    /// Bring it up and leave it (until `down`).
    Up,
    /// Remove its namespaces (waiting while another process has it up).
    Down,
}

pub fn command(action: Action) -> anyhow::Result<()> {
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
    let action = match action {
        Action::Up => "up",
        Action::Down => "down",
    };
    shell::run(&[&tool.to_string_lossy(), action])
}
