//! `mecgw`: the gateway daemon and its operator CLI.

mod audit_cli;
mod ctl;
mod policy_cli;

use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand};
use mecgw::datapath::{AttachMode, FastPath};
use tracing::{info, warn};

#[derive(Parser)]
#[command(name = "mecgw", version, about = "5G MEC edge gateway")]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true, env = "MECGW_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: attach the XDP programs, install the tables, load the policy, serve
    /// the operations port; reload on SIGHUP; on SIGTERM/SIGINT drain, detach (unless
    /// keep_datapath) and exit. A previous instance's pinned programs are replaced without a gap.
    Run {
        /// Configuration file (TOML; see examples/mecgw.toml).
        #[arg(long, env = "MECGW_CONFIG")]
        config: std::path::PathBuf,
        #[command(flatten)]
        overrides: mecgw::daemon::Overrides,
    },
    /// Run every frame of a capture through the real XDP program (BPF_PROG_TEST_RUN, no
    /// attach) and write what it did: check a rule set against a capture before deploying it.
    Replay {
        /// Tables file (sessions, rules, interfaces; see examples/tables.toml).
        #[arg(long)]
        tables: std::path::PathBuf,
        /// Input capture (pcap, Ethernet link type).
        #[arg(long = "in")]
        input: std::path::PathBuf,
        /// Output capture: the output of every frame not dropped, in input order.
        #[arg(long = "out")]
        output: std::path::PathBuf,
        /// One JSON line per input frame: index, verdict, rule, session, reason, len_in,
        /// len_out (0 when dropped).
        #[arg(long)]
        verdicts: Option<std::path::PathBuf>,
        /// Which program: uplink (N3 side) or downlink (local-services side).
        #[arg(long, default_value = "uplink")]
        direction: mecgw::datapath::Direction,
    },
    /// Attach the counting pass-through XDP program to an interface and report what it sees.
    ///
    /// Use it to check that a host can load and attach mecgw's XDP programs. The program is
    /// detached on exit (Ctrl-C, SIGTERM or when --duration elapses).
    Attach {
        /// Interface to attach to.
        #[arg(long)]
        iface: String,
        /// XDP attach mode: native (driver) or generic (skb).
        #[arg(long, default_value = "native")]
        mode: AttachMode,
        /// Detach and exit after this many seconds (default: run until signalled).
        #[arg(long)]
        duration: Option<u64>,
    },
    /// The fast path's state pinned in bpffs (links and program arrays): see it, remove it.
    Datapath {
        #[command(subcommand)]
        command: DatapathCommand,
    },
    /// The egress audit log: verify its hash chain.
    Audit {
        #[command(subcommand)]
        command: audit_cli::AuditCommand,
    },
    /// Privacy policies: check, explain, test and apply them.
    Policy {
        #[command(subcommand)]
        command: policy_cli::PolicyCommand,
    },
    /// The privacy budget ledger: verify its hash chain, or reset it after damage (audited).
    Budget {
        #[command(subcommand)]
        command: policy_cli::BudgetCommand,
    },
    /// Operator CLI over the local gRPC API (mTLS): status, rules, sessions, services,
    /// budget, egress, as tables or --json.
    #[command(after_help = ctl::EXIT_CODES)]
    Ctl(ctl::CtlArgs),
    /// Print a shell completion script for mecgw (e.g. `mecgw completions bash`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write man pages: mecgw.1 and one per subcommand (mecgw-ctl-status.1, ...).
    Man {
        /// Directory to write them into (created if missing).
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum DatapathCommand {
    /// List the pinned XDP links (interface, link and program ids) and instances of this
    /// network namespace.
    Status {
        #[command(flatten)]
        pins: PinArgs,
    },
    /// Remove the pinned links and program arrays of this network namespace: the programs
    /// detach from the interfaces (when a running mecgw exits, if one holds them). For
    /// uninstalling, or after a stop with keep_datapath.
    Detach {
        #[command(flatten)]
        pins: PinArgs,
    },
}

#[derive(clap::Args)]
struct PinArgs {
    /// Configuration file, for its [xdp] pin_dir.
    #[arg(long, env = "MECGW_CONFIG")]
    config: Option<std::path::PathBuf>,
    /// The pin root (replaces the config's; default /sys/fs/bpf/mecgw).
    #[arg(long)]
    pin_dir: Option<std::path::PathBuf>,
}

impl PinArgs {
    fn dir(&self) -> anyhow::Result<mecgw::datapath::pins::PinDir> {
        let root = match (&self.pin_dir, &self.config) {
            (Some(root), _) => root.clone(),
            (None, Some(config)) => {
                mecgw::daemon::Config::load(config, &mecgw::daemon::Overrides::default())?
                    .xdp
                    .pin_dir
            }
            (None, None) => mecgw::datapath::pins::DEFAULT_ROOT.into(),
        };
        Ok(mecgw::datapath::pins::PinDir::for_this_netns(&root)?)
    }
}

fn datapath_command(command: DatapathCommand) -> anyhow::Result<()> {
    match command {
        DatapathCommand::Status { pins } => {
            let dir = pins.dir()?;
            println!("pins: {}", dir.path().display());
            let links = dir.links()?;
            if links.is_empty() {
                println!("no pinned links");
            }
            for (iface, info) in links {
                match info {
                    Some(i) if i.ifindex == 0 => println!(
                        "link {iface}: defunct (the interface is gone), link {} program {}",
                        i.link_id, i.program_id
                    ),
                    Some(i) => println!(
                        "link {iface}: ifindex {} link {} program {}",
                        i.ifindex, i.link_id, i.program_id
                    ),
                    None => println!("link {iface}: unreadable"),
                }
            }
            for instance in dir.instances()? {
                println!("instance {}", instance.display());
            }
            Ok(())
        }
        DatapathCommand::Detach { pins } => {
            let dir = pins.dir()?;
            let d = dir.detach_all()?;
            if d.links.is_empty() && d.instances == 0 {
                println!("nothing pinned under {}", dir.path().display());
            } else {
                println!(
                    "detached: links {} unpinned, {} instance(s) removed",
                    if d.links.is_empty() {
                        "none".to_string()
                    } else {
                        d.links.join(", ")
                    },
                    d.instances
                );
            }
            Ok(())
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return ctl::parse_failure(&e, std::env::args_os()),
    };
    init_logging(cli.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mecgw: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Command::Ctl(args) = cli.command {
        // Its own exit codes (see `mecgw ctl --help`), not this function's 0/1.
        return runtime.block_on(ctl::run(args));
    }
    let result = runtime.block_on(dispatch(cli.command));
    // Blocking work still running here was abandoned on purpose (a reload under way at
    // SIGTERM): the process does not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mecgw: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MECGW_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: journald, files and pipes get plain text.
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn replay(opts: mecgw::replay::ReplayOptions) -> anyhow::Result<()> {
    let s = mecgw::replay::replay(&opts)?;
    eprintln!(
        "mecgw replay: {} frames ({}): {} passed, {} dropped, {} redirected, {} not run; output in {}",
        s.packets,
        opts.direction.name(),
        s.pass,
        s.drop,
        s.redirect,
        s.not_run,
        opts.output.display()
    );
    Ok(())
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Replay {
            tables,
            input,
            output,
            verdicts,
            direction,
        } => replay(mecgw::replay::ReplayOptions {
            tables,
            input,
            output,
            verdicts,
            direction,
        }),
        Command::Attach {
            iface,
            mode,
            duration,
        } => attach(&iface, mode, duration.map(Duration::from_secs)).await,
        Command::Run { config, overrides } => {
            let config = mecgw::daemon::Config::load(&config, &overrides)?;
            mecgw::daemon::run(config).await
        }
        Command::Datapath { command } => datapath_command(command),
        Command::Audit { command } => audit_cli::run(command),
        Command::Policy { command } => policy_cli::run(command),
        Command::Budget { command } => policy_cli::run_budget(command),
        // `main` runs it before this, for its own exit codes.
        Command::Ctl(_) => anyhow::bail!("mecgw ctl must be run through main"),
        Command::Completions { shell } => ctl::docs::completions(Cli::command(), shell),
        Command::Man { dir } => ctl::docs::man_pages(Cli::command(), &dir),
    }
}

async fn attach(iface: &str, mode: AttachMode, duration: Option<Duration>) -> anyhow::Result<()> {
    let mut fast_path = FastPath::load()?;
    fast_path
        .attach_pass(iface, mode)
        .with_context(|| format!("interface {iface}"))?;
    info!(%iface, mode = mode.name(), "XDP pass program attached");

    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(deadline);
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => { warn!("SIGINT: detaching"); break }
            _ = sigterm.recv() => { warn!("SIGTERM: detaching"); break }
            _ = tick.tick() => {
                for (verdict, c) in fast_path.verdict_counters()? {
                    if c.packets > 0 {
                        info!(verdict = verdict.name(), packets = c.packets, bytes = c.bytes, "counters");
                    }
                }
            }
        }
    }
    let totals = fast_path.verdict_counters()?;
    drop(fast_path); // detaches: the bpf_link closes with the object
    for (verdict, c) in totals {
        println!(
            "{iface} {:<8} packets={} bytes={}",
            verdict.name(),
            c.packets,
            c.bytes
        );
    }
    info!(%iface, "XDP program detached");
    Ok(())
}
