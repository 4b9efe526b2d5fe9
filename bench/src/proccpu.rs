//! CPU time as the kernel accounts it: each thread of a running process (`utime + stime` of
//! `/proc/PID/task/TID/stat`) and the calling process as a whole (`getrusage`). Benchmarks
//! read these around a measured interval to say where the CPU of each unit of work went;
//! nothing here changes the process.

use std::{collections::BTreeMap, time::Duration};

use anyhow::Context as _;

/// CPU time one thread had used when it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadCpu {
    pub tid: u32,
    /// The thread's name (`comm`, at most 15 bytes: tokio's workers are `tokio-runtime-w`).
    pub name: String,
    pub cpu: Duration,
}

/// The name and the CPU time (user + system) in the text of a `/proc/…/stat` file, with
/// `ticks` clock ticks a second.
pub fn parse_stat(text: &str, ticks: u64) -> Option<(String, Duration)> {
    // The name is between the first '(' and the last ')': it may hold either, and spaces.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    // After the name: state (field 3), …, utime (field 14), stime (field 15).
    let mut fields = text.get(close + 1..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    if ticks == 0 {
        return None;
    }
    let t = utime + stime;
    let cpu =
        Duration::from_secs(t / ticks) + Duration::from_nanos((t % ticks) * 1_000_000_000 / ticks);
    Some((name, cpu))
}

fn ticks_per_second() -> u64 {
    // SAFETY: sysconf(3) reads a constant of the system; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).unwrap_or(100)
}

/// Every thread of process `pid` now. A thread that ends while this reads is left out.
pub fn threads(pid: u32) -> anyhow::Result<Vec<ThreadCpu>> {
    let ticks = ticks_per_second();
    let dir = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| dir.clone())? {
        let entry = entry.with_context(|| dir.clone())?;
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (name, cpu) = parse_stat(&text, ticks)
            .with_context(|| format!("{dir}/{tid}/stat: not a stat line"))?;
        out.push(ThreadCpu { tid, name, cpu });
    }
    Ok(out)
}

/// The CPU time (user + system) the calling process has used, all its threads.
pub fn own() -> Duration {
    // SAFETY: rusage is plain data for which all-zero is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage(2) writing the rusage we own; RUSAGE_SELF cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &raw mut u) };
    let tv =
        |t: libc::timeval| Duration::new(t.tv_sec.max(0) as u64, (t.tv_usec.max(0) as u32) * 1_000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time used between two readings of the same process's threads, summed by thread name.
/// A thread started in between counts from zero; one that ended in between is not counted.
pub fn used_by_name(before: &[ThreadCpu], after: &[ThreadCpu]) -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    for t in after {
        let start = before
            .iter()
            .find(|b| b.tid == t.tid)
            .map_or(Duration::ZERO, |b| b.cpu);
        *out.entry(t.name.clone()).or_insert(Duration::ZERO) += t.cpu.saturating_sub(start);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_its_name_and_user_plus_system_time() {
        // A name with a space and both parentheses; utime 250 and stime 50 ticks.
        let line = "4242 (odd (name) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 \
                    3 0 12345 1000000 200 18446744073709551615";
        let (name, cpu) = parse_stat(line, 100).expect("a stat line");
        assert_eq!(name, "odd (name) x");
        assert_eq!(cpu, Duration::from_secs(3));
        assert_eq!(parse_stat(line, 0), None);
        assert_eq!(parse_stat("4242 (cut", 100), None);
        assert_eq!(parse_stat("4242 (short) S 1 2", 100), None);
    }

    #[test]
    fn time_used_is_summed_by_name_and_new_threads_count_from_zero() {
        let t = |tid, name: &str, ms| ThreadCpu {
            tid,
            name: name.into(),
            cpu: Duration::from_millis(ms),
        };
        let before = [t(1, "main", 100), t(2, "worker", 40), t(3, "worker", 10)];
        let after = [
            t(1, "main", 150),
            t(2, "worker", 90),
            t(3, "worker", 30),
            t(4, "worker", 5),
        ];
        let used = used_by_name(&before, &after);
        assert_eq!(used["main"], Duration::from_millis(50));
        assert_eq!(used["worker"], Duration::from_millis(75));
    }

    #[test]
    fn this_process_can_read_its_own_threads() {
        let me = threads(std::process::id()).expect("own threads");
        assert!(!me.is_empty());
        assert!(me.iter().any(|t| t.tid == std::process::id()));
    }
}
