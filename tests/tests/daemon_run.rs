//! `mecgw run`, driven as an operator drives it: a config file, signals, the operations port.
//!
//! Each test builds its own pair of namespaces (`mecgw-t-<pid>-<n>-gnb` and `…-mec`) joined
//! by a veth pair, runs the daemon in `mec`, and removes everything when it ends, also when
//! it fails. Needs root; CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::UdpSocket, path::Path, process::Command, time::Duration};

use mecgw_tests::{
    bed::{Bed, sample, tables},
    mecgw_bin, packet,
};

/// Sends `payload` from the gNB namespace to 198.18.0.2:2152 and returns the answer, if any.
fn gtpu_exchange(bed: &Bed, payload: &[u8]) -> Option<Vec<u8>> {
    mecgw_tests::in_netns(&bed.gnb, || {
        let s = UdpSocket::bind("198.18.0.1:2152").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(payload, "198.18.0.2:2152").unwrap();
        let mut buf = [0u8; 2048];
        s.recv_from(&mut buf).ok().map(|(n, _)| buf[..n].to_vec())
    })
    .unwrap()
}

#[test]
fn ready_only_once_attached_and_sigterm_detaches_cleanly() {
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    assert!(bed.xdp_on("t-n3"), "ready, but no XDP program on N3");
    assert!(
        bed.xdp_on("t-local"),
        "ready, but no XDP program on the local link"
    );
    assert_eq!(bed.http("/healthz"), (true, "ok\n".to_string()));

    let status = d.stop();
    assert!(status.success(), "mecgw exited {status}: {}", d.stderr());
    assert!(
        !bed.xdp_on("t-n3") && !bed.xdp_on("t-local"),
        "programs left attached"
    );
}

#[test]
fn a_bad_reload_keeps_the_old_tables_and_says_so() {
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    let before = bed.http("/metrics").1;
    assert_eq!(sample(&before, "mecgw_rules"), 1);

    // A typo'd key: the reload must be refused and the old rule stay in force.
    std::fs::write(
        bed.path("tables.toml"),
        tables("\n[[rules]]\nid = 11\npriorty = 3\naction = \"DROP\"\n"),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let after = bed.wait_for_sample("mecgw_reloads_total{result=\"rejected\"}", 1);
    assert_eq!(sample(&after, "mecgw_rules"), 1);
    assert_eq!(sample(&after, "mecgw_last_reload_rejected"), 1);
    assert!(
        bed.http("/readyz").0,
        "a rejected reload must not take the gateway down"
    );

    // A valid change is applied, and clears the flag.
    std::fs::write(
        bed.path("tables.toml"),
        tables(
            "\n[[rules]]\nid = 11\npriority = 3\naction = \"DROP\"\ndst = [\"198.18.9.0/24\"]\n",
        ),
    )
    .unwrap();
    d.signal(libc::SIGHUP);
    let m = bed.wait_for_sample("mecgw_reloads_total{result=\"ok\"}", 1);
    assert_eq!(sample(&m, "mecgw_rules"), 2);
    assert_eq!(sample(&m, "mecgw_last_reload_rejected"), 0);
    assert!(d.stop().success());
    let log = d.stderr();
    assert!(
        log.contains("reload rejected") && log.contains("tables.toml:"),
        "the log must say the reload was rejected and where: {log}"
    );
}

#[test]
fn echo_requests_get_a_recovery_ie_and_fast_path_counters_move() {
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    let before = bed.http("/metrics").1;
    let signalling_before = sample(
        &before,
        "mecgw_fastpath_reason_packets_total{reason=\"gtp_signalling\"}",
    );

    // Echo Request, S=1, sequence 0x0102: passed up by XDP, answered by the daemon.
    let request = packet::Gtpu::encode(packet::gtp_type::ECHO_REQUEST, 0, Some(0x0102), None, &[]);
    let answer = gtpu_exchange(&bed, &request).expect("no echo response");
    let parsed = packet::Gtpu::parse(&answer).unwrap();
    assert_eq!(parsed.msg_type, packet::gtp_type::ECHO_RESPONSE);
    assert_eq!(parsed.sequence, Some(0x0102));
    assert_eq!(
        parsed.payload[0], 14,
        "the response must carry a Recovery IE"
    );
    assert_eq!(parsed.payload[1], 1, "first start: restart counter 1");

    let after = bed.http("/metrics").1;
    assert_eq!(
        sample(&after, "mecgw_gtpu_signalling_total{type=\"echo_request\"}"),
        1
    );
    assert!(
        sample(
            &after,
            "mecgw_fastpath_reason_packets_total{reason=\"gtp_signalling\"}"
        ) > signalling_before,
        "the uplink program did not count the echo request"
    );
    assert!(d.stop().success());
}

/// Runs `mecgw run` with `config` as its file; returns the exit code and stderr.
fn run_with_config(path: &Path, config: &str) -> (Option<i32>, String) {
    std::fs::write(path, config).unwrap();
    let out = Command::new(mecgw_bin().unwrap())
        .args(["run", "--config"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn config_errors_name_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let (code, err) = run_with_config(
        &path,
        "[interfaces]\nn3 = \"a\"\nlocal = \"b\"\n\n[datapath]\ntables = \"t.toml\"\ncolour = 1\n",
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("{}:7:1: unknown field `colour`", path.display())),
        "{err}"
    );

    // An interface that does not exist is named, with where it came from.
    let (code, err) = run_with_config(
        &path,
        "[interfaces]\nn3 = \"mgw-no-such\"\nlocal = \"lo\"\n\n[datapath]\ntables = \"t.toml\"\n",
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("interfaces.n3") && err.contains("mgw-no-such"),
        "{err}"
    );
}

#[test]
fn mecgw_run_serves_the_grpc_api_over_mtls_and_a_created_rule_reaches_the_fast_path() {
    use mecgw::api::proto::{
        CreateTrafficRuleRequest, TrafficRule, TrafficRuleAction, TrafficRuleState,
        traffic_rules_service_client::TrafficRulesServiceClient,
    };
    use mecgw_tests::api::{Site, connect};

    let bed = Bed::new();
    let site = Site::new().unwrap();
    let config = bed.write("");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[api]\nlisten = \"127.0.0.1:50051\"\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\n\
         client_ca = \"{d}/ca.pem\"\ndrain_ms = 100\n\n[api.apps.operator]\nrole = \"operator\"\n\
         sans = [\"{op}\"]\n",
        d = site.dir().display(),
        op = mecgw_tests::api::OPERATOR_URI,
    ));
    std::fs::write(&config, text).unwrap();
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    let operator = site.operator().unwrap();
    let ca = site.ca.cert_pem();
    let addr: std::net::SocketAddr = "127.0.0.1:50051".parse().unwrap();
    // The client's sockets must live in the gateway's namespace: run a runtime there.
    let (created, refused) = mecgw_tests::in_netns(&bed.mec, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let channel = connect(addr, &ca, Some(&operator)).await.unwrap();
            let mut rules = TrafficRulesServiceClient::new(channel);
            let created = rules
                .create_traffic_rule(CreateTrafficRuleRequest {
                    rule: Some(TrafficRule {
                        id: 50,
                        priority: 1,
                        state: TrafficRuleState::Active as i32,
                        action: TrafficRuleAction::Drop as i32,
                        destination_prefixes: vec!["198.51.100.0/24".to_string()],
                        ..TrafficRule::default()
                    }),
                })
                .await;
            // Without a client certificate the handshake or the call must fail.
            let refused = match connect(addr, &ca, None).await {
                Err(_) => true,
                Ok(ch) => TrafficRulesServiceClient::new(ch)
                    .create_traffic_rule(CreateTrafficRuleRequest { rule: None })
                    .await
                    .is_err(),
            };
            (created.map(|_| ()), refused)
        })
    })
    .unwrap();
    created.expect("the operator's CreateTrafficRule");
    assert!(refused, "a client without a certificate was served");

    let m = bed.http("/metrics").1;
    assert_eq!(
        sample(&m, "mecgw_rules"),
        2,
        "the API's rule is not in the fast path"
    );
    assert!(
        m.contains("mecgw_api_requests_total{"),
        "the API's counters are not on /metrics:\n{m}"
    );
    assert!(d.stop().success());
}

/// Idle clients cannot take the operations port: when it serves as many connections as it
/// may (256), a new one closes the oldest that is not in the middle of a request (counted),
/// and the rest are closed when their headers do not come within the header read timeout.
/// /healthz, /metrics and a SIGHUP reload work WHILE the idle connections are held.
#[test]
fn idle_clients_cannot_starve_the_operations_port() {
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    // More idle connections than the port serves at once (256), none sending a byte.
    let idle: Vec<std::net::TcpStream> = mecgw_tests::in_netns(&bed.mec, || {
        (0..300)
            .map(|_| std::net::TcpStream::connect("127.0.0.1:9464").unwrap())
            .collect()
    })
    .unwrap();
    // While they are held: the probes and the reload (whose result is read on /metrics).
    assert_eq!(bed.http("/healthz"), (true, "ok\n".to_string()));
    assert!(bed.http("/readyz").0);
    d.signal(libc::SIGHUP);
    let m = bed.wait_for_sample("mecgw_reloads_total{result=\"ok\"}", 1);
    assert!(
        sample(&m, "mecgw_ops_connections_evicted_total") >= 44,
        "300 idle connections against a limit of 256:\n{m}"
    );
    // Every one is closed by mecgw, none left hanging (30 s is far past the 5 s timeout).
    mecgw_tests::read_until_closed_by_peer(idle, "idle connection");
    assert_eq!(bed.http("/healthz"), (true, "ok\n".to_string()));
    let (ok, m) = bed.http("/metrics");
    assert!(ok);
    // Nothing had to be refused: there was always an idle connection to close.
    assert_eq!(sample(&m, "mecgw_ops_connections_refused_total"), 0, "{m}");
    let status = d.stop();
    assert!(status.success(), "mecgw exited {status}: {}", d.stderr());
}

/// A flood of GTP-U Error Indications (anyone on N3 can send them) is counted, each one, but
/// writes 20 log lines a minute, not one per datagram; what was held back is counted too.
#[test]
fn a_flood_of_error_indications_is_counted_but_not_logged_line_by_line() {
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);
    let indication = packet::Gtpu::encode(packet::gtp_type::ERROR_INDICATION, 0, None, None, &[]);
    mecgw_tests::in_netns(&bed.gnb, || {
        let s = UdpSocket::bind("198.18.0.1:0").unwrap();
        for i in 0..2000 {
            s.send_to(&indication, "198.18.0.2:2152").unwrap();
            if i % 50 == 49 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })
    .unwrap();
    // Wait until the count stops moving (a datagram may be lost on the way: count what came).
    let series = "mecgw_gtpu_signalling_total{type=\"error_indication\"}";
    let mut counted = 0;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = sample(&bed.http("/metrics").1, series);
        if now == counted && now > 0 {
            break;
        }
        counted = now;
    }
    assert!(
        counted >= 1000,
        "only {counted} of 2000 indications counted"
    );
    let m = bed.http("/metrics").1;
    assert_eq!(
        sample(&m, "mecgw_log_lines_suppressed_total"),
        counted - 20,
        "{m}"
    );
    assert!(d.stop().success());
    let log = d.stderr();
    let lines = log.matches("GTP-U error indication").count();
    assert_eq!(lines, 20, "{lines} log lines for {counted} indications");
}

/// Waits up to 30 s for `d` to exit by itself; its exit status and log.
fn exit_of(d: &mut mecgw_tests::bed::Daemon) -> (std::process::ExitStatus, String) {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = d.try_wait() {
            return (status, d.stderr());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "mecgw went on although it cannot serve"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port in use, or an API certificate that does not load, stops the start before anything
/// is attached: no daemon that says it is ready and does not serve.
#[test]
fn a_taken_port_or_a_bad_certificate_stops_the_start_before_anything_is_attached() {
    let bed = Bed::new();
    let config = bed.write("");

    // The operations port, taken by someone else in the daemon's namespace.
    let taken = mecgw_tests::in_netns(&bed.mec, || {
        std::net::TcpListener::bind("127.0.0.1:9464").unwrap()
    })
    .unwrap();
    let mut d = bed.start(&config);
    let (status, log) = exit_of(&mut d);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("metrics.listen 127.0.0.1:9464: cannot listen"),
        "{log}"
    );
    assert!(!bed.xdp_on("t-n3") && !bed.xdp_on("t-local"), "{log}");
    assert!(!log.contains("mecgw is ready"), "{log}");
    drop(taken);

    // An API certificate that is not one.
    let site = mecgw_tests::api::Site::new().unwrap();
    let good_cert = std::fs::read(site.dir().join("server.pem")).unwrap();
    std::fs::write(site.dir().join("server.pem"), "not a certificate\n").unwrap();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[api]\nlisten = \"127.0.0.1:50051\"\ncert = \"{d}/server.pem\"\nkey = \"{d}/server.key\"\n\
         client_ca = \"{d}/ca.pem\"\n\n[api.apps.operator]\nrole = \"operator\"\nsans = [\"{op}\"]\n",
        d = site.dir().display(),
        op = mecgw_tests::api::OPERATOR_URI,
    ));
    std::fs::write(&config, text).unwrap();
    let mut d = bed.start(&config);
    let (status, log) = exit_of(&mut d);
    assert!(!status.success(), "{log}");
    assert!(log.contains("server.pem"), "the file is named: {log}");
    nothing_attached(&bed, &log);

    // A client CA that is not one.
    std::fs::write(site.dir().join("server.pem"), good_cert).unwrap();
    std::fs::write(site.dir().join("ca.pem"), "not a certificate\n").unwrap();
    let mut d = bed.start(&config);
    let (status, log) = exit_of(&mut d);
    assert!(!status.success(), "{log}");
    assert!(log.contains("ca.pem"), "the file is named: {log}");
    nothing_attached(&bed, &log);
}

/// The daemon exited without attaching a program (now or before it failed) or saying ready.
fn nothing_attached(bed: &Bed, log: &str) {
    assert!(!bed.xdp_on("t-n3") && !bed.xdp_on("t-local"), "{log}");
    assert!(!log.contains("XDP program attached"), "{log}");
    assert!(!log.contains("mecgw is ready"), "{log}");
}

/// A taken GTP-U or PFCP port, and a bad `[egress]` value, stop the start before anything is
/// attached; the `[egress]` error is located like every other configuration error.
#[test]
fn a_taken_udp_port_or_a_bad_egress_value_stops_the_start_before_anything_is_attached() {
    let bed = Bed::new();
    let config = bed.write("");
    let plain = std::fs::read_to_string(&config).unwrap();

    // The GTP-U port (dual-stack [::]:2152 by default), taken in the daemon's namespace.
    let taken = mecgw_tests::in_netns(&bed.mec, || std::net::UdpSocket::bind("[::]:2152").unwrap())
        .unwrap();
    let mut d = bed.start(&config);
    let (status, log) = exit_of(&mut d);
    assert!(!status.success(), "{log}");
    assert!(log.contains("gtpu.listen [::]:2152: cannot bind"), "{log}");
    nothing_attached(&bed, &log);
    drop(taken);

    // The PFCP port.
    std::fs::write(
        &config,
        format!(
            "{plain}\n[pfcp]\nlisten = \"198.18.0.2:8805\"\nnode_id = \"198.18.0.2\"\n\
             peers = [\"198.18.0.1/32\"]\n"
        ),
    )
    .unwrap();
    let taken = mecgw_tests::in_netns(&bed.mec, || {
        std::net::UdpSocket::bind("198.18.0.2:8805").unwrap()
    })
    .unwrap();
    let mut d = bed.start(&config);
    let (status, log) = exit_of(&mut d);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("pfcp.listen 198.18.0.2:8805: cannot bind"),
        "{log}"
    );
    nothing_attached(&bed, &log);
    drop(taken);

    // A bad [egress] value, reported at its key's line and column.
    let text = format!(
        "{plain}\n[egress]\nread_ahead = 0\n\n[[egress.destinations]]\nname = \"stats\"\n\
         region = \"EU-FR\"\nsink = {{ type = \"file\", dir = \"out\" }}\n"
    );
    let line = text.lines().position(|l| l == "read_ahead = 0").unwrap() + 1;
    std::fs::write(&config, text).unwrap();
    let mut d = bed.start(&config);
    let (status, log) = exit_of(&mut d);
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!(
            "{}:{line}:1: egress.read_ahead: read_ahead must be > 0",
            config.display()
        )),
        "{log}"
    );
    nothing_attached(&bed, &log);
}

/// A SIGTERM that arrives while a large tables file is being reloaded is heard at once: the
/// reload runs off the signal loop, is abandoned, and mecgw stops cleanly with the programs
/// detached.
#[test]
fn sigterm_during_a_long_reload_is_heard_and_the_reload_abandoned() {
    use std::fmt::Write as _;
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    // 60,000 sessions: reading, checking, compiling and installing them takes a while.
    let mut sessions = String::new();
    for i in 0..60_000u32 {
        let _ = write!(
            sessions,
            "\n[[sessions]]\nid = {}\nuplink_teid = {}\ndownlink_teid = {}\nue_ipv4 = \"10.{}.{}.{}\"\ngnb = \"198.18.0.1\"\nqfi = 9\n",
            100 + i,
            0x10_0000 + i,
            0x20_0000 + i,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        );
    }
    std::fs::write(bed.path("tables.toml"), tables(&sessions)).unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(100));
    d.signal(libc::SIGTERM);
    let (status, log) = exit_of(&mut d);
    assert!(status.success(), "{log}");
    assert!(
        log.contains("SIGTERM during a reload: the reload is abandoned"),
        "the SIGTERM waited for the reload: {log}"
    );
    assert!(!bed.xdp_on("t-n3") && !bed.xdp_on("t-local"), "{log}");
}
