//! A real `nats-server` with JetStream for the egress tests and benchmark: started on a free
//! loopback port with its own store directory, stopped and restarted on demand (the outage
//! tests), and killed when the guard drops. The daemon tests run it inside the daemon's
//! network namespace ([`NatsServer::start_in_netns`]), where its loopback is the daemon's.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A running (or stopped) `nats-server`; killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra_args: Vec<std::ffi::OsString>,
    /// The network namespace (from `ip netns add`) it runs in; `None`: the caller's.
    netns: Option<String>,
}

fn server_binary() -> anyhow::Result<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("nats-server"))
            .find(|p| p.exists())
    });
    let bin = from_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"));
    if !bin.exists() {
        bail!("nats-server is not installed: run `cargo xtask setup` (Debian package nats-server)");
    }
    Ok(bin)
}

fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl NatsServer {
    /// Starts a server with JetStream on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_args(Vec::new())
    }

    /// Starts a server with JetStream and extra command-line arguments (e.g. TLS settings).
    pub fn start_with_args(extra_args: Vec<std::ffi::OsString>) -> anyhow::Result<Self> {
        let mut server = Self::new(None, extra_args)?;
        server.restart()?;
        Ok(server)
    }

    /// Starts a server with JetStream on a free loopback port of network namespace `netns`.
    pub fn start_in_netns(netns: &str) -> anyhow::Result<Self> {
        let mut server = Self::new(Some(netns.to_string()), Vec::new())?;
        server.restart()?;
        Ok(server)
    }

    /// A server in `netns` that is not running yet: its URL is known, [`Self::restart`]
    /// starts it (an outage from the start).
    pub fn stopped_in_netns(netns: &str) -> anyhow::Result<Self> {
        Self::new(Some(netns.to_string()), Vec::new())
    }

    fn new(netns: Option<String>, extra_args: Vec<std::ffi::OsString>) -> anyhow::Result<Self> {
        let port = match &netns {
            Some(ns) => crate::in_netns(ns, free_port)??,
            None => free_port()?,
        };
        Ok(Self {
            child: None,
            port,
            dir: tempfile::tempdir().context("creating the JetStream store directory")?,
            extra_args,
            netns,
        })
    }

    fn listening(&self) -> bool {
        let connect = || TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok();
        match &self.netns {
            Some(ns) => crate::in_netns(ns, connect).unwrap_or(false),
            None => connect(),
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Every message in `stream`, read from inside the server's network namespace (blocking:
    /// call it from a test thread, not from a runtime).
    pub fn read(&self, stream: &str) -> anyhow::Result<Vec<StoredMessage>> {
        let read = || -> anyhow::Result<Vec<StoredMessage>> {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(read_stream(&self.url(), stream))
        };
        match &self.netns {
            Some(ns) => crate::in_netns(ns, read)?,
            None => read(),
        }
    }

    /// The JetStream store directory: every byte the server stored is under it.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log file.
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// Kills the server (SIGKILL: an outage, not a clean shutdown) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        let mut command = match &self.netns {
            // `ip netns exec` execs the server: the child's pid is the server's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(server_binary()?);
                c
            }
            None => Command::new(server_binary()?),
        };
        let child = command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store_dir())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting nats-server")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.listening() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                bail!(
                    "nats-server exited with {status}; log: {}",
                    std::fs::read_to_string(self.log_file()).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server did not listen on port {} within 20 s",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One message read back from a stream.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Stream sequence number.
    pub sequence: u64,
    /// Its `Nats-Msg-Id` header.
    pub msg_id: Option<String>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Every message in `stream`, in stream order; empty if the stream does not exist.
pub async fn read_stream(url: &str, stream: &str) -> anyhow::Result<Vec<StoredMessage>> {
    let client = async_nats::connect(url).await.context("connecting")?;
    let context = async_nats::jetstream::new(client);
    let mut stream = match context.get_stream(stream).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                async_nats::jetstream::context::GetStreamErrorKind::JetStream(ref j)
                    if j.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND
            ) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e).context("reading the stream"),
    };
    let state = stream.info().await.context("stream info")?.state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return Ok(out);
    }
    for seq in state.first_sequence..=state.last_sequence {
        let m = stream
            .get_raw_message(seq)
            .await
            .with_context(|| format!("message {seq}"))?;
        out.push(StoredMessage {
            sequence: m.sequence,
            msg_id: m
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str().to_string()),
            payload: m.payload.to_vec(),
        });
    }
    Ok(out)
}

/// True if any file under `dir` contains `needle`.
pub fn dir_contains(dir: &Path, needle: &[u8]) -> anyhow::Result<bool> {
    if !dir.exists() {
        return Ok(false);
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if dir_contains(&path, needle)? {
                return Ok(true);
            }
        } else {
            let bytes = std::fs::read(&path)?;
            if bytes.windows(needle.len()).any(|w| w == needle) {
                return Ok(true);
            }
        }
    }
    Ok(false)
}
