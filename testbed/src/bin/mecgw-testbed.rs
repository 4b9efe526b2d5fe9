//! `mecgw-testbed up|down`: brings the four-namespace testbed up and leaves it, or removes it.
//! `cargo xtask testbed up|down` runs this.

use clap::{Parser, ValueEnum};
use mecgw_testbed as testbed;

#[derive(Parser)]
#[command(about = "bring the mecgw testbed up (and leave it) or remove it")]
struct Args {
    #[arg(value_enum)]
    action: Action,
}

#[derive(Clone, Copy, ValueEnum)]
enum Action {
    /// Bring it up and leave it (until `down`).
    Up,
    /// Remove its namespaces (waiting while another process has it up).
    Down,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().action {
        Action::Up => {
            testbed::up()?.keep();
            println!("testbed is up; remove it with `cargo xtask testbed down`");
        }
        Action::Down => {
            // Not from under a process that has the testbed up (a demo, a test run).
            let _lock = testbed::lock()?;
            testbed::delete_all(&testbed::NAMESPACES)?;
            println!("testbed is down");
        }
    }
    Ok(())
}
