//! `mecgw-testbed up|down`: brings the four-namespace testbed up and leaves it, or removes it.
//! `cargo xtask testbed up|down` runs this.

use mecgw_testbed as testbed;

fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("up") => {
            testbed::up()?.keep();
            println!("testbed is up; remove it with `cargo xtask testbed down`");
        }
        Some("down") => {
            // Not from under a process that has the testbed up (a demo, a test run).
            let _lock = testbed::lock()?;
            testbed::delete_all(&testbed::NAMESPACES)?;
            println!("testbed is down");
        }
        other => anyhow::bail!("usage: mecgw-testbed up|down (got {other:?})"),
    }
    Ok(())
}
