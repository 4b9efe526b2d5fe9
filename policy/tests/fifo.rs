//! A FIFO where a state file should be is refused at once, not waited on.
//!
//! A test binary of its own: making the FIFO forks `mkfifo`, and a child forked while a test
//! of the library drops a budget ledger's lock file holds that lock until it execs, so the
//! ledger tests that reopen a ledger at that moment would find it in use.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mecgw_policy::files::read_limited;

#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let dir = std::env::temp_dir().join(format!("mecgw-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("p");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    let e = read_limited(&fifo, 10).unwrap_err();
    assert!(e.to_string().contains("is a FIFO"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
