//! `cargo xtask package image`: the OCI image of `mecgw`, built with buildah `FROM scratch`
//! and saved as an OCI archive under `target/`; with `--test`, run with rootful podman on the
//! network-namespace testbed to show that it gets ready and breaks traffic out locally.
//!
//! The image holds the release binary, exactly the shared libraries `ldd` lists for it (glibc,
//! libm, libgcc_s and the loader), and the few /etc files a process reads (passwd, group,
//! nsswitch.conf, the CA bundle). Nothing else: no shell, no `ip`. So the userspace datapath,
//! which runs `ip`, is not available in it (docs/deploy.md); the XDP datapath is.
//!
//! podman and buildah read `target/image/containers.conf` (CONTAINERS_CONF), which this module
//! writes: runc as runtime (crun 1.8 refuses the cgroups v1 hybrid of our machines) and fixed
//! ulimits (root here cannot raise them). The machine's own containers.conf is left alone.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use mecgw_testbed as testbed;

use crate::shell;

/// The image's name (local storage) and tag: the workspace version.
pub const NAME: &str = "localhost/mecgw";
pub const TAG: &str = env!("CARGO_PKG_VERSION");

/// Debian packages the build and the test need, with why.
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("buildah", "builds the image FROM scratch"),
    (
        "podman",
        "runs the image in the test, saves the OCI archive",
    ),
    ("runc", "podman's runtime (crun refuses cgroups v1 hybrid)"),
    ("iptables", "podman's networking needs it present"),
    ("skopeo", "inspects the OCI archive"),
];

/// The containers.conf podman and buildah get here (see the module docs).
const CONTAINERS_CONF: &str = "# Written by cargo xtask package image (xtask/src/image.rs).\n\
     [containers]\n\
     default_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\n\
     [engine]\n\
     runtime = \"runc\"\n";

/// The capabilities the gateway needs, and all it gets in the test.
pub const CAPABILITIES: &str = "BPF,NET_ADMIN,PERFMON";

/// The test container's name.
const CONTAINER: &str = "mecgw-image-test";

/// Builds the image and saves it; with `test`, runs it on the testbed too.
pub fn run(test: bool) -> anyhow::Result<()> {
    install_tools()?;
    let bin = shell::build_gateway_and_tools_release()?;
    let work = shell::target_dir().join("image");
    let conf = write_containers_conf(&work)?;
    let archive = build(&bin.join("mecgw"), &work, &conf)?;
    println!("==> image: {NAME}:{TAG} saved as {}", archive.display());
    if test {
        test_on_testbed(&bin, &conf)?;
        println!("==> image: test passed");
    }
    Ok(())
}

fn install_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(p, _)| !crate::setup::debian_package_installed(p))
        .map(|(p, _)| *p)
        .collect();
    for (p, why) in DEBIAN_PACKAGES {
        let state = if missing.contains(p) { "missing" } else { "ok" };
        println!("    debian {p:<10} {state:<8} ({why})");
    }
    if missing.is_empty() {
        return Ok(());
    }
    shell::step("apt-get update", &["apt-get", "update"])?;
    let status = Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot start apt-get")?;
    ensure!(
        status.success(),
        "apt-get install {} failed ({status})",
        missing.join(" ")
    );
    Ok(())
}

fn write_containers_conf(work: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(work)?;
    let conf = work.join("containers.conf");
    std::fs::write(&conf, CONTAINERS_CONF)?;
    Ok(conf)
}

/// `tool ARGS` with our containers.conf; fails naming the command if it fails.
fn container_tool(conf: &Path, tool: &str, args: &[&str]) -> anyhow::Result<String> {
    println!("==> {tool} {}", args.join(" "));
    let out = Command::new(tool)
        .args(args)
        .env("CONTAINERS_CONF", conf)
        .output()
        .with_context(|| format!("cannot start {tool}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{tool} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The shared libraries `ldd` resolves for `binary`, as absolute paths (the vDSO has none).
fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot start ldd")?;
    ensure!(out.status.success(), "ldd {} failed", binary.display());
    let mut libs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux….so.2 (0x…)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    ensure!(
        !libs.is_empty(),
        "ldd lists no libraries for {}",
        binary.display()
    );
    Ok(libs)
}

/// Copies `from` to `root` + `at` (its absolute path inside the image), following symlinks.
fn copy_into(root: &Path, from: &Path, at: &Path) -> anyhow::Result<()> {
    let rel = at.strip_prefix("/").unwrap_or(at);
    let to = root.join(rel);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(from, &to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    Ok(())
}

/// Stages the root file system and builds the image; returns the OCI archive's path.
fn build(mecgw: &Path, work: &Path, conf: &Path) -> anyhow::Result<PathBuf> {
    let root = work.join("rootfs");
    if root.exists() {
        std::fs::remove_dir_all(&root)?;
    }
    copy_into(&root, mecgw, Path::new("/usr/bin/mecgw"))?;
    for lib in shared_libraries(mecgw)? {
        copy_into(&root, &lib, &lib)?;
    }
    let etc = root.join("etc");
    std::fs::create_dir_all(&etc)?;
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/:/sbin/nologin\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n",
    )?;
    std::fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n")?;
    // Names in egress URLs resolve through /etc/hosts and DNS (glibc's built-in resolver);
    // the runtime mounts hosts and resolv.conf.
    std::fs::write(etc.join("nsswitch.conf"), "hosts: files dns\n")?;
    let ca = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if ca.exists() {
        // Egress TLS without a configured CA uses the system roots.
        copy_into(&root, ca, ca)?;
    }
    for dir in ["etc/mecgw", "var/lib/mecgw", "sys/fs/bpf", "tmp"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    let containerfile = work.join("Containerfile");
    std::fs::write(
        &containerfile,
        format!(
            "# Written by cargo xtask package image (xtask/src/image.rs).\n\
             FROM scratch\n\
             COPY rootfs/ /\n\
             LABEL org.opencontainers.image.title=\"mecgw\" \\\n\
             \x20     org.opencontainers.image.description=\"5G MEC edge gateway (XDP fast path)\" \\\n\
             \x20     org.opencontainers.image.version=\"{TAG}\"\n\
             USER 0:0\n\
             ENTRYPOINT [\"/usr/bin/mecgw\"]\n\
             CMD [\"run\", \"--config\", \"/etc/mecgw/config/mecgw.toml\"]\n"
        ),
    )?;
    let image = format!("{NAME}:{TAG}");
    let work_s = work.to_string_lossy();
    let file_s = containerfile.to_string_lossy();
    container_tool(
        conf,
        "buildah",
        &[
            "bud",
            "--isolation",
            "chroot",
            "--layers=false",
            "-f",
            &file_s,
            "-t",
            &image,
            &work_s,
        ],
    )?;
    let archive = shell::target_dir().join(format!("mecgw-{TAG}.oci.tar"));
    if archive.exists() {
        std::fs::remove_file(&archive)?;
    }
    let archive_s = archive.to_string_lossy();
    container_tool(
        conf,
        "podman",
        &["save", "--format", "oci-archive", "-o", &archive_s, &image],
    )?;
    let inspect = container_tool(
        conf,
        "skopeo",
        &["inspect", &format!("oci-archive:{archive_s}")],
    )?;
    let digest = serde_json::from_str::<serde_json::Value>(&inspect)
        .ok()
        .and_then(|v| v["Digest"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "(unknown)".to_string());
    let size = std::fs::metadata(&archive)?.len();
    let mecgw_size = std::fs::metadata(mecgw)?.len();
    println!(
        "==> image: {image}: archive {:.1} MiB (mecgw binary {:.1} MiB), manifest digest {digest}",
        mib(size),
        mib(mecgw_size)
    );
    Ok(archive)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Removes the test container however the test ends.
struct ContainerGuard<'a> {
    conf: &'a Path,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "10", CONTAINER])
            .env("CONTAINERS_CONF", self.conf)
            .output();
    }
}

const LOCAL_EDGE_RULE: &str = "[[rules]]\nid = 10\npriority = 10\naction = \"LOCAL\"\n\
                               dst = [\"198.18.1.0/24\", \"2001:db8:0:1::/64\"]\n";

/// Runs the image as the gateway of the testbed's `mec` namespace (its network namespace is
/// the container's: "host network" inside a namespace), with bpffs, the three capabilities
/// and no others, and checks /readyz, the XDP attach and real local breakout from the gNB
/// simulator to the edge services.
fn test_on_testbed(bin: &Path, conf: &Path) -> anyhow::Result<()> {
    testbed::catch_interrupts();
    ensure_bpffs()?;
    let dir = tempfile_dir()?;
    let bed = testbed::up()?;
    testbed::write_gateway_config_for(&dir, 4, LOCAL_EDGE_RULE, testbed::DatapathChoice::Native)?;
    let mut services = testbed::Children::default();
    services.spawn(
        "edge services",
        testbed::netns_cmd(testbed::NS_EDGE, &bin.join("mecgw-edge"), &[]),
    )?;
    services.spawn(
        "core stand-in",
        testbed::netns_cmd(testbed::NS_CORE, &bin.join("mecgw-core"), &[]),
    )?;

    let _ = Command::new("podman")
        .args(["rm", "--force", CONTAINER])
        .env("CONTAINERS_CONF", conf)
        .output();
    let guard = ContainerGuard { conf };
    let dir_s = dir.to_string_lossy().into_owned();
    let volume = format!("{dir_s}:{dir_s}");
    let network = format!("ns:/run/netns/{}", testbed::NS_MEC);
    let image = format!("{NAME}:{TAG}");
    let config = format!("{dir_s}/mecgw.toml");
    // The testbed's gateway config pins under the tests' own bpffs (`[xdp] pin_dir`), which
    // the testbed's teardown cleans; a deployment mounts the host's /sys/fs/bpf only.
    let pins = testbed::pin_root()?;
    let pins = format!("{pins}:{pins}");
    container_tool(
        conf,
        "podman",
        &[
            "run",
            "--detach",
            "--name",
            CONTAINER,
            "--network",
            &network,
            "--cap-drop",
            "ALL",
            "--cap-add",
            CAPABILITIES,
            // The default seccomp profile answers bpf(2) with EPERM (TOOLCHAIN.md).
            "--security-opt",
            "seccomp=unconfined",
            "--read-only",
            "--volume",
            "/sys/fs/bpf:/sys/fs/bpf",
            "--volume",
            &pins,
            "--volume",
            &volume,
            &image,
            "run",
            "--config",
            &config,
        ],
    )?;
    let ready = wait_ready(conf);
    let logs = Command::new("podman")
        .args(["logs", CONTAINER])
        .env("CONTAINERS_CONF", conf)
        .output()
        .map(|o| String::from_utf8_lossy(&[o.stdout, o.stderr].concat()).into_owned())
        .unwrap_or_default();
    if let Err(e) = ready {
        bail!("{e:#}\nmecgw's log:\n{logs}");
    }
    println!("==> image: /readyz answered 200 inside {}", testbed::NS_MEC);
    ensure!(
        testbed::xdp_attached(&testbed::N3)?,
        "no XDP program on {} after the container became ready",
        testbed::N3.link
    );

    let edge6 = format!("[{}]", testbed::EDGE.v6);
    let probes = [
        format!("udp4=udp:{}:7", testbed::EDGE.v4),
        format!("udp6=udp:{edge6}:7"),
        format!("icmp4=icmp:{}", testbed::EDGE.v4),
        format!("tcp4=tcp:{}:8080", testbed::EDGE.v4),
    ];
    let mut args = vec!["--upf", testbed::UPF.v4, "--ues", "4", "--count", "5"];
    for p in &probes {
        args.extend(["--probe", p.as_str()]);
    }
    let report = testbed::gnbsim(bin, &args)?;
    for name in ["udp4", "udp6", "icmp4", "tcp4"] {
        let sent = report[name]["sent"].as_u64().unwrap_or(0);
        let ok = report[name]["ok"].as_u64().unwrap_or(0);
        println!("    {name}: {ok} of {sent} answered");
        ensure!(
            sent == 20 && ok == sent,
            "{name}: {ok} of {sent} answered: {report}"
        );
    }
    let metrics = testbed::ops_get("/metrics")?.context("/metrics did not answer")?;
    // UDP and ICMP: one uplink packet each; a TCP connection: SYN, data, FIN, last ACK.
    let uplink = 3 * 20 + 20 * 4;
    let counted = testbed::metric(&metrics, "mecgw_rule_packets_total", "rule=\"10\"");
    println!("    rule 10 (LOCAL) counted {counted} uplink packets (expected {uplink})");
    ensure!(
        counted == uplink,
        "rule 10 counted {counted}, expected {uplink}"
    );
    drop(guard);
    drop(services);
    drop(bed);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A fresh directory for the test's configuration (mounted at the same path).
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = shell::target_dir().join("image").join("test");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    // Without `..` in it: the container sees the directory at this path, and the config's
    // paths are made from it.
    Ok(std::fs::canonicalize(&dir)?)
}

/// Mounts bpffs on /sys/fs/bpf if it is not mounted (the container gets the host's).
fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        return Ok(());
    }
    shell::step("mount bpffs", &["mount", "-t", "bpf", "bpf", "/sys/fs/bpf"])
}

/// Waits until the gateway in the container answers /readyz, or the container exits.
fn wait_ready(conf: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        ensure!(!testbed::interrupted(), "interrupted");
        if testbed::ops_get("/readyz")?.is_some() {
            return Ok(());
        }
        let state = container_tool(
            conf,
            "podman",
            &["inspect", "--format", "{{.State.Status}}", CONTAINER],
        )?;
        ensure!(
            state.trim() == "running",
            "the container is {} before it was ready",
            state.trim()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    bail!("the gateway in the container was not ready within 60 s")
}
