//! GTP-U signalling that the fast path passes up to the kernel: this socket answers Echo
//! Requests (TS 29.281 §7.2) with an Echo Response carrying a Recovery IE, and counts End
//! Markers, Error Indications and everything else it receives. It never forwards user data.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use anyhow::Context as _;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};

use super::Gateway;
use crate::log_limit::LogBudget;

const ECHO_REQUEST: u8 = 1;
const ECHO_RESPONSE: u8 = 2;
const ERROR_INDICATION: u8 = 26;
const END_MARKER: u8 = 254;
/// Recovery information element type (TS 29.281 §8.2).
const IE_RECOVERY: u8 = 14;

/// What the signalling socket has seen.
#[derive(Debug, Default)]
pub struct GtpuCounters {
    pub echo_requests: AtomicU64,
    pub echo_responses_sent: AtomicU64,
    pub end_markers: AtomicU64,
    pub error_indications: AtomicU64,
    pub other: AtomicU64,
    pub malformed: AtomicU64,
}

/// What to do with one datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Signal {
    /// Send this Echo Response back.
    Answer(Vec<u8>),
    EndMarker,
    ErrorIndication,
    Other(u8),
    Malformed,
}

/// Classifies a datagram and builds the Echo Response for an Echo Request.
pub fn handle(datagram: &[u8], restart_counter: u8) -> Signal {
    let [flags, msg_type, l0, l1, ..] = *datagram else {
        return Signal::Malformed;
    };
    if datagram.len() < 8 || flags >> 5 != 1 || flags & 0x10 == 0 {
        return Signal::Malformed;
    }
    let length = usize::from(u16::from_be_bytes([l0, l1]));
    if 8 + length != datagram.len() {
        return Signal::Malformed;
    }
    match msg_type {
        ECHO_REQUEST => {
            // An Echo Request has S=1 and a sequence number, which the response echoes.
            let seq = if flags & 0x02 != 0 && datagram.len() >= 12 {
                [datagram[8], datagram[9]]
            } else {
                [0, 0]
            };
            let mut r = vec![0x32, ECHO_RESPONSE, 0, 6, 0, 0, 0, 0];
            r.extend_from_slice(&[seq[0], seq[1], 0, 0, IE_RECOVERY, restart_counter]);
            Signal::Answer(r)
        }
        END_MARKER => Signal::EndMarker,
        ERROR_INDICATION => Signal::ErrorIndication,
        other => Signal::Other(other),
    }
}

/// The file in the state directory that keeps the Recovery restart counter.
pub const RESTART_COUNTER_FILE: &str = "gtpu-restart-counter";
/// Its name in the state marker.
const MARKER_COMPONENT: &str = "gtpu-restart-counter";

/// The Recovery restart counter: one more than at the previous start, kept in the state
/// directory so a peer can tell that we restarted.
///
/// Fails closed: a counter file that is not a number from 0 to 255 (garbage, a damaged
/// file), or a file that the state marker says existed but that is now missing or empty, is
/// an error naming the file. Starting at 1 instead could repeat a value a peer saw before,
/// and a Recovery counter that goes backwards tells peers we did not restart when we did.
pub fn next_restart_counter(state_dir: &Path) -> anyhow::Result<u8> {
    use crate::records::egress::state::{Presence, StateMarker, has_content};

    let path = state_dir.join(RESTART_COUNTER_FILE);
    let marker = StateMarker::open(state_dir)?;
    let present = has_content(&path).with_context(|| format!("reading {}", path.display()))?;
    let previous = match marker.presence(MARKER_COMPONENT, present) {
        Presence::Fresh => 0,
        Presence::Vanished => anyhow::bail!(
            "{} is missing or empty, but {} records that this state directory had one: the \
             GTP-U restart counter would go back to 1, which peers take for no restart. Write \
             the last counter you know (from the peers' logs, or 0 if none) into the file and \
             start again",
            path.display(),
            marker.path().display()
        ),
        Presence::Present => {
            // A counter is at most three digits and a newline: read no more than that.
            let mut text = String::new();
            std::io::Read::read_to_string(
                &mut std::io::Read::take(
                    mecgw_policy::files::open_regular(&path)
                        .with_context(|| format!("reading {}", path.display()))?,
                    16,
                ),
                &mut text,
            )
            .with_context(|| format!("reading {}", path.display()))?;
            text.trim().parse::<u8>().map_err(|_| {
                anyhow::anyhow!(
                    "{} holds {:?}, not a restart counter (a number from 0 to 255): the file was \
                     damaged or edited. Write the last counter you know (from the peers' logs) \
                     into it and start again; mecgw does not reset it, since a Recovery counter \
                     that goes backwards confuses peers",
                    path.display(),
                    text.trim_end()
                )
            })?
        }
    };
    let next = previous.wrapping_add(1);
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, format!("{next}\n").as_bytes())?;
        // Durable before it replaces the old value: a power loss must not leave an empty file.
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(state_dir)?.sync_all()
    };
    write().with_context(|| format!("writing {}", path.display()))?;
    marker.record(MARKER_COMPONENT)?;
    Ok(next)
}

pub async fn serve(
    gw: Arc<Gateway>,
    sock: UdpSocket,
    restart_counter: u8,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let listen = sock
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    info!(listen, restart_counter, "answering GTP-U echo");
    let c = &gw.metrics.gtpu;
    let mut buf = vec![0u8; 2048];
    // Each of these lines can be caused by anyone who can send a datagram to the port.
    let mut receive_log = LogBudget::new("GTP-U receive errors", 10);
    let mut send_log = LogBudget::new("GTP-U echo responses not sent", 10);
    let mut indication_log = LogBudget::new("GTP-U error indications", 20);
    loop {
        let (n, from) = tokio::select! {
            _ = stop.changed() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    if receive_log.allow() {
                        warn!(error = %e, "GTP-U receive");
                    }
                    continue;
                }
            },
        };
        match handle(&buf[..n], restart_counter) {
            Signal::Answer(reply) => {
                c.echo_requests.fetch_add(1, Ordering::Relaxed);
                match sock.send_to(&reply, from).await {
                    Ok(_) => {
                        c.echo_responses_sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if send_log.allow() {
                            warn!(%from, error = %e, "sending echo response");
                        }
                    }
                }
            }
            Signal::EndMarker => {
                c.end_markers.fetch_add(1, Ordering::Relaxed);
            }
            Signal::ErrorIndication => {
                c.error_indications.fetch_add(1, Ordering::Relaxed);
                if indication_log.allow() {
                    warn!(%from, "GTP-U error indication");
                }
            }
            Signal::Other(t) => {
                c.other.fetch_add(1, Ordering::Relaxed);
                debug!(%from, msg_type = t, "GTP-U message ignored");
            }
            Signal::Malformed => {
                c.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_gets_a_response_with_its_sequence_and_a_recovery_ie() {
        // flags 0x32 (v1, PT, S), type 1, length 4, TEID 0, seq 0x1234, N-PDU 0, next 0.
        let req = [0x32, 1, 0, 4, 0, 0, 0, 0, 0x12, 0x34, 0, 0];
        let Signal::Answer(r) = handle(&req, 7) else {
            panic!("no answer");
        };
        assert_eq!(r, [0x32, 2, 0, 6, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 14, 7]);
    }

    #[test]
    fn end_markers_error_indications_and_garbage_are_told_apart() {
        assert_eq!(handle(&[0x30, 254, 0, 0, 0, 0, 0, 1], 0), Signal::EndMarker);
        assert_eq!(
            handle(&[0x30, 26, 0, 0, 0, 0, 0, 0], 0),
            Signal::ErrorIndication
        );
        assert_eq!(handle(&[0x30, 26, 0, 9, 0, 0, 0, 0], 0), Signal::Malformed);
        assert_eq!(handle(&[0x50, 1, 0, 0, 0, 0, 0, 0], 0), Signal::Malformed);
        assert_eq!(handle(&[0x30], 0), Signal::Malformed);
    }

    #[test]
    fn the_restart_counter_grows_across_starts() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_restart_counter(dir.path()).unwrap(), 1);
        assert_eq!(next_restart_counter(dir.path()).unwrap(), 2);
        std::fs::write(dir.path().join(RESTART_COUNTER_FILE), "255\n").unwrap();
        assert_eq!(next_restart_counter(dir.path()).unwrap(), 0);
    }

    #[test]
    fn a_damaged_or_vanished_restart_counter_is_refused_not_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RESTART_COUNTER_FILE);
        assert_eq!(next_restart_counter(dir.path()).unwrap(), 1);
        for garbage in ["garbage\n", "256\n", "-1\n", "\u{0}\u{0}7"] {
            std::fs::write(&path, garbage).unwrap();
            let err = next_restart_counter(dir.path()).unwrap_err().to_string();
            assert!(
                err.contains(RESTART_COUNTER_FILE) && err.contains("not a restart counter"),
                "{err}"
            );
            // Left as found.
            assert_eq!(std::fs::read_to_string(&path).unwrap(), garbage);
        }
        for vanish in [true, false] {
            if vanish {
                std::fs::remove_file(&path).unwrap();
            } else {
                std::fs::write(&path, "").unwrap();
            }
            let err = next_restart_counter(dir.path()).unwrap_err().to_string();
            assert!(err.contains("missing or empty"), "{err}");
        }
        std::fs::write(&path, "41\n").unwrap();
        assert_eq!(next_restart_counter(dir.path()).unwrap(), 42);
    }
}
