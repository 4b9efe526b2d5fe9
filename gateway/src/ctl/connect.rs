//! Where `mecgw ctl` connects and as whom: the connection options, the PEM files they name,
//! and the mTLS channel built from them.
//!
//! Owns reading and checking the client certificate, key and CA before any connection is
//! tried, so a missing or wrong file is a local error naming the file, never a vague TLS
//! failure. Never retries: a script decides what to do with exit code 2.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use mecgw::api::PemHolds;

use super::exit::CtlError;

/// The API's conventional listen port (the `[api]` example in examples/mecgw.toml), on
/// loopback: where the daemon on this host answers.
pub const DEFAULT_ADDR: &str = "https://127.0.0.1:50051";

/// Largest PEM file read (certificate chains and keys are a few KiB).
const MAX_PEM_BYTES: u64 = 1024 * 1024;

/// How to reach the API and whom to present.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The API's address: https://HOST:PORT (HOST:PORT means https).
    #[arg(long, global = true, env = "MECGW_CTL_ADDR", default_value = DEFAULT_ADDR, value_name = "URL")]
    pub addr: String,
    /// Client certificate (PEM) whose SAN names a configured app, normally the operator.
    #[arg(long, global = true, env = "MECGW_CTL_CERT", value_name = "PEM")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "MECGW_CTL_KEY", value_name = "PEM")]
    pub key: Option<PathBuf>,
    /// The CA (PEM) that signed the server's certificate.
    #[arg(long, global = true, env = "MECGW_CTL_CA", value_name = "PEM")]
    pub ca: Option<PathBuf>,
    /// The name to verify the server's certificate against, when its SAN is not the host
    /// in --addr (also sent as TLS SNI).
    #[arg(
        long,
        global = true,
        env = "MECGW_CTL_SERVER_NAME",
        value_name = "NAME"
    )]
    pub server_name: Option<String>,
    /// Give up connecting, and on each call, after this many seconds.
    #[arg(long, global = true, default_value_t = 10, value_name = "SECONDS")]
    pub timeout: u64,
}

/// A connected channel and the address it goes to (for messages).
pub struct Connected {
    /// The mTLS channel.
    pub channel: Channel,
    /// The address as the user gave it, normalised to a URL.
    pub addr: String,
}

impl Connection {
    /// Reads and checks the files, then connects. Local problems are [`CtlError::Local`];
    /// failing to connect (including the TLS handshake) is [`CtlError::Connect`].
    pub async fn connect(&self) -> Result<Connected, CtlError> {
        let addr = normalise_addr(&self.addr)?;
        let cert = read_pem(
            "--cert (MECGW_CTL_CERT)",
            self.cert.as_deref(),
            PemHolds::Certificate,
        )?;
        let key = read_pem(
            "--key (MECGW_CTL_KEY)",
            self.key.as_deref(),
            PemHolds::PrivateKey,
        )?;
        let ca = read_pem(
            "--ca (MECGW_CTL_CA)",
            self.ca.as_deref(),
            PemHolds::Certificate,
        )?;
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .identity(Identity::from_pem(cert, key));
        if let Some(name) = &self.server_name {
            tls = tls.domain_name(name.clone());
        }
        let timeout = Duration::from_secs(self.timeout.max(1));
        let endpoint = Endpoint::from_shared(addr.clone())
            .map_err(|e| CtlError::Local(format!("--addr {addr}: not a valid URL: {e}")))?
            .tls_config(tls)
            .map_err(|e| {
                CtlError::Local(format!(
                    "TLS configuration from --cert, --key and --ca: {}",
                    source_text(&e)
                ))
            })?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CtlError::connect(&addr, &e))?;
        Ok(Connected { channel, addr })
    }
}

/// `HOST:PORT` → `https://HOST:PORT`; refuses plaintext, which the API serves only on test
/// benches and then without client certificates.
fn normalise_addr(addr: &str) -> Result<String, CtlError> {
    if addr.starts_with("https://") {
        Ok(addr.to_string())
    } else if addr.starts_with("http://") {
        Err(CtlError::Local(format!(
            "--addr {addr}: mecgw ctl speaks only mTLS (https://); the API's insecure mode is \
             for test benches"
        )))
    } else if addr.contains("://") {
        Err(CtlError::Local(format!(
            "--addr {addr}: expected https://HOST:PORT"
        )))
    } else {
        Ok(format!("https://{addr}"))
    }
}

/// The text of `e` and its causes (tonic's transport error says only "transport error").
fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        parts.push(s.to_string());
        next = s.source();
    }
    parts.join(": ")
}

/// Reads the PEM file `path` (named by `option` in messages) and checks that it holds what
/// it must: rustls would otherwise fail later with a message that names no file.
fn read_pem(option: &str, path: Option<&Path>, holds: PemHolds) -> Result<Vec<u8>, CtlError> {
    let path = path.ok_or_else(|| {
        CtlError::Local(format!(
            "{option} is required: the API accepts only mTLS clients"
        ))
    })?;
    let shown = path.display();
    let bytes = mecgw_policy::files::read_limited(path, MAX_PEM_BYTES)
        .map_err(|e| CtlError::Local(format!("{option}: cannot read {e}")))?;
    mecgw::api::check_pem(&bytes, holds)
        .map_err(|why| CtlError::Local(format!("{option} {shown}: {why}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn addresses_default_to_https_and_refuse_plaintext() {
        assert_eq!(
            normalise_addr("10.0.0.1:50051").unwrap(),
            "https://10.0.0.1:50051"
        );
        assert_eq!(
            normalise_addr("https://gw.example:443").unwrap(),
            "https://gw.example:443"
        );
        assert!(normalise_addr("http://127.0.0.1:50051").is_err());
        assert!(normalise_addr("unix:///run/x").is_err());
    }

    #[test]
    fn files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = read_pem("--cert", Some(&missing), PemHolds::Certificate).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        assert!(e.to_string().contains("cannot read"), "{e}");

        let not_pem = dir.path().join("key.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let e = read_pem("--key", Some(&not_pem), PemHolds::PrivateKey).unwrap_err();
        assert!(e.to_string().contains("key.pem"), "{e}");
        assert!(e.to_string().contains("no PEM private key"), "{e}");

        let e = read_pem("--ca", None, PemHolds::Certificate).unwrap_err();
        assert!(e.to_string().contains("--ca is required"), "{e}");
    }
}
