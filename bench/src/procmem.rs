//! Memory of a running process as the kernel accounts it: resident set (VmRSS, and its peak
//! VmHWM, from `/proc/PID/status`) and the kernel memory of the BPF maps it holds open (the
//! `memlock` figure of each map's fdinfo, which is what `bpftool map show` reports).
//! Benchmarks read these for `mecgw run`; nothing here changes the process.

use std::{collections::BTreeMap, path::Path, process::Command};

use anyhow::Context as _;

/// Resident memory of a process, bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resident {
    /// Resident now (VmRSS).
    pub rss: u64,
    /// The highest resident set since the process started (VmHWM).
    pub peak: u64,
}

/// `VmRSS` and `VmHWM` from the text of `/proc/PID/status` (kB there, bytes here).
pub fn parse_status(text: &str) -> Option<Resident> {
    let kib = |key: &str| -> Option<u64> {
        let line = text.lines().find_map(|l| l.strip_prefix(key))?;
        line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
    };
    Some(Resident {
        rss: kib("VmRSS:")? * 1024,
        peak: kib("VmHWM:")? * 1024,
    })
}

/// Resident memory of process `pid` now.
pub fn resident(pid: u32) -> anyhow::Result<Resident> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    parse_status(&text).with_context(|| format!("{path}: no VmRSS/VmHWM"))
}

/// One BPF map a process holds, as its fdinfo describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BpfMap {
    pub id: u32,
    /// The kernel's `enum bpf_map_type` number.
    pub map_type: u32,
    pub max_entries: u32,
    /// Bytes of kernel memory charged to the map.
    pub memlock: u64,
    /// The map's name, when `bpftool` could say it.
    pub name: Option<String>,
}

/// The map described by a bpf-map fd's fdinfo text, or `None` if it is not one.
pub fn parse_map_fdinfo(text: &str) -> Option<BpfMap> {
    let field = |key: &str| -> Option<&str> {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    Some(BpfMap {
        id: field("map_id")?.parse().ok()?,
        map_type: field("map_type")?.parse().ok()?,
        max_entries: field("max_entries")?.parse().ok()?,
        memlock: field("memlock")?.parse().ok()?,
        name: None,
    })
}

/// Every BPF map process `pid` holds an fd of, once each (by map id), largest first, named
/// through `bpftool map show --json` when it is installed.
pub fn bpf_maps(pid: u32) -> anyhow::Result<Vec<BpfMap>> {
    let fds = Path::new("/proc").join(pid.to_string()).join("fd");
    let mut maps: BTreeMap<u32, BpfMap> = BTreeMap::new();
    for entry in std::fs::read_dir(&fds).with_context(|| fds.display().to_string())? {
        let entry = entry?;
        // An fd closed between the listing and the read is simply not counted.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.as_os_str() != "anon_inode:bpf-map" {
            continue;
        }
        let info = Path::new("/proc")
            .join(pid.to_string())
            .join("fdinfo")
            .join(entry.file_name());
        let Ok(text) = std::fs::read_to_string(&info) else {
            continue;
        };
        if let Some(m) = parse_map_fdinfo(&text) {
            maps.insert(m.id, m);
        }
    }
    if let Ok(names) = bpftool_names() {
        for m in maps.values_mut() {
            m.name = names.get(&m.id).cloned();
        }
    }
    let mut maps: Vec<BpfMap> = maps.into_values().collect();
    maps.sort_by(|a, b| b.memlock.cmp(&a.memlock).then(a.id.cmp(&b.id)));
    Ok(maps)
}

/// Map id → name, from `bpftool map show --json`.
fn bpftool_names() -> anyhow::Result<BTreeMap<u32, String>> {
    let out = Command::new("bpftool")
        .args(["map", "show", "--json"])
        .output()
        .context("running bpftool")?;
    anyhow::ensure!(out.status.success(), "bpftool map show failed");
    let all: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(all
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| {
                    let id = u32::try_from(m["id"].as_u64()?).ok()?;
                    Some((id, m["name"].as_str()?.to_string()))
                })
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn status_lines_in_kib_become_bytes() {
        let text = "Name:\tmecgw\nVmPeak:\t  900000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   70000 kB\n";
        assert_eq!(
            parse_status(text),
            Some(Resident {
                rss: 70000 * 1024,
                peak: 81234 * 1024
            })
        );
        assert_eq!(parse_status("Name:\tkthread\n"), None);
    }

    #[test]
    fn a_map_fdinfo_gives_id_type_entries_and_memlock() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\n\
                    key_size:\t4\nvalue_size:\t16\nmax_entries:\t131072\nmap_flags:\t0x1\n\
                    map_extra:\t0x0\nmemlock:\t3178496\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(
            parse_map_fdinfo(text),
            Some(BpfMap {
                id: 42,
                map_type: 1,
                max_entries: 131072,
                memlock: 3178496,
                name: None
            })
        );
        // A program's fdinfo has no map fields.
        assert_eq!(
            parse_map_fdinfo("prog_type:\t6\nprog_jited:\t1\nmemlock:\t4096\nprog_id:\t7\n"),
            None
        );
    }
}
