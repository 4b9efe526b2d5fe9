//! Helpers for the egress tests, crash driver and benchmark: items shaped like the policy
//! engine's output, egress configurations, and reading batches back from a sink.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mecgw::records::egress::forwarder::BackoffConfig;
use mecgw::records::egress::item::EgressItem;
use mecgw::records::egress::sink::SinkConfig;
use mecgw::records::egress::sink::nats::NatsSinkConfig;
use mecgw::records::egress::spool::{SpoolLimits, WhenFull};
use mecgw::records::egress::{DestinationConfig, EgressConfig};
use serde_json::{Value, json};

/// The policy hash the test items carry.
pub const POLICY_HASH: &str =
    "sha256:0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A release item as the policy engine emits it, tagged with `n` (and `extra` fields).
pub fn release(destination: &str, name: &str, n: u64, extra: Value) -> EgressItem {
    let mut v = json!({
        "release": name,
        "kind": "flow",
        "destination": destination,
        "policy": POLICY_HASH,
        "epsilon": 0.125,
        "window": {"start": "2026-11-26T10:00:00Z", "end": "2026-11-26T10:05:00Z"},
        "group": {"cell": "262-01-1234"},
        "count": 42,
        "n": n,
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
        o.extend(e);
    }
    // The object above always satisfies the item contract.
    #[allow(clippy::expect_used)]
    EgressItem::from_json(v).expect("a well-formed release item")
}

/// A transformed-record item of kind `kind`.
pub fn record(destination: &str, kind: &str, n: u64, extra: Value) -> EgressItem {
    let mut v = json!({
        "kind": kind,
        "destination": destination,
        "policy": POLICY_HASH,
        "ue_prefix": "10.45.0.0/24",
        "n": n,
    });
    if let (Value::Object(o), Value::Object(e)) = (&mut v, extra) {
        o.extend(e);
    }
    #[allow(clippy::expect_used)]
    EgressItem::from_json(v).expect("a well-formed record item")
}

/// Backoff fast enough for tests.
pub fn test_backoff() -> BackoffConfig {
    BackoffConfig {
        initial_ms: 50,
        max_ms: 500,
        multiplier: 2.0,
        jitter: 0.5,
    }
}

/// A NATS sink config with short timeouts for tests.
pub fn nats_sink(url: &str) -> SinkConfig {
    let mut c = NatsSinkConfig::new(url);
    c.ack_timeout_ms = 1_000;
    c.connect_timeout_ms = 500;
    SinkConfig::Nats(c)
}

/// An egress config under `dir` (spool in `dir/spool`, audit in `dir/audit`).
pub fn config(
    dir: &Path,
    destinations: Vec<(&str, &str, SinkConfig)>,
    limits: SpoolLimits,
    when_full: WhenFull,
) -> EgressConfig {
    EgressConfig {
        spool_dir: dir.join("spool"),
        audit_dir: dir.join("audit"),
        state_dir: None,
        limits,
        when_full,
        backoff: test_backoff(),
        read_ahead: 64,
        destinations: destinations
            .into_iter()
            .map(|(name, region, sink)| DestinationConfig {
                name: name.into(),
                region: region.into(),
                sink,
            })
            .collect(),
    }
}

/// Waits until `done()` or fails after `timeout` with `what`.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// A batch as a sink received it.
#[derive(Debug, Clone)]
pub struct ReceivedBatch {
    /// Its `batch_id` field.
    pub batch_id: String,
    /// Its `items`.
    pub items: Vec<Value>,
}

/// Parses a batch payload.
pub fn parse_batch(payload: &[u8]) -> anyhow::Result<ReceivedBatch> {
    let v: Value = serde_json::from_slice(payload).context("batch payload is not JSON")?;
    let batch_id = v["batch_id"]
        .as_str()
        .context("batch without batch_id")?
        .to_string();
    let items = v["items"]
        .as_array()
        .context("batch without items")?
        .clone();
    Ok(ReceivedBatch { batch_id, items })
}

/// A small tmpfs mounted on a fresh temporary directory (the disk-full tests; needs root),
/// unmounted on drop, also when the test fails.
pub struct Tmpfs {
    dir: tempfile::TempDir,
    mounted: bool,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_kib` KiB.
    pub fn mount(size_kib: u64) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating the mount point")?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_kib}k"), "tmpfs"])
            .arg(dir.path())
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mount -t tmpfs failed ({status}): the disk-full tests need root");
        }
        Ok(Self { dir, mounted: true })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system with `name` until a write fails for lack of space; returns the
    /// bytes written. The file stays until [`Tmpfs::free`].
    pub fn fill(&self, name: &str) -> anyhow::Result<u64> {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.path().join(name))?;
        let chunk = vec![0xa5u8; 4096];
        let mut written = 0u64;
        loop {
            match f.write(&chunk) {
                Ok(0) => return Ok(written),
                Ok(n) => written += n as u64,
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return Ok(written),
                Err(e) => return Err(e).context("filling the tmpfs"),
            }
        }
    }

    /// Removes the filler file `name`: space returns.
    pub fn free(&self, name: &str) -> anyhow::Result<()> {
        std::fs::remove_file(self.path().join(name)).context("removing the filler")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            // Lazy: a process still holding a file there (a daemon being killed) must not keep
            // the mount alive after the test.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
            self.mounted = false;
        }
    }
}

/// Flips one bit in the middle of every occurrence of `needle` in `file`, as damage on disk
/// would (a spool file's copy-on-write pages may hold older copies besides the live one);
/// returns how many it flipped.
pub fn flip_all(file: &Path, needle: &[u8]) -> anyhow::Result<usize> {
    let mut bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let at: Vec<usize> = (0..bytes.len().saturating_sub(needle.len()))
        .filter(|&i| bytes[i..].starts_with(needle))
        .collect();
    if at.is_empty() {
        bail!(
            "{} does not contain {:?}",
            file.display(),
            String::from_utf8_lossy(needle)
        );
    }
    for &i in &at {
        bytes[i + needle.len() / 2] ^= 0x01;
    }
    std::fs::write(file, bytes).with_context(|| format!("writing {}", file.display()))?;
    Ok(at.len())
}

/// The permissions most egress tests use: destination `eu`, in `EU-DE`, may receive release
/// `cells`.
pub fn eu_cells() -> std::sync::Arc<mecgw::records::egress::jurisdiction::Permissions> {
    use mecgw::records::egress::jurisdiction::{PermissionTable, Permissions};
    std::sync::Arc::new(Permissions::new(std::sync::Arc::new(
        PermissionTable::new().allow("eu", "EU-DE", &["cells"], &[]),
    )))
}

/// Every entry of the audit log in `audit_dir`, in order.
pub fn audit_entries(
    audit_dir: &Path,
) -> anyhow::Result<Vec<mecgw::records::egress::audit::AuditEntry>> {
    let path = audit_dir.join(mecgw::records::egress::audit::LOG_FILE);
    std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .lines()
        .map(|l| {
            let body = l.split_once(' ').map_or(l, |(_, body)| body);
            serde_json::from_str(body).with_context(|| format!("an entry of {}", path.display()))
        })
        .collect()
}

/// `mecgw audit verify` on `audit_dir`, as an operator runs it: its exit code, and its
/// stdout followed by its stderr.
pub fn verify_cli(audit_dir: &Path) -> anyhow::Result<(i32, String)> {
    let out = std::process::Command::new(crate::mecgw_bin()?)
        .args(["audit", "verify"])
        .arg(audit_dir)
        .output()
        .context("running mecgw audit verify")?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    ))
}
