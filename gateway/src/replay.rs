//! `mecgw replay`: run every frame of a capture through the real XDP program with
//! BPF_PROG_TEST_RUN and record what it did, so an operator can check a rule set against a
//! real capture before deploying it.
//!
//! Owns the replay loop and its output formats (pcap of surviving frames, JSON lines of
//! verdicts); it never judges a packet itself — the kernel program does.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Write},
    path::{Path, PathBuf},
};

use mecgw_ebpf::Verdict;
use serde::Serialize;

use crate::{
    datapath::{DatapathError, Direction, FastPath, TablesError, compile},
    pcap::{self, PcapError},
};

/// Frames shorter than an Ethernet header: the kernel will not test-run them (no NIC
/// delivers one), so replay reports them as not run.
pub const MIN_FRAME: usize = 14;

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub tables: PathBuf,
    pub input: PathBuf,
    pub output: PathBuf,
    pub verdicts: Option<PathBuf>,
    pub direction: Direction,
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error(transparent)]
    Tables(#[from] TablesError),
    #[error("{path}: {source}")]
    Capture {
        path: String,
        #[source]
        source: PcapError,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// An output names the input (or the other output): writing it would destroy what is
    /// being read, or mix two outputs.
    #[error("{output} is the same file as {input}: give the output another name")]
    SameFile { input: String, output: String },
}

/// The longest frame BPF_PROG_TEST_RUN places whole in the packet's linear data (see
/// [`crate::datapath::model::TEST_RUN_LINEAR`]). Longer frames become multi-buffer frames,
/// which the programs (loaded as `xdp.frags`) judge whole; only what the kernel refuses
/// (more fragments than MAX_SKB_FRAGS: 3,520 + 17 × 4,096 = 73,152 bytes on a default
/// kernel) is reported as `not_run`.
pub const MAX_TEST_RUN_LINEAR: usize = crate::datapath::model::TEST_RUN_LINEAR;

/// Whether `a` and `b` name the same existing file (links and `..` included).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// One line of the verdicts file.
#[derive(Serialize)]
struct VerdictLine<'a> {
    index: u64,
    verdict: &'a str,
    rule: Option<u32>,
    session: Option<u32>,
    reason: &'a str,
    len_in: usize,
    len_out: usize,
}

/// Counts of what happened, for the summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub packets: u64,
    pub pass: u64,
    pub drop: u64,
    pub redirect: u64,
    /// Frames the kernel could not run (shorter than 14 bytes or too large for a test run).
    pub not_run: u64,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> ReplayError + '_ {
    move |source| ReplayError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Replays `opts.input` through the program for `opts.direction` loaded with `opts.tables`.
pub fn replay(opts: &ReplayOptions) -> Result<Summary, ReplayError> {
    // Each output against what was named before it: the input, then the frames' output.
    let mut earlier = vec![&opts.input];
    for output in std::iter::once(&opts.output).chain(opts.verdicts.as_ref()) {
        if let Some(other) = earlier
            .iter()
            .find(|e| **e == output || same_file(e, output))
        {
            return Err(ReplayError::SameFile {
                input: other.display().to_string(),
                output: output.display().to_string(),
            });
        }
        earlier.push(output);
    }
    let tables = compile::load(&opts.tables)?;
    let capture = |source| ReplayError::Capture {
        path: opts.input.display().to_string(),
        source,
    };
    let input = File::open(&opts.input).map_err(io_err(&opts.input))?;
    // Frames, frames/s and time left, on a terminal only.
    let progress = crate::progress::Progress::for_input(&opts.input, "frames");
    let mut reader = pcap::Reader::new(BufReader::new(progress.reader(input))).map_err(capture)?;
    let fast_path = FastPath::load()?;
    fast_path.install(&tables)?;

    let out = File::create(&opts.output).map_err(io_err(&opts.output))?;
    let mut writer =
        pcap::Writer::new(BufWriter::new(out), reader.nanos()).map_err(io_err(&opts.output))?;
    let mut verdicts = match &opts.verdicts {
        Some(p) => Some((
            BufWriter::new(File::create(p).map_err(io_err(p))?),
            p.as_path(),
        )),
        None => None,
    };
    let mut summary = Summary::default();
    while let Some(record) = reader.next_record().map_err(capture)? {
        let index = summary.packets;
        summary.packets += 1;
        if summary.packets % 4096 == 0 {
            progress.items(summary.packets);
        }
        let len_in = record.data.len();
        let judged = if len_in < MIN_FRAME {
            None
        } else {
            match fast_path.judge(opts.direction, &record.data) {
                Ok(j) => Some(j),
                // A multi-buffer frame with more fragments than the kernel takes (or, on an
                // older kernel without multi-buffer test runs, more than one page).
                Err(DatapathError::Program { .. }) if len_in > MAX_TEST_RUN_LINEAR => None,
                Err(e) => return Err(e.into()),
            }
        };
        let line = match &judged {
            None => {
                summary.not_run += 1;
                VerdictLine {
                    index,
                    verdict: "not_run",
                    rule: None,
                    session: None,
                    reason: if len_in < MIN_FRAME {
                        "shorter_than_ethernet_header"
                    } else {
                        "too_large_for_test_run"
                    },
                    len_in,
                    len_out: 0,
                }
            }
            Some(j) => {
                match j.verdict {
                    Verdict::Pass => summary.pass += 1,
                    Verdict::Drop => summary.drop += 1,
                    Verdict::Redirect | Verdict::Tx => summary.redirect += 1,
                }
                let dropped = j.verdict == Verdict::Drop;
                if !dropped {
                    writer
                        .write(record.ts_sec, record.ts_frac, &j.packet)
                        .map_err(io_err(&opts.output))?;
                }
                VerdictLine {
                    index,
                    verdict: j.verdict.name(),
                    rule: j.rule,
                    session: j.session,
                    reason: j.reason.name(),
                    len_in,
                    len_out: if dropped { 0 } else { j.packet.len() },
                }
            }
        };
        if let Some((w, path)) = verdicts.as_mut() {
            let json = serde_json::to_string(&line).map_err(|e| ReplayError::Io {
                path: path.display().to_string(),
                source: e.into(),
            })?;
            writeln!(w, "{json}").map_err(io_err(path))?;
        }
    }
    progress.finish();
    writer.finish().map_err(io_err(&opts.output))?;
    if let Some((mut w, path)) = verdicts {
        w.flush().map_err(io_err(path))?;
    }
    Ok(summary)
}
