//! Neighbour resolution for re-tunnel targets.
//!
//! The fast path re-tunnels a G-PDU (a FAR with Outer Header Creation) by asking the kernel's
//! FIB for the next hop's MAC; it cannot resolve a missing neighbour entry itself, and drops
//! the packet as `no_neighbour`. Nothing else on the host may ever send to a PSA, so the
//! endpoint does: a GTP-U Echo Request (TS 29.281 §7.2.1, the path management message GTP-U
//! peers expect) to every target when a session starts using it and again periodically, so
//! the kernel resolves the neighbour and keeps it fresh. Echo Responses come back to an
//! ephemeral port and are dropped by the kernel; they are not needed.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use tracing::{debug, warn};

/// GTP-U's UDP port.
const GTPU_PORT: u16 = 2152;

/// Most targets remembered (older ones are forgotten and probed again when next seen).
const MAX_REMEMBERED: usize = 65_536;

/// A GTP-U Echo Request: version 1, PT 1, S set, type 1, length 4, TEID 0, then the
/// sequence number, N-PDU number 0 and no extension header.
pub fn echo_request(sequence: u16) -> [u8; 12] {
    let s = sequence.to_be_bytes();
    [0x32, 0x01, 0x00, 0x04, 0, 0, 0, 0, s[0], s[1], 0, 0]
}

/// Sends the probes; remembers when each target was last probed.
pub struct Prober {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    last: HashMap<IpAddr, Instant>,
    sequence: u16,
    sent: u64,
}

fn socket(addr: SocketAddr) -> Option<UdpSocket> {
    let s = match UdpSocket::bind(addr) {
        Ok(s) => s,
        Err(e) => {
            warn!(%addr, error = %e, "PFCP: cannot open the socket that probes re-tunnel targets");
            return None;
        }
    };
    if let Err(e) = s.set_nonblocking(true) {
        warn!(error = %e, "PFCP: cannot make the probe socket non-blocking");
        return None;
    }
    Some(s)
}

impl Default for Prober {
    fn default() -> Self {
        Prober::new()
    }
}

impl Prober {
    pub fn new() -> Prober {
        Prober {
            v4: socket(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
            v6: socket(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0))),
            last: HashMap::new(),
            sequence: 0,
            sent: 0,
        }
    }

    /// Probes each of `targets` not probed within `every`. Returns how many were sent.
    pub fn probe(&mut self, targets: impl IntoIterator<Item = IpAddr>, every: Duration) -> usize {
        let now = Instant::now();
        let mut n = 0;
        for target in targets {
            if self
                .last
                .get(&target)
                .is_some_and(|t| now.duration_since(*t) < every)
            {
                continue;
            }
            if self.last.len() >= MAX_REMEMBERED {
                self.last.clear();
            }
            self.last.insert(target, now);
            self.sequence = self.sequence.wrapping_add(1);
            let socket = match target {
                IpAddr::V4(_) => self.v4.as_ref(),
                IpAddr::V6(_) => self.v6.as_ref(),
            };
            let Some(socket) = socket else {
                continue;
            };
            // Unreachable targets fail here (no route): the fast path says so as no_route.
            match socket.send_to(
                &echo_request(self.sequence),
                SocketAddr::new(target, GTPU_PORT),
            ) {
                Ok(_) => {
                    n += 1;
                    self.sent += 1;
                }
                Err(e) => debug!(%target, error = %e, "PFCP: probing a re-tunnel target failed"),
            }
        }
        n
    }

    /// Probes sent since start.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_echo_request_is_what_ts_29_281_lays_out() {
        let m = echo_request(0x1234);
        assert_eq!(m[0] >> 5, 1, "version 1");
        assert_eq!(m[0] & 0x10, 0x10, "PT: GTP");
        assert_eq!(m[0] & 0x02, 0x02, "S: sequence number present");
        assert_eq!(m[1], 1, "Echo Request");
        assert_eq!(
            u16::from_be_bytes([m[2], m[3]]),
            4,
            "4 octets after the TEID"
        );
        assert_eq!(&m[8..10], &[0x12, 0x34]);
    }

    #[test]
    fn a_target_is_probed_again_only_after_the_period() {
        let mut p = Prober::new();
        let target = IpAddr::from([127, 0, 0, 1]);
        // The probe goes to port 2152; what matters here is the bookkeeping.
        assert_eq!(p.probe([target], Duration::from_secs(3600)), 1);
        assert_eq!(p.probe([target], Duration::from_secs(3600)), 0);
        assert_eq!(p.probe([target], Duration::ZERO), 1);
        assert_eq!(p.sent(), 2);
    }
}
