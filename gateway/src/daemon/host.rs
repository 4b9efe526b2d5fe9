//! The host settings the fast path relies on but does not own: the kernel's forwarding and
//! reverse-path filtering, which decide whether what the programs hand the kernel (a PFCP
//! re-tunnel's FIB lookup, a packet whose next hop from the FIB is not resolved yet) goes
//! anywhere. The daemon does not change them (they are the host's, shared with everything
//! else on it); it checks them at start and at each reload and says which to set, rather
//! than leave the operator to find `no_route` drops or packets the kernel silently discards.

use std::net::Ipv4Addr;

use tracing::warn;

use crate::datapath::tables::{NextHop, Tables};

/// Reads a sysctl by its `/proc/sys` path relative name (`net/ipv4/ip_forward`); `None` if
/// it cannot be read.
pub(super) type Sysctl<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real `/proc/sys`.
pub(super) fn proc_sys(name: &str) -> Option<String> {
    std::fs::read_to_string(format!("/proc/sys/{name}"))
        .ok()
        .map(|v| v.trim().to_string())
}

/// What the fast path needs of the host for `tables` (and PFCP re-tunnels when `pfcp`), on
/// interfaces `n3` and `local` (names): one sentence per setting that is not so, naming it
/// and the value it needs. A setting that cannot be read is not reported.
pub(super) fn problems(
    tables: &Tables,
    pfcp: bool,
    n3: &str,
    local: &str,
    read: Sysctl<'_>,
) -> Vec<String> {
    let value = |name: &str| read(name).and_then(|v| v.parse::<u32>().ok());
    let is = |name: &str, want: u32| value(name).is_none_or(|v| v == want);
    let v4 = tables.n3.ipv4.is_some();
    let v6 = tables.n3.ipv6.is_some();
    let local_fib = tables.local.next_hop == NextHop::Fib;
    let n3_fib = tables.n3.next_hop == NextHop::Fib;
    let mut out: Vec<String> = Vec::new();
    // Each setting is said once, with the first thing that needs it.
    let mut forwarding = |iface: &str, why: &str| {
        let v4_off = format!("IPv4 forwarding is off on {iface}");
        if !is(&format!("net/ipv4/conf/{iface}/forwarding"), 1)
            && !out.iter().any(|l| l.starts_with(&v4_off))
        {
            out.push(format!(
                "{v4_off}: {why}; set net.ipv4.conf.{iface}.forwarding=1"
            ));
        }
        let v6_off = "IPv6 forwarding is off";
        if v6
            && !is("net/ipv6/conf/all/forwarding", 1)
            && !out.iter().any(|l| l.starts_with(v6_off))
        {
            out.push(format!(
                "{v6_off}: {why} (IPv6); set net.ipv6.conf.all.forwarding=1"
            ));
        }
    };
    if pfcp && (v4 || v6) {
        forwarding(
            n3,
            "PFCP re-tunnels (to a PSA, or back to a gNB) will be dropped as no_route",
        );
    }
    if n3_fib {
        forwarding(
            n3,
            "with [n3] next_hop = \"fib\" every encapsulated packet will be dropped as no_route",
        );
    }
    if local_fib {
        forwarding(
            local,
            "with [local] next_hop = \"fib\" every LOCAL packet will be dropped as no_route",
        );
    }
    // The effective IPv4 reverse-path filter of an interface is the stricter of its own and
    // `all`'s; 1 (strict) drops a packet whose source is not routed back out of it.
    let strict = |iface: &str| {
        [
            format!("net/ipv4/conf/{iface}/rp_filter"),
            "net/ipv4/conf/all/rp_filter".into(),
        ]
        .iter()
        .filter_map(|k| value(k))
        .max()
    };
    if local_fib && strict(n3).is_some_and(|v| v == 1) {
        out.push(format!(
            "the IPv4 reverse-path filter is strict on {n3} (or all): with [local] next_hop = \
             \"fib\", a LOCAL packet whose next hop is not resolved yet is handed to the \
             kernel on {n3} from a UE's address, and dropped there unless a route to the UE \
             pool points out of {n3}; set net.ipv4.conf.{n3}.rp_filter and \
             net.ipv4.conf.all.rp_filter to 0 (or 2)"
        ));
    }
    if n3_fib && v4 {
        if !is(&format!("net/ipv4/conf/{local}/accept_local"), 1) {
            out.push(format!(
                "accept_local is off on {local}: with [n3] next_hop = \"fib\", a downlink packet \
                 whose next hop is not resolved yet is handed to the kernel on {local} from \
                 our own N3 address ({}), which it drops; set net.ipv4.conf.{local}.accept_local=1",
                tables.n3.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED)
            ));
        }
        if strict(local).is_some_and(|v| v != 0) {
            out.push(format!(
                "the IPv4 reverse-path filter is on for {local} (or all): with [n3] next_hop = \
                 \"fib\", a downlink packet whose next hop is not resolved yet comes from our \
                 own N3 address and is dropped; set net.ipv4.conf.{local}.rp_filter and \
                 net.ipv4.conf.all.rp_filter to 0"
            ));
        }
    }
    out
}

/// Logs [`problems`] on the real host, one warning each.
pub(super) fn warn_problems(tables: &Tables, pfcp: bool, n3: &str, local: &str) {
    for p in problems(tables, pfcp, n3, local, &proc_sys) {
        warn!("{p}");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;
    use crate::datapath::{compile::from_toml, tables::tests::MINIMAL};

    fn tables(n3_fib: bool, local_fib: bool) -> Tables {
        let mut text = MINIMAL.to_string();
        if n3_fib {
            text = text.replace("next_hop_mac = \"02:00:00:00:00:02\"", "next_hop = \"fib\"");
        }
        if local_fib {
            text = text.replace("next_hop_mac = \"02:00:00:00:01:02\"", "next_hop = \"fib\"");
        }
        Tables::clone(&from_toml(&text, "t.toml").unwrap())
    }

    /// A host whose sysctls are `set`; every other one reads as the kernel's default here
    /// (forwarding off, filters off, accept_local off).
    fn host(set: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let set: HashMap<String, String> = set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str| Some(set.get(name).cloned().unwrap_or_else(|| "0".into()))
    }

    const READY: [(&str, &str); 5] = [
        ("net/ipv4/conf/n3/forwarding", "1"),
        ("net/ipv4/conf/lan/forwarding", "1"),
        ("net/ipv6/conf/all/forwarding", "1"),
        ("net/ipv4/conf/lan/accept_local", "1"),
        ("net/ipv4/conf/all/rp_filter", "0"),
    ];

    #[test]
    fn fixed_macs_without_pfcp_need_nothing_of_the_host() {
        assert!(problems(&tables(false, false), false, "n3", "lan", &host(&[])).is_empty());
    }

    #[test]
    fn a_host_set_up_as_documented_has_no_problem() {
        let p = problems(&tables(true, true), true, "n3", "lan", &host(&READY));
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn each_missing_setting_is_named_with_the_value_it_needs() {
        let p = problems(&tables(true, true), true, "n3", "lan", &host(&[]));
        let all = p.join("\n");
        for want in [
            "net.ipv4.conf.n3.forwarding=1",
            "net.ipv4.conf.lan.forwarding=1",
            "net.ipv6.conf.all.forwarding=1",
            "net.ipv4.conf.lan.accept_local=1",
        ] {
            assert!(all.contains(want), "{want} in {all}");
        }
        // IPv6 forwarding is one host-wide setting: said once.
        assert_eq!(
            all.matches("net.ipv6.conf.all.forwarding=1").count(),
            1,
            "{all}"
        );

        let strict = [READY.as_slice(), &[("net/ipv4/conf/n3/rp_filter", "1")]].concat();
        let p = problems(&tables(false, true), false, "n3", "lan", &host(&strict));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].contains("reverse-path filter is strict on n3"),
            "{p:?}"
        );
        // Loose (2) passes a UE's source with a default route: not reported on N3.
        let loose = [READY.as_slice(), &[("net/ipv4/conf/all/rp_filter", "2")]].concat();
        assert!(problems(&tables(false, true), false, "n3", "lan", &host(&loose)).is_empty());
        // ...but any filter on the local side drops our own N3 address.
        let p = problems(&tables(true, false), false, "n3", "lan", &host(&loose));
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("net.ipv4.conf.lan.rp_filter"), "{p:?}");
    }

    #[test]
    fn settings_that_cannot_be_read_are_not_reported() {
        let unreadable = |_: &str| None;
        assert!(problems(&tables(true, true), true, "n3", "lan", &unreadable).is_empty());
    }
}
