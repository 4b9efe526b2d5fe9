//! What the integration tests (`tests/tests/`) share: the fixtures that drive the gateway
//! through the interfaces a user has, and the binaries they drive ([`mecgw_bin`],
//! [`bin_dir`]: built fresh by the first call in a test process).
//!
//! - [`api`]: certificates, the API site and the tables its tests serve, a backend over a
//!   real fast path, mTLS clients;
//! - [`bed`]: two namespaces for `mecgw run` as an operator drives it (config, signals,
//!   the operations port);
//! - [`egress`], [`nats`]: egress items and configurations, a real JetStream server;
//! - [`privacy`]: the privacy plane of `mecgw run` end to end;
//! - [`policy_site`]: a policy, its keys and records for the policy CLI tests;
//! - [`chaos`]: fault scenarios that report what was done and what mecgw did;
//! - [`testbed`] and [`packet`]: the four-namespace testbed and the independent packet code,
//!   from `mecgw-testbed` (re-exported here, so tests have one crate to import from).
//!
//! The benchmarks (`bench/`) use these fixtures too.

pub mod api;
pub mod bed;
mod binaries;
pub mod chaos;
pub mod egress;
pub mod legacy_flows;
pub mod nats;
pub mod policy_site;
pub mod privacy;

pub use binaries::{bin_dir, mecgw_bin};
pub use mecgw_testbed as testbed;
pub use mecgw_testbed::{in_netns, packet};

/// The `[n3]` and `[local]` sections the table-driven tests share (BPF_PROG_TEST_RUN needs no
/// real interfaces, so the indexes and MACs are arbitrary).
pub const TEST_INTERFACES: &str = r#"
[n3]
ifindex = 11
mac = "02:00:00:00:03:01"
next_hop_mac = "02:00:00:00:03:02"
ipv4 = "198.18.0.1"
mtu = 1500

[local]
ifindex = 12
mac = "02:00:00:00:04:01"
next_hop_mac = "02:00:00:00:04:02"
"#;

/// A tables file: [`TEST_INTERFACES`] followed by `entries` (sessions, rules, defaults).
pub fn tables_with(entries: &str) -> String {
    format!("{TEST_INTERFACES}{entries}")
}

/// Reads each of `conns` to its end and returns what each had left: every one must have been
/// closed by the other side (end of stream or a reset), none left open (30 s each at most,
/// far past the daemon's own timeouts: a hang guard, not a timing assertion).
pub fn read_until_closed_by_peer(conns: Vec<std::net::TcpStream>, what: &str) -> Vec<Vec<u8>> {
    use std::io::Read as _;
    conns
        .into_iter()
        .enumerate()
        .map(|(i, mut s)| {
            if let Err(e) = s.set_read_timeout(Some(std::time::Duration::from_secs(30))) {
                panic!("{what} {i}: setting a read timeout: {e}");
            }
            let mut rest = Vec::new();
            match s.read_to_end(&mut rest) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
                Err(e) => panic!("{what} {i} was not closed by mecgw: {e}"),
            }
            rest
        })
        .collect()
}

/// Keeps the calling thread (and so its test runs) on CPU `cpu` modulo the CPUs there are:
/// for what the programs keep per CPU.
pub fn pin_to_cpu(cpu: usize) {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: `set` is a plain bitmask owned by this frame; the call only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % n, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set),
            0,
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Flow samples sorted by key: harvests (kernel and userspace) give them in no particular
/// order.
pub fn sorted_flows(
    mut samples: Vec<mecgw::datapath::flow_counters::FlowSample>,
) -> Vec<mecgw::datapath::flow_counters::FlowSample> {
    samples.sort_unstable_by_key(|s| s.key);
    samples
}
