//! The XDP fast path, seen from userspace: the embedded eBPF object, loading it into the
//! kernel, attaching programs to interfaces, installing tables, running programs on test
//! packets and reading their counters.
//!
//! - [`tables`]: the tables as described (sessions, rules, interfaces, defaults) and the file
//!   format;
//! - [`compile`]: checks a description and compiles it ([`CompiledTables`]: the only thing
//!   a datapath installs);
//! - `entries`: compiled tables → the map entries of one kernel generation;
//! - [`writer`](self): hot update through two generations of maps;
//! - [`flow_counters`]: per-flow counters and their lossless harvest (two generations as well),
//!   which the record path ([`crate::records::harvest`]) turns into `flow` records;
//! - [`model`]: the reference model with the programs' exact semantics (no kernel needed);
//! - [`pfcp_maps`]: PFCP sessions' tunnels, downlinks and PDR counters (one generation,
//!   written entry by entry);
//! - [`live`]: benchmark support, a live-frames traffic generator and a counting sink;
//! - [`pins`]: what outlives the daemon in bpffs (links, program arrays, maps), for restarts
//!   and upgrades that never take the programs off the interfaces;
//! - `carried`: counters carried over from a previous instance at such a restart.
//!
//! This module never parses packets itself.

mod bpf_batch;
mod carried;
pub mod compile;
mod counter_batch;
pub(crate) mod entries;
pub mod fib_watch;
mod flow_batch;
pub mod flow_counters;
mod flow_slots;
pub mod live;
pub mod model;
pub mod pfcp_maps;
pub mod pins;
pub mod tables;
mod writer;

use std::{path::Path, sync::Mutex, time::Duration};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, PerCpuValues},
    programs::{
        ProgramError, TestRun, TestRunOptions, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        xdp::{XdpLink, XdpLinkId},
    },
};
use mecgw_ebpf::{BENCH_FRAME_MAX, BenchFrame, Decision, NONE, names};

pub use self::{
    carried::AdoptedCounters,
    flow_counters::{AdoptedFlows, FlowKey, FlowLosses, FlowSample},
};

pub use mecgw_ebpf::{Counter, Reason, Verdict};

use self::{carried::Carried, flow_counters::FlowMaps, writer::TableWriter};
pub use self::{
    compile::{CompiledTables, Problems},
    tables::{Tables, TablesError},
};

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
    /// A program returned an action or decision the fast path never produces.
    #[error("unexpected result from the kernel: {0}")]
    Unexpected(String),
    /// A caller passed an argument the operation cannot take.
    #[error("bad argument: {0}")]
    BadArgument(String),
    /// An earlier operation on the same state panicked; the state may be half-written.
    #[error("{0} panicked earlier; restart mecgw")]
    Poisoned(&'static str),
    /// A system call failed.
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// Pinning, adopting or unpinning objects in bpffs failed.
    #[error(transparent)]
    Pin(#[from] pins::PinError),
    /// The userspace datapath could not change its kernel arrangement (routes, rules, TUN).
    #[error("{action}: {source}")]
    Userspace {
        action: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
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
        by_name(
            s,
            "XDP mode",
            &[AttachMode::Native, AttachMode::Generic],
            Self::name,
        )
    }
}

/// The one of `all` whose `name` is `s`, or an error naming what exists.
fn by_name<T: Copy>(
    s: &str,
    what: &str,
    all: &[T],
    name: fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter().copied().find(|&v| name(v) == s).ok_or_else(|| {
        let names: Vec<String> = all.iter().map(|&v| format!("{:?}", name(v))).collect();
        format!("unknown {what} {s:?}: expected {}", names.join(" or "))
    })
}

/// What [`FastPath::bench_restored`] runs behind the restore wrapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTarget {
    /// The empty program: the wrapper's own cost, which the benchmark subtracts.
    Empty,
    /// The program that handles a direction, as attached.
    Program(Direction),
    /// The uplink's parse and LOCAL decapsulation without any lookup or counter
    /// (`mecgw_bench_floor`; it counts what it redirects in the bench sink's counter).
    Floor,
}

/// Which way traffic flows, and so which program handles it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From gNBs on N3: `mecgw_uplink`.
    Uplink,
    /// From local services: `mecgw_downlink`, or `mecgw_downlink_pfcp` with PFCP on.
    Downlink,
}

impl Direction {
    /// Index in the per-session counters.
    pub const fn index(self) -> u32 {
        match self {
            Direction::Uplink => mecgw_ebpf::DIR_UPLINK,
            Direction::Downlink => mecgw_ebpf::DIR_DOWNLINK,
        }
    }
    pub const fn name(self) -> &'static str {
        match self {
            Direction::Uplink => "uplink",
            Direction::Downlink => "downlink",
        }
    }
}

impl std::str::FromStr for Direction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        by_name(
            s,
            "direction",
            &[Direction::Uplink, Direction::Downlink],
            Self::name,
        )
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

/// A test run with the program's full decision, comparable with [`model::Outcome`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged {
    pub verdict: Verdict,
    pub reason: Reason,
    pub rule: Option<u32>,
    pub session: Option<u32>,
    /// The PFCP PDR that decided, if one did.
    pub pdr: Option<u32>,
    /// The packet as the program left it.
    pub packet: Vec<u8>,
}

impl From<model::Outcome> for Judged {
    fn from(o: model::Outcome) -> Judged {
        Judged {
            verdict: o.verdict,
            reason: o.reason,
            rule: o.rule,
            session: o.session,
            pdr: o.pdr,
            packet: o.packet,
        }
    }
}

/// Choices fixed when the programs are loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastPathOptions {
    /// Count packets and bytes per flow ([`FastPath::harvest_flows`]). Off, the flow code is
    /// removed from the programs by the verifier and costs nothing per packet, and the flow
    /// maps are created with one entry. On, it costs a hash lookup and two atomic adds per
    /// G-PDU of a session and per packet to a UE (docs/fastpath.md, "Flow accounting").
    pub flow_accounting: bool,
    /// Flows counted per harvest window (0: [`MAX_FLOWS`]); packets of new flows beyond
    /// that are refused and counted. Preallocated, whatever the number of CPUs: about 430
    /// bytes of kernel memory per flow (two halves of slots and an index of twice the
    /// flows; docs/fastpath.md, "Flow accounting").
    ///
    /// [`MAX_FLOWS`]: mecgw_ebpf::MAX_FLOWS
    pub max_flows: u32,
    /// PFCP sessions: their maps and TEID range (`None`: the PFCP maps hold one entry and no
    /// TEID is looked up in them).
    pub pfcp: Option<pfcp_maps::PfcpOptions>,
    /// Record each frame's whole decision for [`FastPath::judge`] (default on). Off (the
    /// daemon, whose programs only count), the verifier removes the per-CPU store from every
    /// path, and `judge` refuses.
    pub record_decisions: bool,
    /// With flow accounting: keep each flow's classification (its rule) in the flow's index
    /// entry, so that only the first packet of a flow under each tables install walks the
    /// rules (default on). Off, every packet is classified, as a flow's first one is: the
    /// benchmark measures both, and the tests judge packets both ways.
    pub verdict_cache: bool,
    /// Keep the kernel's FIB answers per destination and CPU for the `fib` next hops (default
    /// on): a FIB next hop then costs a lookup in a per-CPU table, not `bpf_fib_lookup`, until
    /// the kernel reports a neighbour, route, address or link change in the namespace the
    /// fast path was loaded in (a thread watches rtnetlink; [`FastPath::fib_changed`]), and
    /// for at most a second. Off, every packet asks the FIB.
    pub fib_cache: bool,
}

impl Default for FastPathOptions {
    fn default() -> Self {
        FastPathOptions {
            flow_accounting: false,
            max_flows: 0,
            pfcp: None,
            record_decisions: true,
            verdict_cache: true,
            fib_cache: true,
        }
    }
}

/// The loaded fast path: the eBPF object with its programs loaded (not yet attached).
///
/// `FastPath` is `Sync`: test runs and counter reads take `&self` and may run on many threads
/// while another thread installs new tables.
pub struct FastPath {
    ebpf: Ebpf,
    options: FastPathOptions,
    writer: Mutex<TableWriter>,
    flows: Mutex<FlowMaps>,
    pfcp: Mutex<pfcp_maps::PfcpMaps>,
    /// What previous instances counted ([`FastPath::adopt_counters`]).
    carried: Mutex<Carried>,
    /// The program arrays of the tail calls between programs (see `load_with`).
    _tail_calls: Vec<aya::maps::ProgramArray<MapData>>,
    last: Mutex<PerCpuArray<MapData, Decision>>,
    bench: Mutex<BenchMaps>,
    /// Links this fast path attached and pinned ([`FastPath::attach_pinned`]); closing them
    /// leaves the pins, and the programs on the interfaces.
    pinned: Vec<PinnedLink>,
    /// With the next-hop cache: its serial, and the thread that moves it (`None` if it could
    /// not start: answers then serve for at most a second).
    fib_serial: Option<fib_watch::FibSerial>,
    _fib_watch: Option<fib_watch::FibWatch>,
}

/// How [`FastPath::attach_pinned`] put a program on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    /// No link was pinned for the interface: a new link, now pinned.
    Attached,
    /// A previous instance's pinned link now runs this program: replaced atomically
    /// (`bpf_link_update`), the interface never without a program.
    Replaced {
        /// The kernel's id of the program it ran before.
        previous_program: u32,
    },
}

/// The maps of the benchmark's restore wrapper.
struct BenchMaps {
    frame: aya::maps::Array<MapData, BenchFrame>,
    target: aya::maps::ProgramArray<MapData>,
}

pub(crate) fn take_map<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
    ebpf: &mut Ebpf,
    name: &'static str,
) -> Result<T, DatapathError> {
    let map = ebpf
        .take_map(name)
        .ok_or(DatapathError::Missing { what: "map", name })?;
    T::try_from(map).map_err(|source| DatapathError::Map { name, source })
}

const PROGRAMS: [&str; 13] = [
    names::PROG_PASS,
    names::PROG_EMPTY,
    names::PROG_BENCH_RESTORE,
    names::PROG_BENCH_TX,
    names::PROG_BENCH_SINK,
    names::PROG_BENCH_FLOOR,
    names::PROG_UPLINK,
    names::PROG_UPLINK_PFCP,
    names::PROG_RETUNNEL,
    names::PROG_DOWNLINK,
    names::PROG_DOWNLINK_PFCP,
    names::PROG_DOWNLINK_PFCP_V6,
    names::PROG_DOWNLINK_JUMBO,
];

/// Tail calls between the programs: program arrays and the programs at their indexes.
const TAIL_CALLS: [(&str, &[&str]); 3] = [
    (names::MAP_UPLINK_PFCP, &[names::PROG_UPLINK_PFCP]),
    (names::MAP_RETUNNEL, &[names::PROG_RETUNNEL]),
    (
        names::MAP_DOWNLINK_CALLS,
        &[
            names::PROG_DOWNLINK,
            names::PROG_DOWNLINK_PFCP_V6,
            names::PROG_DOWNLINK_JUMBO,
        ],
    ),
];

impl FastPath {
    /// Loads the embedded object and its programs into the kernel, without flow accounting.
    /// The tables start empty: every G-PDU has an unknown TEID (passed) and no downlink packet
    /// is for a UE.
    pub fn load() -> Result<Self, DatapathError> {
        Self::load_with(FastPathOptions::default())
    }

    /// [`FastPath::load`] with the choices in `options`.
    pub fn load_with(options: FastPathOptions) -> Result<Self, DatapathError> {
        Self::load_inner(options, None)
    }

    /// [`FastPath::load_with`], with the program arrays pinned in `instance` (a directory on
    /// bpffs, see [`pins`]), so that they keep working for the programs when this process
    /// is gone; for a daemon that attaches with [`FastPath::attach_pinned`].
    pub fn load_pinned(options: FastPathOptions, instance: &Path) -> Result<Self, DatapathError> {
        Self::load_inner(options, Some(instance))
    }

    fn load_inner(options: FastPathOptions, pins: Option<&Path>) -> Result<Self, DatapathError> {
        let mut loader = EbpfLoader::new();
        let accounting = u32::from(options.flow_accounting);
        loader.override_global(names::GLOBAL_FLOW_ACCOUNTING, &accounting, true);
        let decisions = u32::from(options.record_decisions);
        loader.override_global(names::GLOBAL_RECORD_DECISIONS, &decisions, true);
        let cache = u32::from(options.flow_accounting && options.verdict_cache);
        loader.override_global(names::GLOBAL_VERDICT_CACHE, &cache, true);
        let fib_cache = u32::from(options.fib_cache);
        loader.override_global(names::GLOBAL_FIB_CACHE, &fib_cache, true);
        if !options.fib_cache {
            loader.map_max_entries(names::MAP_FIB_CACHE, 1);
        }
        // The slot maps and the index are preallocated: no memory for flows nobody counts.
        let flows = match (options.flow_accounting, options.max_flows) {
            (false, _) => 1,
            (true, 0) => mecgw_ebpf::MAX_FLOWS,
            (true, n) => n,
        };
        for name in names::MAP_FLOW_SLOTS {
            loader.map_max_entries(name, flows);
        }
        // The index holds the window being counted and the one before it: entries of older
        // windows are stale, and the LRU drops those first.
        loader.map_max_entries(names::MAP_FLOW_INDEX, flows.saturating_mul(2));
        match options.pfcp {
            // Per-CPU counters are preallocated on every CPU: size them to what is promised.
            Some(p) => {
                loader.map_max_entries(names::MAP_PFCP_TUNNELS, p.tunnels);
                loader.map_max_entries(names::MAP_PFCP_UE_V4, p.ues);
                loader.map_max_entries(names::MAP_PFCP_UE_V6, p.ues);
                loader.map_max_entries(names::MAP_PDR_COUNTERS, p.pdrs);
                loader.map_max_entries(
                    names::MAP_SESSION_COUNTERS,
                    (mecgw_ebpf::MAX_SESSIONS + p.sessions) * 2,
                );
            }
            None => {
                for name in [
                    names::MAP_PFCP_TUNNELS,
                    names::MAP_PFCP_UE_V4,
                    names::MAP_PFCP_UE_V6,
                    names::MAP_PDR_COUNTERS,
                ] {
                    loader.map_max_entries(name, 1);
                }
                loader.map_max_entries(names::MAP_SESSION_COUNTERS, mecgw_ebpf::MAX_SESSIONS * 2);
            }
        }
        let mut ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|source| DatapathError::Load { source })?;
        for name in PROGRAMS {
            let prog = xdp_program_mut(&mut ebpf, name)?;
            prog.load().map_err(|source| DatapathError::Program {
                action: format!("verifying program {name}"),
                source,
            })?;
        }
        // The uplink hands G-PDUs of the PFCP range to the PFCP program, which hands
        // re-tunnels on, by tail calls. The kernel empties a program array when its last
        // file descriptor closes: keep them.
        let mut tail_calls = Vec::new();
        for (map, programs) in TAIL_CALLS {
            if let Some(dir) = pins {
                pin_map(&ebpf, map, dir)?;
            }
            let mut array: aya::maps::ProgramArray<MapData> = take_map(&mut ebpf, map)?;
            for (index, &program) in programs.iter().enumerate() {
                let fd = xdp_program_mut(&mut ebpf, program)?
                    .fd()
                    .map_err(|source| DatapathError::Program {
                        action: format!("program {program}"),
                        source,
                    })?
                    .try_clone()
                    .map_err(DatapathError::Io)?;
                array
                    .set(index as u32, &fd, 0)
                    .map_err(|source| DatapathError::Map { name: map, source })?;
            }
            tail_calls.push(array);
        }
        if let Some(dir) = pins {
            // For the next instance to harvest what these programs count after this
            // process's last harvest (FastPath::adopt_flows), and to carry their counters
            // over, by the ids of the tables in force (FastPath::adopt_counters).
            for map in PINNED_FOR_FLOWS.into_iter().chain(PINNED_FOR_COUNTERS) {
                pin_map(&ebpf, map, dir)?;
            }
        }
        let writer = TableWriter::new(&mut ebpf, options.pfcp.map(|p| p.teid_min))?;
        let carried = Carried::new(&mut ebpf)?;
        let flows = FlowMaps::new(&mut ebpf)?;
        let pfcp = pfcp_maps::PfcpMaps::new(&mut ebpf, options.pfcp)?;
        let last = ebpf
            .take_map(names::MAP_LAST_DECISION)
            .ok_or(DatapathError::Missing {
                what: "map",
                name: names::MAP_LAST_DECISION,
            })?;
        let last = PerCpuArray::try_from(last).map_err(|source| DatapathError::Map {
            name: names::MAP_LAST_DECISION,
            source,
        })?;
        let bench = BenchMaps {
            frame: take_map(&mut ebpf, names::MAP_BENCH_FRAME)?,
            target: take_map(&mut ebpf, names::MAP_BENCH_TARGET)?,
        };
        let (fib_serial, fib_watch) = if options.fib_cache {
            let serial = fib_watch::FibSerial::new(take_map(&mut ebpf, names::MAP_FIB_SERIAL)?);
            match fib_watch::FibWatch::start(serial.clone()) {
                Ok(watch) => (Some(serial), Some(watch)),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        "no rtnetlink watch: FIB next hops follow a change within 1 s, not at once"
                    );
                    serial.advance()?;
                    (Some(serial), None)
                }
            }
        } else {
            (None, None)
        };
        Ok(FastPath {
            ebpf,
            options,
            writer: Mutex::new(writer),
            flows: Mutex::new(flows),
            pfcp: Mutex::new(pfcp),
            carried: Mutex::new(carried),
            _tail_calls: tail_calls,
            last: Mutex::new(last),
            bench: Mutex::new(bench),
            pinned: Vec::new(),
            fib_serial,
            _fib_watch: fib_watch,
        })
    }

    /// Makes every FIB answer the programs keep stale: the next packet to each destination
    /// asks the FIB again. The fast path's own thread does this on every change the kernel
    /// reports in the namespace it was loaded in; this is for changes it cannot see (a test
    /// judging packets in another namespace). Nothing to do without the next-hop cache.
    pub fn fib_changed(&self) -> Result<(), DatapathError> {
        match &self.fib_serial {
            Some(serial) => serial.advance().map(|_| ()),
            None => Ok(()),
        }
    }

    /// The FIB serial the programs' kept answers are checked against (0 without the
    /// next-hop cache); it moves on every change the kernel reports.
    pub fn fib_serial(&self) -> u32 {
        self.fib_serial
            .as_ref()
            .map_or(0, fib_watch::FibSerial::current)
    }

    /// What the next-hop cache's watch has done (`None` without the cache).
    pub fn fib_watch(&self) -> Option<fib_watch::FibWatchStatus> {
        self.fib_serial.as_ref().map(fib_watch::FibSerial::status)
    }

    /// Installs `tables`; from the moment this returns, every packet is judged by them, and
    /// none is ever judged by a mixture of old and new tables.
    pub fn install(&self, tables: &CompiledTables) -> Result<(), DatapathError> {
        let mut writer = self.lock_writer()?;
        writer.install(tables)?;
        // A rule or session that is gone takes its carried count with it, as its slot's.
        let rules = tables.rules.iter().map(|r| r.id).collect();
        let sessions = tables.sessions.iter().map(|s| s.id).collect();
        self.lock_carried()?.retain(&rules, &sessions)
    }

    fn lock_writer(&self) -> Result<std::sync::MutexGuard<'_, TableWriter>, DatapathError> {
        self.writer
            .lock()
            .map_err(|_| DatapathError::Poisoned("a table update"))
    }

    /// Attaches the pass program to `iface`. It stays attached until `self` is dropped.
    pub fn attach_pass(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, DatapathError> {
        self.attach(names::PROG_PASS, iface, mode)
    }

    /// Benchmark support: attaches the sink (counts every frame, then drops it) to `iface` in
    /// the calling thread's network namespace, until `self` is dropped.
    pub fn attach_bench_sink(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, DatapathError> {
        self.attach(names::PROG_BENCH_SINK, iface, mode)
    }

    /// What the benchmark sink has received so far (all CPUs).
    pub fn bench_sink_counter(&self) -> Result<Counter, DatapathError> {
        let map = self.counter_map(names::MAP_BENCH_SINK)?;
        sum(&map, 0, names::MAP_BENCH_SINK)
    }

    /// Attaches the program for `direction` to `iface` until `self` is dropped.
    pub fn attach_direction(
        &mut self,
        direction: Direction,
        iface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, DatapathError> {
        self.attach(self.entry(direction), iface, mode)
    }

    /// Puts the program for `direction` on `iface` (index `ifindex`) through the link pinned
    /// for it in `pins`: a link a previous instance left gets this program atomically; with
    /// none (or one whose interface is gone), a new link in `mode` is attached and pinned.
    /// Either way the program stays on the interface after this process ends, until the pin
    /// is removed ([`pins::PinDir::unpin_link`]). Install the tables first: from the moment
    /// this returns, the interface's packets are judged by this fast path.
    pub fn attach_pinned(
        &mut self,
        direction: Direction,
        iface: &str,
        ifindex: u32,
        mode: AttachMode,
        pins: &pins::PinDir,
    ) -> Result<Attachment, DatapathError> {
        let name = self.entry(direction);
        let path = pins.link_path(iface);
        let program_err = |action: String| move |source| DatapathError::Program { action, source };
        if let Some((link, state)) = pins::open_link(&path)? {
            if state.ifindex == ifindex {
                let link = XdpLink::try_from(link).map_err(|e| pins::PinError {
                    action: "adopting the pinned link",
                    path: path.clone(),
                    error: e.into(),
                })?;
                xdp_program_mut(&mut self.ebpf, name)?
                    .attach_to_link(link)
                    .map_err(program_err(format!(
                        "replacing the program of the link pinned at {}",
                        path.display()
                    )))?;
                return Ok(Attachment::Replaced {
                    previous_program: state.prog_id,
                });
            }
            // The interface it was attached to is gone (ifindex 0) or was re-created.
            pins.unpin_link(iface)?;
        }
        let prog = xdp_program_mut(&mut self.ebpf, name)?;
        let id = prog
            .attach(iface, mode.flags())
            .map_err(program_err(format!(
                "attaching {name} to {iface} in {} mode",
                mode.name()
            )))?;
        let link = prog
            .take_link(id)
            .map_err(program_err(format!("taking the link of {name} on {iface}")))?;
        let link = FdLink::try_from(link).map_err(|e| pins::PinError {
            action: "pinning the link (the kernel attached without a bpf_link; Linux 5.9 or later has them)",
            path: path.clone(),
            error: e.into(),
        })?;
        let pinned = link.pin(&path).map_err(|e| pins::PinError {
            action: "pinning the link",
            path,
            error: e.into(),
        })?;
        self.pinned.push(pinned);
        Ok(Attachment::Attached)
    }

    /// The program that handles `direction`: with PFCP on, the downlink's is
    /// `mecgw_downlink_pfcp`, which judges packets to PFCP sessions' UEs first (one parse
    /// and one lookup for them) and tail-calls `mecgw_downlink` for the rest.
    pub fn entry(&self, direction: Direction) -> &'static str {
        match (direction, self.options.pfcp.is_some()) {
            (Direction::Uplink, _) => names::PROG_UPLINK,
            (Direction::Downlink, false) => names::PROG_DOWNLINK,
            (Direction::Downlink, true) => names::PROG_DOWNLINK_PFCP,
        }
    }

    fn attach(
        &mut self,
        name: &'static str,
        iface: &str,
        mode: AttachMode,
    ) -> Result<XdpLinkId, DatapathError> {
        let prog = xdp_program_mut(&mut self.ebpf, name)?;
        prog.attach(iface, mode.flags())
            .map_err(|source| DatapathError::Program {
                action: format!("attaching {name} to {iface} in {} mode", mode.name()),
                source,
            })
    }

    /// Runs the pass program once on `packet` through BPF_PROG_TEST_RUN.
    pub fn test_run_pass(&mut self, packet: &[u8]) -> Result<TestRunOutcome, DatapathError> {
        test_run(self.xdp_program(names::PROG_PASS)?, packet, 1)
    }

    /// Runs the empty program (`XDP_PASS`, nothing else) `repeat` times: the benchmark baseline.
    pub fn test_run_empty(
        &self,
        packet: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        test_run(self.xdp_program(names::PROG_EMPTY)?, packet, repeat)
    }

    /// Benchmark support: runs `target` `repeat` times on `frame` behind the restore wrapper,
    /// which puts the original frame back before every repetition (undoing `head_shift`, the
    /// target's `bpf_xdp_adjust_head` delta), so every repetition does the real work. `frame`
    /// must be a multiple of 8 bytes, at most [`BENCH_FRAME_MAX`].
    pub fn bench_restored(
        &self,
        target: BenchTarget,
        frame: &[u8],
        head_shift: i32,
        repeat: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        if !frame.len().is_multiple_of(8) || frame.len() > BENCH_FRAME_MAX {
            return Err(DatapathError::BadArgument(format!(
                "a benchmark frame must be a multiple of 8 bytes, at most {BENCH_FRAME_MAX}; got {}",
                frame.len()
            )));
        }
        let mut bench = self
            .bench
            .lock()
            .map_err(|_| DatapathError::Poisoned("a benchmark run"))?;
        let name = match target {
            BenchTarget::Empty => names::PROG_EMPTY,
            BenchTarget::Program(d) => self.entry(d),
            BenchTarget::Floor => names::PROG_BENCH_FLOOR,
        };
        let fd = self
            .xdp_program(name)?
            .fd()
            .map_err(|source| DatapathError::Program {
                action: format!("program {name}"),
                source,
            })?;
        let map = |name: &'static str| move |source| DatapathError::Map { name, source };
        bench
            .target
            .set(0, fd, 0)
            .map_err(map(names::MAP_BENCH_TARGET))?;
        let mut bytes = [0u8; BENCH_FRAME_MAX];
        bytes[..frame.len()].copy_from_slice(frame);
        let value = BenchFrame {
            len: frame.len() as u32,
            head_shift,
            bytes,
        };
        bench
            .frame
            .set(0, value, 0)
            .map_err(map(names::MAP_BENCH_FRAME))?;
        test_run(self.xdp_program(names::PROG_BENCH_RESTORE)?, frame, repeat)
    }

    /// Runs the program of `direction` `repeat` times on `packet` (see the benchmark notes
    /// on what `repeat > 1` measures for programs that rewrite the packet).
    pub fn test_run(
        &self,
        direction: Direction,
        packet: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        test_run(self.xdp_program(self.entry(direction))?, packet, repeat)
    }

    /// Runs the program of `direction` once on `packet` and reports its whole decision.
    ///
    /// The reason, rule and session come from the per-CPU `LAST_DECISION` record, cleared
    /// before the run. Calls are serialised; if another thread test-runs, or attached
    /// programs of this object handle traffic at the same moment, more than one CPU records a
    /// decision and this returns an error rather than guess (use [`FastPath::test_run`]
    /// there).
    pub fn judge(&self, direction: Direction, packet: &[u8]) -> Result<Judged, DatapathError> {
        if !self.options.record_decisions {
            return Err(DatapathError::Unexpected(
                "this fast path was loaded without decision records \
                 (FastPathOptions::record_decisions); use test_run and the counters"
                    .into(),
            ));
        }
        let mut last = self
            .last
            .lock()
            .map_err(|_| DatapathError::Poisoned("a test run"))?;
        let map_err = |source| DatapathError::Map {
            name: names::MAP_LAST_DECISION,
            source,
        };
        let n = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
        let clear =
            PerCpuValues::try_from(vec![Decision::default(); n]).map_err(DatapathError::Io)?;
        last.set(0, clear, 0).map_err(map_err)?;
        let out = self.test_run(direction, packet, 1)?;
        let per_cpu = last.get(&0, 0).map_err(map_err)?;
        let written: Vec<Decision> = per_cpu.iter().filter(|d| d.valid == 1).copied().collect();
        let [d] = written[..] else {
            return Err(DatapathError::Unexpected(format!(
                "{} CPUs recorded a decision for one test run",
                written.len()
            )));
        };
        let verdict = Verdict::from_xdp_action(out.action)
            .ok_or_else(|| DatapathError::Unexpected(format!("XDP action {}", out.action)))?;
        if verdict as u32 != d.verdict {
            return Err(DatapathError::Unexpected(format!(
                "action {} but recorded verdict {}",
                out.action, d.verdict
            )));
        }
        let reason = Reason::from_u32(d.reason)
            .ok_or_else(|| DatapathError::Unexpected(format!("reason {}", d.reason)))?;
        let some = |v: u32| (v != NONE).then_some(v);
        Ok(Judged {
            verdict,
            reason,
            rule: some(d.rule),
            session: some(d.session),
            pdr: some(d.pdr),
            packet: out.data_out,
        })
    }

    /// Sums the per-CPU verdict counters (all programs together), with what previous
    /// instances counted ([`FastPath::adopt_counters`]).
    pub fn verdict_counters(&self) -> Result<Vec<(Verdict, Counter)>, DatapathError> {
        let map = self.counter_map(names::MAP_VERDICTS)?;
        let carried = self.lock_carried()?;
        Verdict::ALL
            .iter()
            .map(|&v| {
                let c = sum(&map, v as u32, names::MAP_VERDICTS)?;
                Ok((v, c.plus(carried.verdict(v))))
            })
            .collect()
    }

    /// Sums the per-CPU reason counters (all programs together), with what previous
    /// instances counted.
    pub fn reason_counters(&self) -> Result<Vec<(Reason, Counter)>, DatapathError> {
        let map = self.counter_map(names::MAP_REASONS)?;
        let carried = self.lock_carried()?;
        Reason::ALL
            .iter()
            .map(|&r| {
                let c = sum(&map, r as u32, names::MAP_REASONS)?;
                Ok((r, c.plus(carried.reason(r))))
            })
            .collect()
    }

    /// The counter of rule `id`, if it is in the installed tables, with what previous
    /// instances counted for it.
    pub fn rule_counter(&self, id: u32) -> Result<Option<Counter>, DatapathError> {
        let w = self.lock_writer()?;
        match w.rule_slots.get(id) {
            None => Ok(None),
            Some(slot) => {
                let c = sum(&w.rule_counters, slot, names::MAP_RULE_COUNTERS)?;
                Ok(Some(c.plus(self.lock_carried()?.rule(id))))
            }
        }
    }

    /// The counters of the rules `ids` (0 for one not in the installed tables), with what
    /// previous instances counted for them: what a scrape shows, read in one batch.
    pub fn rule_counters(&self, ids: &[u32]) -> Result<Vec<(u32, Counter)>, DatapathError> {
        let w = self.lock_writer()?;
        let slots: Vec<Option<u32>> = ids.iter().map(|&id| w.rule_slots.get(id)).collect();
        let len = slots.iter().flatten().map(|&s| s + 1).max().unwrap_or(0);
        let all = read_all(&w.rule_counters, len, names::MAP_RULE_COUNTERS)?;
        let carried = self.lock_carried()?;
        Ok(ids
            .iter()
            .zip(slots)
            .map(|(&id, slot)| {
                let c = slot
                    .and_then(|s| all.get(s as usize).copied())
                    .map_or(Counter::default(), |c| c.plus(carried.rule(id)));
                (id, c)
            })
            .collect())
    }

    /// The counters of the sessions `ids` in the installed tables, summed per direction
    /// (indexed by [`Direction::index`]), with what previous instances counted for them:
    /// what a scrape shows, read in one batch rather than two lookups per session.
    pub fn session_totals(&self, ids: &[u32]) -> Result<[Counter; 2], DatapathError> {
        let w = self.lock_writer()?;
        let slots: Vec<(u32, u32)> = ids
            .iter()
            .filter_map(|&id| w.session_slots.get(id).map(|s| (id, s)))
            .collect();
        let len = slots.iter().map(|&(_, s)| s * 2 + 2).max().unwrap_or(0);
        let all = read_all(&w.session_counters, len, names::MAP_SESSION_COUNTERS)?;
        let carried = self.lock_carried()?;
        let mut totals = [Counter::default(); 2];
        for (id, slot) in slots {
            for dir in [Direction::Uplink, Direction::Downlink] {
                let i = dir.index();
                let c = all
                    .get((slot * 2 + i) as usize)
                    .copied()
                    .unwrap_or_default()
                    .plus(carried.session(id, i));
                totals[i as usize] = totals[i as usize].plus(c);
            }
        }
        Ok(totals)
    }

    /// The counter of session `id` in `direction`, if it is in the installed tables, with what
    /// previous instances counted for it.
    pub fn session_counter(
        &self,
        id: u32,
        direction: Direction,
    ) -> Result<Option<Counter>, DatapathError> {
        let w = self.lock_writer()?;
        match w.session_slots.get(id) {
            None => Ok(None),
            Some(slot) => {
                let c = sum(
                    &w.session_counters,
                    slot * 2 + direction.index(),
                    names::MAP_SESSION_COUNTERS,
                )?;
                let carried = self.lock_carried()?.session(id, direction.index());
                Ok(Some(c.plus(carried)))
            }
        }
    }

    fn counter_map(
        &self,
        name: &'static str,
    ) -> Result<PerCpuArray<&MapData, Counter>, DatapathError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DatapathError::Missing { what: "map", name })?;
        PerCpuArray::try_from(map).map_err(|source| DatapathError::Map { name, source })
    }

    fn xdp_program(&self, name: &'static str) -> Result<&Xdp, DatapathError> {
        let prog = self.ebpf.program(name).ok_or(DatapathError::Missing {
            what: "program",
            name,
        })?;
        prog.try_into().map_err(|source| DatapathError::Program {
            action: format!("{name} is not an XDP program"),
            source,
        })
    }
}

/// The maps besides the flow maps that an instance pins for the next one to carry its
/// counters over ([`FastPath::adopt_counters`]): the counters, and the tables in force, which
/// say whose counter each slot is.
/// The flow maps an instance pins for the next one to harvest what its programs counted
/// after this process's last harvest (FastPath::adopt_flows). The index is not needed: the
/// slots hold their keys.
const PINNED_FOR_FLOWS: [&str; 5] = [
    names::MAP_FLOW_GEN,
    names::MAP_FLOW_ALLOC,
    names::MAP_FLOW_SLOTS[0],
    names::MAP_FLOW_SLOTS[1],
    names::MAP_FLOW_STATS,
];

const PINNED_FOR_COUNTERS: [&str; 14] = [
    names::MAP_CARRIED,
    names::MAP_VERDICTS,
    names::MAP_REASONS,
    names::MAP_RULE_COUNTERS,
    names::MAP_SESSION_COUNTERS,
    names::MAP_ACTIVE,
    names::MAP_SESSIONS[0],
    names::MAP_SESSIONS[1],
    names::MAP_RULES[0],
    names::MAP_RULES[1],
    names::MAP_DST_V4[0],
    names::MAP_DST_V4[1],
    names::MAP_DST_V6[0],
    names::MAP_DST_V6[1],
];

/// Pins map `name` of `ebpf` as `dir/name`.
fn pin_map(ebpf: &Ebpf, name: &'static str, dir: &Path) -> Result<(), DatapathError> {
    let path = dir.join(name);
    ebpf.map(name)
        .ok_or(DatapathError::Missing { what: "map", name })?
        .pin(&path)
        .map_err(|e| {
            DatapathError::Pin(pins::PinError {
                action: "pinning the map",
                path,
                error: e.into(),
            })
        })
}

/// The first `len` entries of the per-CPU counter array `map`, each summed over the CPUs.
fn read_all(
    map: &PerCpuArray<MapData, Counter>,
    len: u32,
    name: &'static str,
) -> Result<Vec<Counter>, DatapathError> {
    use aya::maps::IterableMap as _;
    use std::os::fd::AsFd as _;
    if len == 0 {
        return Ok(Vec::new());
    }
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| DatapathError::Io(e))?;
    counter_batch::sum_all(map.map().fd().as_fd(), len, cpus).map_err(|e| {
        DatapathError::Io(std::io::Error::new(
            e.kind(),
            format!("reading the map {name} in batches: {e}"),
        ))
    })
}

pub(crate) fn sum<T: std::borrow::Borrow<MapData>>(
    map: &PerCpuArray<T, Counter>,
    index: u32,
    name: &'static str,
) -> Result<Counter, DatapathError> {
    let per_cpu = map
        .get(&index, 0)
        .map_err(|source| DatapathError::Map { name, source })?;
    Ok(per_cpu
        .iter()
        .fold(Counter::default(), |acc, c| acc.plus(*c)))
}

fn xdp_program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut Xdp, DatapathError> {
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Missing {
        what: "program",
        name,
    })?;
    prog.try_into().map_err(|source| DatapathError::Program {
        action: format!("{name} is not an XDP program"),
        source,
    })
}

/// Room beyond the input for what a program may add (downlink encapsulation adds 64 bytes).
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

#[cfg(test)]
mod tests {
    use super::{AttachMode, Direction};

    #[test]
    fn names_parse_back_and_unknown_ones_list_the_choices() {
        for m in [AttachMode::Native, AttachMode::Generic] {
            assert_eq!(m.name().parse::<AttachMode>(), Ok(m));
        }
        for d in [Direction::Uplink, Direction::Downlink] {
            assert_eq!(d.name().parse::<Direction>(), Ok(d));
        }
        assert_eq!(
            "driver".parse::<AttachMode>(),
            Err("unknown XDP mode \"driver\": expected \"native\" or \"generic\"".to_string())
        );
        assert!(
            "sideways"
                .parse::<Direction>()
                .unwrap_err()
                .contains("\"uplink\" or \"downlink\"")
        );
    }
}
