//! The status page on the operations port (`/`), in a real browser: headless Chromium from
//! Debian driven by Playwright (PyPI), both installed by `cargo xtask setup`. While G-PDUs
//! flow through the fast path (a LOCAL rule), tests/browser/status_page.py checks that every
//! number the page shows matches /metrics, that the page updates, that the parts that are off
//! say so, and that the console has no errors; it leaves a screenshot (set
//! MECGW_STATUS_SCREENSHOT to keep it somewhere, e.g. docs/status-page.png).
//!
//! Needs root (namespaces, XDP); CI runs as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::UdpSocket,
    path::Path,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use mecgw_tests::{bed::Bed, packet::*};

#[test]
fn the_status_page_shows_what_metrics_says_and_updates_in_a_real_browser() {
    let bed = Bed::new();
    let config = bed.write("");
    let mut d = bed.start(&config);
    bed.wait_ready(&mut d);

    // G-PDUs of session 1 (TEID 0x1000, UE 198.19.0.1) to the edge prefix of rule 10 (LOCAL),
    // every 20 ms until the browser is done.
    let inner = ipv4(
        v4("198.19.0.1"),
        v4("198.18.1.5"),
        17,
        64,
        0,
        &udp(40000, 7, b"status"),
    );
    let gpdu = gtp(255, 0x1000, None, &[ul_container(9)], &inner);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, gnb) = (Arc::clone(&stop), bed.gnb.clone());
        std::thread::spawn(move || {
            mecgw_tests::in_netns(&gnb, || {
                let s = UdpSocket::bind("198.18.0.1:2152").unwrap();
                let mut sent = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    s.send_to(&gpdu, "198.18.0.2:2152").unwrap();
                    sent += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                sent
            })
            .unwrap()
        })
    };

    let screenshot = std::env::var_os("MECGW_STATUS_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| bed.path("status-page.png"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser/status_page.py");
    let out = Command::new("ip")
        .args(["netns", "exec", &bed.mec, "python3"])
        .arg(&script)
        .args(["--url", "http://127.0.0.1:9464/", "--screenshot"])
        .arg(&screenshot)
        .output()
        .expect("python3 with playwright (installed by cargo xtask setup)");
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sent > 0);
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    assert!(d.stop().success());
}
