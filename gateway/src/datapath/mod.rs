//! The XDP fast path, seen from userspace: the embedded eBPF object, loading it into the
//! kernel, attaching programs to interfaces, running them on test packets and reading their
//! counters. This module never parses packets itself.

use std::time::Duration;

use aya::{
    Ebpf,
    maps::PerCpuArray,
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};
use mecgw_ebpf::{Counter, Verdict, names};

/// The eBPF object built by `build.rs` for `bpfel-unknown-none`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mecgw-xdp"));

/// Errors from the fast path's userspace side.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatapathError {
    /// The kernel refused to load the object or a program (often: not root / no CAP_BPF).
    #[error(
        "cannot load the XDP programs into the kernel: {source} (loading BPF needs root or CAP_BPF+CAP_NET_ADMIN)"
    )]
    Load {
        #[source]
        source: aya::EbpfError,
    },
    /// A program or map the object should contain is missing: a build mismatch.
    #[error("the embedded eBPF object has no {what} named {name:?}")]
    Missing {
        what: &'static str,
        name: &'static str,
    },
    /// A program operation (load, attach, test run) failed.
    #[error("{action}: {source}")]
    Program {
        action: String,
        #[source]
        source: ProgramError,
    },
    /// Reading or writing a map failed.
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
}

/// How a program attaches to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// Native (driver) XDP: runs in the driver before an skb exists. veth supports it.
    #[default]
    Native,
    /// Generic (skb) XDP: works on every interface, slower.
    Generic,
}

impl AttachMode {
    fn flags(self) -> XdpMode {
        match self {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        }
    }

    /// The name used in configuration and logs.
    pub const fn name(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        }
    }
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "native" => Ok(AttachMode::Native),
            "generic" => Ok(AttachMode::Generic),
            other => Err(format!(
                "unknown XDP mode {other:?}: expected \"native\" or \"generic\""
            )),
        }
    }
}

/// The outcome of running a program once on a packet with BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The XDP action the program returned (`XDP_PASS` = 2, ...).
    pub action: u32,
    /// The packet as the program left it.
    pub data_out: Vec<u8>,
    /// Kernel-measured average time per repetition.
    pub duration: Duration,
}

/// The loaded fast path: the eBPF object with its programs loaded (not yet attached).
pub struct FastPath {
    ebpf: Ebpf,
}

impl FastPath {
    /// Loads the embedded object and its programs into the kernel.
    pub fn load() -> Result<Self, DatapathError> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT).map_err(|source| DatapathError::Load { source })?;
        let prog = pass_program(&mut ebpf)?;
        prog.load().map_err(|source| DatapathError::Program {
            action: format!("verifying program {}", names::PROG_PASS),
            source,
        })?;
        Ok(FastPath { ebpf })
    }

    /// Attaches the pass program to `iface`. It stays attached until `self` is dropped.
    pub fn attach_pass(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, DatapathError> {
        let prog = pass_program(&mut self.ebpf)?;
        prog.attach(iface, mode.flags())
            .map_err(|source| DatapathError::Program {
                action: format!(
                    "attaching {} to {iface} in {} mode",
                    names::PROG_PASS,
                    mode.name()
                ),
                source,
            })
    }

    /// Runs the pass program once on `packet` through BPF_PROG_TEST_RUN.
    pub fn test_run_pass(&mut self, packet: &[u8]) -> Result<TestRunOutcome, DatapathError> {
        let prog = pass_program(&mut self.ebpf)?;
        test_run(prog, packet, 1)
    }

    /// Sums the per-CPU verdict counters.
    pub fn verdict_counters(&self) -> Result<Vec<(Verdict, Counter)>, DatapathError> {
        let name = names::MAP_VERDICTS;
        let map = self
            .ebpf
            .map(name)
            .ok_or(DatapathError::Missing { what: "map", name })?;
        let array: PerCpuArray<_, Counter> =
            PerCpuArray::try_from(map).map_err(|source| DatapathError::Map { name, source })?;
        Verdict::ALL
            .iter()
            .map(|&verdict| {
                let per_cpu = array
                    .get(&(verdict as u32), 0)
                    .map_err(|source| DatapathError::Map { name, source })?;
                let total = per_cpu
                    .iter()
                    .fold(Counter::default(), |acc, c| acc.plus(*c));
                Ok((verdict, total))
            })
            .collect()
    }
}

fn pass_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DatapathError> {
    let name = names::PROG_PASS;
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Missing {
        what: "program",
        name,
    })?;
    prog.try_into().map_err(|source| DatapathError::Program {
        action: format!("{name} is not an XDP program"),
        source,
    })
}

/// The largest frame a test run may produce: input plus room for encapsulation headers.
const TEST_RUN_HEADROOM: usize = 256;

fn test_run(prog: &Xdp, packet: &[u8], repeat: u32) -> Result<TestRunOutcome, DatapathError> {
    let mut out = vec![0u8; packet.len() + TEST_RUN_HEADROOM];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(packet);
    opts.data_out = Some(&mut out);
    opts.repeat = repeat;
    let result = prog
        .test_run(opts)
        .map_err(|source| DatapathError::Program {
            action: "BPF_PROG_TEST_RUN".to_string(),
            source,
        })?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutcome {
        action: result.return_value,
        data_out: out,
        duration: result.duration,
    })
}
