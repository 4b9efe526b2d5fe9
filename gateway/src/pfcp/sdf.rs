//! SDF filters' flow descriptions (IPFilterRule, RFC 6733 §4.3, as TS 29.212 §5.4.2 and
//! TS 29.244 §5.2.1A.2A use it): `permit out <proto> from <remote> [ports] to <ue> [ports]`.
//!
//! The "from" side is the remote (network) end and the "to" side the UE's, in both directions
//! ("assigned" is the UE's address). A filter becomes one or more [`FlowMatch`]es (a list of
//! ports is one match per port range). What mecgw cannot enforce (`deny`, `in`, negation,
//! options such as `frag`) is refused, never ignored.

use std::net::IpAddr;

use crate::datapath::tables::IpPrefix;

/// Most matches one flow description may expand to (its port lists multiplied out).
pub const MAX_MATCHES_PER_FILTER: usize = 8;

/// One way a packet matches a flow description.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMatch {
    /// IP protocol; `None`: any (`ip`).
    pub protocol: Option<u8>,
    /// The remote end's prefix; `None`: any.
    pub remote: Option<IpPrefix>,
    /// The remote end's port range.
    pub remote_ports: Option<(u16, u16)>,
    /// The UE side's port range.
    pub ue_ports: Option<(u16, u16)>,
    /// Only this family (`Some(true)`: IPv6), when an address says so.
    pub v6: Option<bool>,
}

/// A side of the filter: an address part and its ports.
#[derive(Debug)]
struct Side {
    addr: Addr,
    ports: Vec<(u16, u16)>,
}

#[derive(Debug)]
enum Addr {
    Any,
    Assigned,
    Prefix(IpPrefix),
}

fn protocol(word: &str) -> Result<Option<u8>, String> {
    match word.to_ascii_lowercase().as_str() {
        "ip" => Ok(None),
        "icmp" => Ok(Some(1)),
        "tcp" => Ok(Some(6)),
        "udp" => Ok(Some(17)),
        "icmpv6" | "ipv6-icmp" => Ok(Some(58)),
        "sctp" => Ok(Some(132)),
        n => n
            .parse::<u8>()
            .map(Some)
            .map_err(|_| format!("{word:?} is not a protocol (ip, a number, tcp, udp, …)")),
    }
}

fn ports(word: &str) -> Result<Vec<(u16, u16)>, String> {
    word.split(',')
        .map(|p| {
            let (lo, hi) = p.split_once('-').unwrap_or((p, p));
            let lo: u16 = lo
                .parse()
                .map_err(|_| format!("{p:?} is not a port or a port range"))?;
            let hi: u16 = hi
                .parse()
                .map_err(|_| format!("{p:?} is not a port or a port range"))?;
            if lo > hi {
                return Err(format!("port range {p:?} is empty"));
            }
            Ok((lo, hi))
        })
        .collect()
}

fn address(word: &str) -> Result<Addr, String> {
    if word.starts_with('!') {
        return Err(format!("{word:?}: negated addresses are not supported"));
    }
    match word {
        "any" => Ok(Addr::Any),
        "assigned" => Ok(Addr::Assigned),
        w => w.parse::<IpPrefix>().map(Addr::Prefix),
    }
}

/// Reads one side (`<addr> [ports]`) from `words`, stopping before `to` or the end.
fn side<'a>(
    words: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>,
) -> Result<Side, String> {
    let addr = address(words.next().ok_or("an address is missing")?)?;
    let ports = match words.peek() {
        Some(&w) if w != "to" && w.chars().next().is_some_and(|c| c.is_ascii_digit()) => {
            words.next();
            ports(w)?
        }
        _ => Vec::new(),
    };
    Ok(Side { addr, ports })
}

/// The matches of flow description `text` for a session whose UE has `ue` addresses.
pub fn parse(text: &str, ue: &[IpAddr]) -> Result<Vec<FlowMatch>, String> {
    let mut words = text.split_whitespace().peekable();
    match words.next() {
        Some("permit") => {}
        Some("deny") => return Err("\"deny\" filters are not supported; use a DROP FAR".into()),
        _ => return Err(format!("{text:?} does not start with \"permit\"")),
    }
    match words.next() {
        Some("out") => {}
        Some(other) => {
            return Err(format!(
                "direction {other:?}: only \"out\" is used in PFCP (TS 29.244 §5.2.1A.2A)"
            ));
        }
        None => return Err("the direction is missing".into()),
    }
    let protocol = protocol(words.next().ok_or("the protocol is missing")?)?;
    if words.next() != Some("from") {
        return Err("\"from\" is missing".into());
    }
    let remote = side(&mut words)?;
    if words.next() != Some("to") {
        return Err("\"to\" is missing".into());
    }
    let local = side(&mut words)?;
    if let Some(rest) = words.next() {
        return Err(format!("option {rest:?} is not supported"));
    }
    let remote_prefix = match remote.addr {
        Addr::Any => None,
        Addr::Prefix(p) => Some(p),
        Addr::Assigned => return Err("\"assigned\" names the UE: it belongs after \"to\"".into()),
    };
    // The UE side names the UE (or any address, or a prefix holding the UE's address).
    let ue_family = match local.addr {
        Addr::Any | Addr::Assigned => None,
        Addr::Prefix(p) => {
            if !ue.iter().any(|&a| p.contains(a)) {
                return Err(format!(
                    "the UE side {p} does not contain the session's UE address: the filter \
                     could never match"
                ));
            }
            Some(p.is_ipv6())
        }
    };
    let v6 = match (remote_prefix.map(|p| p.is_ipv6()), ue_family) {
        (Some(a), Some(b)) if a != b => {
            return Err("the two sides are of different address families".into());
        }
        (a, b) => a.or(b),
    };
    let remote_ports: Vec<Option<(u16, u16)>> = if remote.ports.is_empty() {
        vec![None]
    } else {
        remote.ports.into_iter().map(Some).collect()
    };
    let ue_ports: Vec<Option<(u16, u16)>> = if local.ports.is_empty() {
        vec![None]
    } else {
        local.ports.into_iter().map(Some).collect()
    };
    if remote_ports.len() * ue_ports.len() > MAX_MATCHES_PER_FILTER {
        return Err(format!(
            "{} port combinations: at most {MAX_MATCHES_PER_FILTER} per filter",
            remote_ports.len() * ue_ports.len()
        ));
    }
    let mut out = Vec::new();
    for &r in &remote_ports {
        for &u in &ue_ports {
            out.push(FlowMatch {
                protocol,
                remote: remote_prefix,
                remote_ports: r,
                ue_ports: u,
                v6,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ue() -> Vec<IpAddr> {
        vec![
            "10.45.0.7".parse().unwrap(),
            "2001:db8:1::7".parse().unwrap(),
        ]
    }

    #[test]
    fn the_ul_cl_filters_read_as_an_smf_writes_them() {
        let m = parse("permit out ip from 198.18.1.0/24 to assigned", &ue()).unwrap();
        assert_eq!(
            m,
            vec![FlowMatch {
                protocol: None,
                remote: Some("198.18.1.0/24".parse().unwrap()),
                remote_ports: None,
                ue_ports: None,
                v6: Some(false),
            }]
        );
        let m = parse(
            "permit out 17 from 2001:db8:e::/48 443,8000-8100 to 2001:db8:1::7 1024-65535",
            &ue(),
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].protocol, Some(17));
        assert_eq!(m[0].remote_ports, Some((443, 443)));
        assert_eq!(m[1].remote_ports, Some((8000, 8100)));
        assert_eq!(m[1].ue_ports, Some((1024, 65535)));
        assert_eq!(m[1].v6, Some(true));
        let any = parse("permit out ip from any to any", &ue()).unwrap();
        assert_eq!(any[0].remote, None);
        assert_eq!(any[0].v6, None);
    }

    #[test]
    fn what_cannot_be_enforced_is_refused_with_why() {
        for (text, want) in [
            ("deny out ip from any to any", "deny"),
            ("permit in ip from any to any", "direction \"in\""),
            ("permit out ip from !10.0.0.0/8 to assigned", "negated"),
            ("permit out ip from any to assigned frag", "option \"frag\""),
            ("permit out gre from any to assigned", "not a protocol"),
            ("permit out ip from 10.0.0.1/8 to assigned", "host bits"),
            (
                "permit out ip from any to 10.99.0.0/16",
                "could never match",
            ),
            (
                "permit out ip from 10.0.0.0/8 to 2001:db8:1::/48",
                "different address families",
            ),
            ("permit out ip from any 90-80 to assigned", "empty"),
            ("permit out ip from any", "\"to\" is missing"),
            ("allow", "does not start"),
        ] {
            let e = parse(text, &ue()).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
