//! `cargo xtask demo`: the README's main job. Setup has run; this builds mecgw (with its eBPF
//! object) and the testbed tools in release mode and runs `mecgw-demo` (testbed/src/bin), which
//! brings the testbed up, runs the gateway, drives traffic, prints the summary and always
//! tears the testbed down.

use crate::shell;

pub fn run() -> anyhow::Result<()> {
    let bin = shell::build_gateway_and_tools_release()?;
    let demo = bin.join("mecgw-demo");
    shell::step("demo", &[&demo.to_string_lossy(), &bin.to_string_lossy()])
}
