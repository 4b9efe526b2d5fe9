//! `e2e_bench` (run by `cargo xtask bench e2e`): packet rates and round-trip times through
//! the testbed, for native XDP, generic XDP and the userspace datapath, in one run.
//!
//! The testbed comes up once. For each run, each datapath in turn (interleaved, so drift on
//! this shared machine hits all alike) gets a fresh `mecgw run` with one LOCAL rule for the
//! edge, and two measurements:
//!
//! **Kernel-speed packet rate** (the headline). A socket sender and a socket echo cost more
//! per packet than the XDP gateway does, so on a 2-core machine they, not the gateway, set the
//! rate. Here the sender is BPF_PROG_TEST_RUN in live-frames mode in the `ran` namespace: a
//! tiny XDP program (`mecgw_bench_tx`) puts a prebuilt frame back and returns XDP_TX on
//! `mgw-tb-gnb`, so the kernel transmits it for real into the gateway's N3 interface, at a
//! cost of a few hundred nanoseconds a frame. Uplink, the frame is a G-PDU of session 1 (the
//! gNB's MACs and addresses, TEID 0x1000, QFI 9) carrying UDP from the UE to the edge's echo
//! port: the gateway steers it LOCAL (decapsulates it and sends it to `mgw-tb-svc`). Downlink,
//! the sender sits in `edge` on `mgw-tb-svc` and sends UDP from the edge to UE 1: the gateway
//! encapsulates it and sends it to the gNB. At the far end a sink (`mecgw_bench_sink`, native
//! XDP) counts every frame that arrives and drops it, so no socket receives anything; its
//! byte count checks that what arrived has the decapsulated (encapsulated) length.
//!
//! The sender runs flat out (`--flat-ms`, default 1 s, after a 100 ms warm-up) from 8
//! threads pinned to CPU 0: *offered* = frames sent / sending time, *delivered* = frames the
//! sink counted / the same time, *loss* = 1 − counted / sent. The figure compared is the
//! delivered rate, with the loss beside it.
//!
//! Why flat out and not a ladder of paced rates ("highest rate with loss ≤ 1 %"): every
//! live-frames call ends with a wait of 1-25 ms while the kernel tears down the call's page
//! pool, so calls cannot be spaced finely, and pacing would mean bursts of hundreds to
//! thousands of frames at full speed. A datapath's loss would then measure its burst
//! tolerance, not its sustained rate. So this part reports what each datapath delivers when
//! offered more than it can take, and at what loss; the echo ladder below gives rates at the
//! same loss (≤ `--loss`), for the whole testbed.
//!
//! The sender's CPU also runs what the kernel does for its frames in softirq (the veth
//! hand-off, native or generic XDP, the sink), as a NIC's receive CPU would; the offered rate
//! therefore depends on the datapath. The userspace datapath's threads run on the other core.
//! Frames from a live-frames run occupy a page each, so the userspace datapath's AF_PACKET
//! socket (kernel-default buffer) holds fewer of them than of the echo ladder's small frames.
//!
//! Some kernels refuse live-frames mode outright (EPERM even for root; this build machine's
//! 6.18 Firecracker kernel does). The benchmark then says so once and sends the same frame
//! from an AF_PACKET socket on the same link instead ([`SocketSender`]), from the same
//! threads; the report names the sender. A socket frame costs the sender several times a
//! live frame, so those rates are lower bounds.
//!
//! **Round-trip times through the echo.** `mecgw-gnbsim --blast` sends UDP G-PDUs from 16 UEs
//! to the edge's UDP echo, and every answer comes back encapsulated through the same
//! datapath: a ladder of offered rates (×1.25 a step, `--step-ms` each) up to the first rate
//! whose loss exceeds `--loss` (default 1 %), reporting the sustained rate with its RTT
//! p50/p99, and one `--blast`-packet blast as fast as the sender goes. These figures are the
//! whole testbed's (socket sender, echo, gateway), not the gateway's alone. `--no-echo` skips
//! them.
//!
//! Reported: medians over runs, and ratios to the userspace datapath.

use std::{
    net::IpAddr,
    path::Path,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::{Parser, builder::RangedU64ValueParser};
use mecgw::datapath::{AttachMode, FastPath, FastPathOptions};
use mecgw_bench::median;
use mecgw_testbed::{
    self as testbed, DatapathChoice, EDGE, GNB, Gateway, LOCAL, N3, Port, in_netns,
    packet::{Gtpu, PduType, inner::udp},
};

const UES: u32 = 16;
const RULES: &str = "[[rules]]\nid = 10\npriority = 10\naction = \"LOCAL\"\n\
                     dst = [\"198.18.1.0/24\", \"2001:db8:0:1::/64\"]\n";

#[derive(Parser)]
#[command(
    about = "mecgw end-to-end benchmark: packet rates and RTTs through the testbed for native XDP, generic XDP and the userspace datapath"
)]
struct Opts {
    /// Runs; each measures every datapath in turn. Medians over runs are reported.
    #[arg(long, default_value_t = 3, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    runs: usize,
    /// Milliseconds per step of the echo ladder.
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(50..))]
    step_ms: u64,
    /// The highest loss (a fraction, below 1) at which a rate counts as sustained.
    #[arg(long, default_value_t = 0.01, value_parser = fraction)]
    loss: f64,
    /// First offered rate of the echo ladder, packets/s (at least 100).
    #[arg(long, default_value_t = 1_000.0, value_parser = rate)]
    start_rate: f64,
    /// Highest offered rate of the echo ladder, packets/s.
    #[arg(long, default_value_t = 3_000_000.0)]
    max_rate: f64,
    /// Packets in the echo blast (as fast as the sender goes).
    #[arg(long, default_value_t = 200_000)]
    blast: u64,
    /// Skip the measurements through the echo.
    #[arg(long = "no-echo", action = clap::ArgAction::SetFalse)]
    echo: bool,
    /// Milliseconds the live-frames sender runs flat out.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
    flat_ms: u64,
    /// Print every ladder step and the gateway's reason counters.
    #[arg(long)]
    verbose: bool,
    /// The datapaths to measure, comma-separated (the ratios need userspace).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = DatapathChoice::ALL)]
    datapaths: Vec<DatapathChoice>,
}

/// A loss fraction in [0, 1).
fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..1.0).contains(&f) => Ok(f),
        Ok(_) => Err("must be in [0, 1)".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A start rate of at least 100 packets/s.
fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r >= 100.0 => Ok(r),
        Ok(_) => Err("must be at least 100".into()),
        Err(e) => Err(e.to_string()),
    }
}

// ---------------------------------------------------------------------------------------
// Kernel-speed packet rate: live-frames sender, gateway, counting sink.

/// Which way the generated frames cross the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// gNB → N3 → uplink program (LOCAL: decapsulate) → local → edge.
    Uplink,
    /// Edge → local → downlink program (encapsulate) → N3 → gNB.
    Downlink,
}

impl Way {
    const ALL: [Way; 2] = [Way::Uplink, Way::Downlink];

    const fn name(self) -> &'static str {
        match self {
            Way::Uplink => "uplink",
            Way::Downlink => "downlink",
        }
    }

    /// Where the sender sends from and where the sink counts.
    const fn ends(self) -> (&'static Port, &'static Port) {
        match self {
            Way::Uplink => (&GNB, &EDGE),
            Way::Downlink => (&EDGE, &GNB),
        }
    }
}

/// UE 1 of the simulator's numbering: session 1, uplink TEID `UL_TEID_BASE`.
const UE: [u8; 4] = [198, 19, 0, 1];
/// Bytes of the inner UDP payload uplink: the frame is then 112 bytes (a multiple of 8, as
/// the generator's restore loop needs) and the decapsulated one 68.
const PAYLOAD: usize = 26;
/// Outer IPv4 + UDP + GTP-U with a PDU Session Container: what LOCAL strips, and what the
/// downlink program adds.
const TUNNEL: usize = 20 + 8 + 16;

fn mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let mut m = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    anyhow::ensure!(parts.len() == 6, "MAC {s:?}");
    for (b, p) in m.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16).with_context(|| format!("MAC {s:?}"))?;
    }
    Ok(m)
}

fn ether(dst: &Port, src: &Port, ip_packet: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut f = mac(dst.mac)?.to_vec();
    f.extend_from_slice(&mac(src.mac)?);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(ip_packet);
    Ok(f)
}

fn v4(s: &str) -> anyhow::Result<IpAddr> {
    s.parse().with_context(|| format!("address {s:?}"))
}

/// The frame the sender repeats, and the length the sink should see.
fn frame(way: Way) -> anyhow::Result<(Vec<u8>, usize)> {
    let ue = IpAddr::from(UE);
    let edge = v4(EDGE.v4)?;
    let payload = [0x6du8; PAYLOAD];
    match way {
        Way::Uplink => {
            let inner = udp(ue, edge, 40_000, 7, &payload);
            let gtp = Gtpu::g_pdu(
                testbed::UL_TEID_BASE,
                Some((PduType::Uplink, testbed::QFI)),
                &inner,
            );
            let outer = udp(v4(GNB.v4)?, v4(testbed::UPF.v4)?, 2152, 2152, &gtp);
            let f = ether(&N3, &GNB, &outer)?;
            let len = f.len() - TUNNEL;
            Ok((f, len))
        }
        Way::Downlink => {
            // Four more payload bytes: 72, a multiple of 8.
            let inner = udp(edge, ue, 7, 40_000, &[0x6du8; PAYLOAD + 4]);
            let f = ether(&LOCAL, &EDGE, &inner)?;
            let len = f.len() + TUNNEL;
            Ok((f, len))
        }
    }
}

/// One flat-out run.
#[derive(Clone, Copy, Default, Debug)]
struct Step {
    offered_pps: f64,
    delivered_pps: f64,
    loss: f64,
    /// The highest delivered rate of the sender-count ladder whose loss was within `--loss`
    /// (0: none was).
    within_loss_pps: f64,
    /// Mean length of what the sink counted (0 if nothing arrived).
    mean_len: f64,
    /// The sender's mean time per frame, in ns, over the step's calls (the kernel's figure
    /// for live frames, the sending threads' CPU time for the socket sender).
    sender_ns: f64,
    /// The socket sender stood in for live frames (see [`SocketSender`]).
    socket: bool,
}

/// Sender threads (see [`flat_out`]).
const SENDERS: usize = 8;
/// Sender threads of the runs that look for the highest rate within `--loss`.
const LOSS_LADDER: [usize; 3] = [1, 2, 4];
/// Frames per flush (the kernel's default batch).
const BATCH: u32 = 64;
/// Frames per system call: some milliseconds of sending, so that the end of a run is near
/// the requested time.
const CALL: u32 = 8_192;
/// Time for frames still queued (the userspace datapath's socket) to arrive before counting.
const DRAIN: Duration = Duration::from_millis(100);

/// Sends as fast as [`SENDERS`] threads can for `dur`, then counts what reached the sink.
///
/// Each live-frames system call ends with a wait of milliseconds (the kernel tears down the
/// run's page pool), asleep rather than busy, so several threads overlap those waits; each
/// call sends [`CALL`] frames in batches of [`BATCH`].
fn flat_out(
    fp: &FastPath,
    sender: &Sender<'_>,
    dur: Duration,
    senders: usize,
) -> anyhow::Result<Step> {
    let before = fp.bench_sink_counter()?;
    let start = Instant::now();
    let shares: Vec<anyhow::Result<Share>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..senders)
            .map(|_| scope.spawn(|| send_for(sender, dur, start)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a sender thread panicked")))
            })
            .collect()
    });
    let mut sent = 0u64;
    let mut sending = Duration::ZERO;
    let mut end = dur;
    for sh in shares {
        let sh = sh?;
        sent += sh.sent;
        sending += sh.sending;
        end = end.max(sh.end);
    }
    let secs = end.as_secs_f64();
    std::thread::sleep(DRAIN);
    let after = fp.bench_sink_counter()?;
    let packets = after.packets.wrapping_sub(before.packets);
    let bytes = after.bytes.wrapping_sub(before.bytes);
    Ok(Step {
        offered_pps: sent as f64 / secs,
        delivered_pps: packets as f64 / secs,
        loss: if sent == 0 {
            0.0
        } else {
            (1.0 - packets as f64 / sent as f64).max(0.0)
        },
        within_loss_pps: 0.0,
        mean_len: if packets == 0 {
            0.0
        } else {
            bytes as f64 / packets as f64
        },
        sender_ns: if sent == 0 {
            0.0
        } else {
            sending.as_nanos() as f64 / sent as f64
        },
        socket: matches!(sender, Sender::Socket(_)),
    })
}

/// What one sender thread did.
struct Share {
    sent: u64,
    sending: Duration,
    end: Duration,
}

fn send_for(sender: &Sender<'_>, dur: Duration, start: Instant) -> anyhow::Result<Share> {
    let mut sh = Share {
        sent: 0,
        sending: Duration::ZERO,
        end: dur,
    };
    while start.elapsed() < dur {
        anyhow::ensure!(!testbed::interrupted(), "interrupted");
        let (sent, took) = sender.send(CALL)?;
        sh.sending += took;
        sh.sent += sent;
    }
    sh.end = start.elapsed();
    Ok(sh)
}

/// What generates the frames: live frames where the kernel allows them, else a socket.
enum Sender<'a> {
    Live(mecgw::datapath::live::LiveSender<'a>),
    Socket(SocketSender),
}

impl Sender<'_> {
    /// Sends `frames` frames; returns how many went out and the time they took.
    fn send(&self, frames: u32) -> anyhow::Result<(u64, Duration)> {
        match self {
            Sender::Live(live) => Ok((u64::from(frames), live.send(frames, BATCH)? * frames)),
            Sender::Socket(socket) => socket.send(frames),
        }
    }
}

/// Whether `e` is the kernel refusing live-frames mode itself (EPERM from
/// `bpf_prog_test_run`), which some kernels do even for root (this build machine's
/// 6.18 Firecracker kernel refuses it for a bare `return XDP_DROP` program too).
fn live_frames_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::EPERM)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The sender where the kernel refuses live frames: an AF_PACKET socket bound to the link,
/// past the qdisc (`PACKET_QDISC_BYPASS`, so a frame goes straight to the veth's transmit),
/// `sendmmsg` of up to [`BATCH`] copies of the frame a call. A frame costs the sending CPU a
/// system call's share and an skb, several times what a live frame costs, so on the same CPU
/// it offers less: the rates it yields are lower bounds of what the datapath takes. Its
/// frames are ordinary skbs, not a page each.
struct SocketSender {
    fd: std::os::fd::OwnedFd,
    frame: Vec<u8>,
}

impl SocketSender {
    /// Opens the socket in the calling thread's network namespace, on the link with index
    /// `ifindex` there.
    fn open(ifindex: u32, frame: &[u8]) -> anyhow::Result<Self> {
        use std::os::fd::FromRawFd as _;
        let last = || std::io::Error::last_os_error();
        // Protocol 0: the socket sends and receives nothing.
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        anyhow::ensure!(raw >= 0, "AF_PACKET socket: {}", last());
        // SAFETY: `raw` is a descriptor we just opened and own alone.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt(2) reading one c_int we own, of the size passed, during the call.
        let r = unsafe {
            libc::setsockopt(
                raw,
                libc::SOL_PACKET,
                libc::PACKET_QDISC_BYPASS,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(r == 0, "PACKET_QDISC_BYPASS: {}", last());
        // SAFETY: sockaddr_ll is plain data for which all-zero is valid.
        let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        at.sll_family = libc::AF_PACKET as libc::c_ushort;
        at.sll_ifindex = i32::try_from(ifindex).context("ifindex")?;
        // SAFETY: bind(2) reading the sockaddr_ll we own, of the size passed, during the call.
        let r = unsafe {
            libc::bind(
                raw,
                (&raw const at).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        anyhow::ensure!(
            r == 0,
            "binding the AF_PACKET socket to ifindex {ifindex}: {}",
            last()
        );
        Ok(SocketSender {
            fd,
            frame: frame.to_vec(),
        })
    }

    /// Sends `frames` copies of the frame. A full device queue (ENOBUFS, EAGAIN) is waited
    /// out, for at most a second without progress.
    fn send(&self, frames: u32) -> anyhow::Result<(u64, Duration)> {
        use std::os::fd::AsRawFd as _;
        let mut iov = libc::iovec {
            iov_base: self.frame.as_ptr().cast_mut().cast(),
            iov_len: self.frame.len(),
        };
        // SAFETY: mmsghdr is plain data for which all-zero is valid.
        let mut msgs: [libc::mmsghdr; BATCH as usize] = unsafe { std::mem::zeroed() };
        for m in &mut msgs {
            m.msg_hdr.msg_iov = &raw mut iov;
            m.msg_hdr.msg_iovlen = 1;
        }
        let cpu = thread_cpu();
        let mut progress = Instant::now();
        let mut sent = 0u32;
        while sent < frames {
            let n = (frames - sent).min(BATCH);
            // SAFETY: sendmmsg(2) on our socket with `n` ≤ BATCH headers we own, each naming
            // `iov`, which names the frame; the kernel only reads them during the call.
            let r = unsafe { libc::sendmmsg(self.fd.as_raw_fd(), msgs.as_mut_ptr(), n, 0) };
            if r > 0 {
                sent += r as u32;
                progress = Instant::now();
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR)
                    if progress.elapsed() < Duration::from_secs(1) =>
                {
                    anyhow::ensure!(!testbed::interrupted(), "interrupted");
                    std::thread::yield_now();
                }
                _ => anyhow::bail!("sendmmsg on the AF_PACKET socket: {e}"),
            }
        }
        Ok((u64::from(sent), thread_cpu().saturating_sub(cpu)))
    }
}

/// The calling thread's CPU time (so that sender threads sharing a CPU do not count each
/// other's turns).
fn thread_cpu() -> Duration {
    // SAFETY: timespec is plain data for which all-zero is valid.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: clock_gettime(2) writing the timespec we own; it cannot fail for this clock.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Keeps the calling thread (and the sender threads it starts, which inherit it) on CPU 0,
/// so the sender and the softirq work its frames cause share one core and the other core
/// stays for everything else (the userspace datapath's threads among it). Returns false
/// where that is not allowed; the bench goes on unpinned.
fn pin_to_cpu0() -> bool {
    // SAFETY: cpu_set_t is plain data for which all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes bit 0 of the set we own.
    unsafe { libc::CPU_SET(0, &mut set) };
    // SAFETY: sched_setaffinity(2) for the calling thread (pid 0), reading `set` of the size
    // we pass during the call only.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) == 0 }
}

/// The ifindex of `port`'s link, from `ip -j` in its namespace.
fn ifindex(port: &Port) -> anyhow::Result<u32> {
    let out = testbed::capture(&["ip", "-netns", port.netns, "-j", "link", "show", port.link])?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("ip -j for {}", port.link))?;
    v[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .with_context(|| format!("no ifindex for {}", port.link))
}

fn live(way: Way, o: &Opts) -> anyhow::Result<Step> {
    let (from, to) = way.ends();
    let (bytes, expect_len) = frame(way)?;
    let index = ifindex(from)?;
    // A fresh object each time: its sink counter starts at zero and its links go with it.
    // As the daemon loads it: no per-frame decision record.
    let mut fp = FastPath::load_with(FastPathOptions {
        record_decisions: false,
        ..FastPathOptions::default()
    })?;
    in_netns(to.netns, || {
        fp.attach_bench_sink(to.link, AttachMode::Native)
    })??;
    let fp = &fp;
    let mut within = 0.0f64;
    let r = in_netns(from.netns, || -> anyhow::Result<Step> {
        if !pin_to_cpu0() {
            eprintln!(
                "warning: cannot pin the sender to CPU 0 ({})",
                std::io::Error::last_os_error()
            );
        }
        let live = fp.live_sender(&bytes, index)?;
        let sender = match live.send(1, 1) {
            Ok(_) => Sender::Live(live),
            Err(e) if live_frames_refused(&e) => {
                static TOLD: std::sync::Once = std::sync::Once::new();
                TOLD.call_once(|| {
                    eprintln!(
                        "warning: this kernel refuses BPF_PROG_TEST_RUN's live-frames mode \
                         ({e}); sending from an AF_PACKET socket instead, whose rates are \
                         lower bounds (the sender, not the datapath, is the limit)"
                    )
                });
                Sender::Socket(SocketSender::open(index, &bytes)?)
            }
            Err(e) => return Err(e.into()),
        };
        // Warm up: caches, page pools and the gateway's maps.
        flat_out(fp, &sender, Duration::from_millis(100), SENDERS)?;
        // Fewer sender threads offer less: the highest delivered rate among these with loss
        // within `--loss` is the datapath's rate at that loss (a lower bound when even the
        // full sender stays within it).
        for senders in LOSS_LADDER {
            let l = flat_out(fp, &sender, Duration::from_millis(o.flat_ms), senders)?;
            if o.verbose {
                println!("    {} with {senders} sender(s): {l:?}", way.name());
            }
            if l.loss <= o.loss {
                within = within.max(l.delivered_pps);
            }
        }
        let l = flat_out(fp, &sender, Duration::from_millis(o.flat_ms), SENDERS)?;
        if o.verbose {
            println!("    {}: {l:?}", way.name());
        }
        anyhow::ensure!(
            l.delivered_pps > 0.0,
            "{}: nothing reached the sink on {}",
            way.name(),
            to.link
        );
        if (l.mean_len - expect_len as f64).abs() > 0.5 {
            eprintln!(
                "warning: {}: frames at {} average {:.1} bytes, expected {expect_len}",
                way.name(),
                to.link,
                l.mean_len
            );
        }
        Ok(l)
    })??;
    Ok(Step {
        within_loss_pps: within,
        ..r
    })
}

// ---------------------------------------------------------------------------------------
// Round-trip times through the echo, with the socket-based simulator.

/// One blast's figures.
#[derive(Clone, Copy, Default, Debug)]
struct Blast {
    answered_pps: f64,
    loss: f64,
    p50_us: f64,
    p99_us: f64,
}

fn blast(bin: &Path, packets: u64, rate: f64) -> anyhow::Result<Blast> {
    let probe = format!("blast=udp:{}:7", EDGE.v4);
    let (n, r) = (packets.to_string(), (rate as u64).to_string());
    let ues = UES.to_string();
    let report = testbed::gnbsim(
        bin,
        &[
            "--upf",
            testbed::UPF.v4,
            "--ues",
            &ues,
            "--probe",
            &probe,
            "--blast",
            &n,
            "--rate",
            &r,
        ],
    )?;
    let b = &report["blast"];
    let f = |k: &str| b[k].as_f64().unwrap_or(f64::NAN);
    Ok(Blast {
        answered_pps: f("answered_pps"),
        loss: f("loss"),
        p50_us: f("rtt_p50_us"),
        p99_us: f("rtt_p99_us"),
    })
}

/// One datapath's echo figures in one run.
#[derive(Clone, Copy, Default, Debug)]
struct Echo {
    sustained_pps: f64,
    at_sustained: Blast,
    max: Blast,
}

fn echo(bin: &Path, o: &Opts) -> anyhow::Result<Echo> {
    // Warm up: neighbours resolved, sockets and caches hot.
    blast(bin, 2_000, 20_000.0)?;
    let mut s = Echo::default();
    let mut rate = o.start_rate;
    while rate <= o.max_rate {
        anyhow::ensure!(!testbed::interrupted(), "interrupted");
        let packets = ((rate * o.step_ms as f64) / 1000.0).ceil() as u64;
        let b = blast(bin, packets, rate)?;
        if b.loss > o.loss {
            break;
        }
        s.sustained_pps = rate;
        s.at_sustained = b;
        rate *= 1.25;
    }
    s.max = blast(bin, o.blast, 0.0)?;
    Ok(s)
}

// ---------------------------------------------------------------------------------------

/// Everything measured for one datapath in one run.
#[derive(Clone, Copy, Default, Debug)]
struct Sample {
    live: [Step; 2],
    echo: Echo,
}

fn main() -> ExitCode {
    let opts = Opts::parse();
    testbed::catch_interrupts();
    match run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e_bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(o: &Opts) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let bin = exe.parent().context("no directory for this binary")?;
    for tool in ["mecgw", "mecgw-gnbsim", "mecgw-edge", "mecgw-core"] {
        anyhow::ensure!(
            bin.join(tool).exists(),
            "{} is missing: build with `cargo build --release -p mecgw -p mecgw-testbed --bins`",
            bin.join(tool).display()
        );
    }
    let bed = testbed::up()?;
    // veth hands XDP-transmitted frames only to a peer that runs NAPI. With native XDP the
    // gateway's own program turns it on for N3 and local; for generic XDP and the userspace
    // datapath GRO does (as for the gNB and the edge in `testbed::up`), the same for all
    // three, like a real NIC's receive path.
    for p in [&N3, &LOCAL] {
        bed.exec(p.netns, &["ethtool", "-K", p.link, "gro", "on"])?;
    }
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); o.datapaths.len()];
    for run in 0..o.runs {
        for (i, &dp) in o.datapaths.iter().enumerate() {
            let dir = tempfile::tempdir()?;
            testbed::write_gateway_config_for(dir.path(), UES, RULES, dp)?;
            let mut gw = Gateway::start(bin, dir.path(), 1, &[])?;
            let s = measure(bin, o).with_context(|| dp.name());
            let _ = gw.stop();
            let s = s?;
            for (w, way) in Way::ALL.iter().enumerate() {
                let l = &s.live[w];
                println!(
                    "run {}/{} {:<12} {:<8} offered {:>9.0} pps, delivered {:>9.0} pps \
                     (loss {:.1}%, sender {:.0} ns a frame)",
                    run + 1,
                    o.runs,
                    dp.name(),
                    way.name(),
                    l.offered_pps,
                    l.delivered_pps,
                    l.loss * 100.0,
                    l.sender_ns
                );
            }
            if o.echo {
                println!(
                    "run {}/{} {:<12} echo     sustained {:>10.0} pps (loss {:.2}%, RTT p50 {:.0} µs \
                     p99 {:.0} µs); flat out {:>9.0} pps answered (loss {:.1}%)",
                    run + 1,
                    o.runs,
                    dp.name(),
                    s.echo.sustained_pps,
                    s.echo.at_sustained.loss * 100.0,
                    s.echo.at_sustained.p50_us,
                    s.echo.at_sustained.p99_us,
                    s.echo.max.answered_pps,
                    s.echo.max.loss * 100.0
                );
            }
            samples[i].push(s);
        }
    }
    report(o, &samples)
}

fn measure(bin: &Path, o: &Opts) -> anyhow::Result<Sample> {
    let mut s = Sample::default();
    for (w, way) in Way::ALL.iter().enumerate() {
        s.live[w] = live(*way, o).with_context(|| way.name())?;
        if o.verbose {
            // The gateway's own account of what it decided, to set beside the sink's count.
            let metrics = testbed::ops_get("/metrics")?.unwrap_or_default();
            for line in metrics.lines().filter(|l| {
                l.starts_with("mecgw_fastpath_reason_packets_total{") && !l.ends_with(" 0")
            }) {
                println!("    after {}: {line}", way.name());
            }
        }
    }
    if o.echo {
        s.echo = echo(bin, o)?;
    }
    Ok(s)
}

/// The sender of direction `w`'s kernel-speed figures.
fn sender_name(samples: &[Vec<Sample>], w: usize) -> &'static str {
    let socket = samples
        .iter()
        .flatten()
        .filter(|s| s.live[w].socket)
        .count();
    match socket {
        0 => "live-frames",
        n if n == samples.iter().flatten().count() => "AF_PACKET socket",
        _ => "live-frames or AF_PACKET socket",
    }
}

fn report(o: &Opts, samples: &[Vec<Sample>]) -> anyhow::Result<()> {
    let med = |i: usize, f: &dyn Fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    // Without the userspace datapath the ratios are NaN; the figures still print.
    let user = o
        .datapaths
        .iter()
        .position(|&d| d == DatapathChoice::Userspace);
    let base = |f: &dyn Fn(&Sample) -> f64| user.map_or(f64::NAN, |u| med(u, f));
    for (w, way) in Way::ALL.iter().enumerate() {
        let base_rate = base(&|s| s.live[w].delivered_pps);
        println!(
            "\n{} at kernel speed ({} sender on CPU 0 → gateway → XDP sink), \
             {} ms flat out, medians of {} runs",
            way.name(),
            sender_name(samples, w),
            o.flat_ms,
            o.runs
        );
        println!(
            "{:<12} {:>14} {:>14} {:>8} {:>8}",
            "datapath", "offered", "delivered", "loss", "×user"
        );
        for (i, dp) in o.datapaths.iter().enumerate() {
            let rate = med(i, &|s| s.live[w].delivered_pps);
            println!(
                "{:<12} {:>10.0} pps {:>10.0} pps {:>7.1}% {:>7.2}×",
                dp.name(),
                med(i, &|s| s.live[w].offered_pps),
                rate,
                med(i, &|s| s.live[w].loss) * 100.0,
                rate / base_rate
            );
        }
    }
    // The figure the goal names: each datapath's highest rate measured with loss within
    // `--loss`, by either sender (the live-frames ladder or the echo ladder).
    for (w, way) in Way::ALL.iter().enumerate() {
        let at_loss = |s: &Sample| s.live[w].within_loss_pps.max(s.echo.sustained_pps);
        let base_rate = base(&at_loss);
        println!(
            "\n{} at the same loss: highest rate measured with loss ≤ {}% ({} \
             sender ladder of 1/2/4 threads, or the echo ladder), medians of {} runs",
            way.name(),
            o.loss * 100.0,
            sender_name(samples, w),
            o.runs
        );
        println!("{:<12} {:>14} {:>8}", "datapath", "rate", "×user");
        for (i, dp) in o.datapaths.iter().enumerate() {
            let rate = med(i, &at_loss);
            println!(
                "{:<12} {:>10.0} pps {:>7.2}×",
                dp.name(),
                rate,
                rate / base_rate
            );
        }
    }
    if !o.echo {
        return Ok(());
    }
    let base_rate = base(&|s| s.echo.sustained_pps);
    let base_max = base(&|s| s.echo.max.answered_pps);
    println!(
        "\nthrough the echo (mecgw-gnbsim, 16 UEs), medians of {} runs; sustained = highest \
         offered rate (×1.25 steps of {} ms) with loss ≤ {}%",
        o.runs,
        o.step_ms,
        o.loss * 100.0
    );
    println!(
        "{:<12} {:>12} {:>8} {:>9} {:>9} {:>9} {:>14} {:>9} {:>8}",
        "datapath", "sustained", "×user", "loss", "RTT p50", "RTT p99", "flat out", "loss", "×user"
    );
    for (i, dp) in o.datapaths.iter().enumerate() {
        let rate = med(i, &|s| s.echo.sustained_pps);
        let max = med(i, &|s| s.echo.max.answered_pps);
        println!(
            "{:<12} {:>8.0} pps {:>7.2}× {:>8.2}% {:>6.0} µs {:>6.0} µs {:>10.0} pps {:>8.1}% {:>7.2}×",
            dp.name(),
            rate,
            rate / base_rate,
            med(i, &|s| s.echo.at_sustained.loss) * 100.0,
            med(i, &|s| s.echo.at_sustained.p50_us),
            med(i, &|s| s.echo.at_sustained.p99_us),
            max,
            med(i, &|s| s.echo.max.loss) * 100.0,
            max / base_max
        );
    }
    Ok(())
}
