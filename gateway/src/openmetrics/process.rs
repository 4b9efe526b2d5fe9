//! The standard `process_*` metrics of the daemon itself, read from `/proc/self` at each
//! scrape: CPU time, resident and virtual memory, open and allowed file descriptors, start
//! time. The names and meanings are the ones every Prometheus client library uses, so stock
//! dashboards work.
//!
//! A value that cannot be read (a `/proc` without the field, a hardened mount) is left out of
//! the scrape rather than failing it: these are about the process, not the gateway's work.

use std::fmt;

use prometheus_client::{collector::Collector, encoding::DescriptorEncoder};

use super::{counter, gauge};

/// Collects the `process_*` metrics from `/proc/self` at every scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessCollector;

/// What `/proc/self/stat` says of the process, in its own units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// User plus system CPU time, clock ticks.
    pub cpu_ticks: u64,
    /// Start time after boot, clock ticks.
    pub start_ticks: u64,
    /// Virtual memory size, bytes.
    pub virtual_bytes: u64,
    /// Resident set size, pages.
    pub resident_pages: u64,
}

/// Parses `/proc/self/stat` (proc(5)). The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (_, rest) = text.rsplit_once(')')?;
    // `rest` starts at field 3 (state): field n is at index n - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        resident_pages: field(24)?,
    })
}

/// The soft limit of open files in `/proc/self/limits`; `None` if unlimited or missing.
pub fn parse_max_fds(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time (`btime`, seconds since the epoch) in `/proc/stat`.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// `sysconf(name)`, if the system defines it as a positive number.
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf takes a plain integer and touches no memory of ours; an unknown name
    // returns -1, which is rejected below.
    let v = unsafe { libc::sysconf(name) };
    u64::try_from(v).ok().filter(|&v| v > 0)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let read = |path| std::fs::read_to_string(path).ok();
        let ticks = sysconf(libc::_SC_CLK_TCK);
        let page = sysconf(libc::_SC_PAGESIZE);
        let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
        if let (Some(s), Some(ticks)) = (stat, ticks) {
            counter(
                &mut e,
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                s.cpu_ticks as f64 / ticks as f64,
            )?;
        }
        if let (Some(s), Some(page)) = (stat, page) {
            gauge(
                &mut e,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_pages.saturating_mul(page),
            )?;
        }
        if let Some(s) = stat {
            gauge(
                &mut e,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor is among them, as in every other client.
            gauge(
                &mut e,
                "process_open_fds",
                "Number of open file descriptors.",
                dir.count() as u64,
            )?;
        }
        if let Some(max) = read("/proc/self/limits").as_deref().and_then(parse_max_fds) {
            gauge(
                &mut e,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max,
            )?;
        }
        let boot = read("/proc/stat").as_deref().and_then(parse_boot_time);
        if let (Some(s), Some(ticks), Some(boot)) = (stat, ticks, boot) {
            gauge(
                &mut e,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                boot as f64 + s.start_ticks as f64 / ticks as f64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        // A command name with a space and a parenthesis, as a process may choose.
        let text = "4242 (mec gw) x) S 1 4242 4242 0 -1 4194560 900 0 0 0 \
                    250 50 0 0 20 0 9 0 12345 987654321 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 300,
                start_ticks: 12345,
                virtual_bytes: 987_654_321,
                resident_pages: 2048,
            })
        );
        assert_eq!(parse_stat("4242 (truncated) S 1 2"), None);
    }

    #[test]
    fn limits_and_boot_time_are_read_from_their_lines() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             62935                62935                processes \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_fds(unlimited), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn this_process_exposes_every_family() {
        let mut r = Registry::default();
        r.register_collector(Box::new(ProcessCollector));
        let text = super::super::encode(&r).unwrap();
        for series in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(series)),
                "{series} missing in\n{text}"
            );
        }
        assert!(
            text.contains("# TYPE process_cpu_seconds counter\n"),
            "{text}"
        );
        let rss: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            rss > 1 << 20,
            "a test process has more than 1 MiB resident: {rss}"
        );
    }
}
