//! `outbox run` under systemd's notify protocol, end to end: the test binds
//! the Unix datagram socket systemd would (`NOTIFY_SOCKET`), runs the real
//! binary, and asserts the messages and their order: `READY=1` first (the
//! listeners already serving), `WATCHDOG=1` at about half of
//! `WATCHDOG_USEC`, `STOPPING=1` when the drain begins and nothing after.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::cli::{Daemon, http};
use common::process::tool;
use common::process::wait_for;

/// Every datagram received on `sock`, with when it arrived.
fn collect(sock: UnixDatagram) -> Arc<Mutex<Vec<(Instant, String)>>> {
    let got = Arc::new(Mutex::new(Vec::new()));
    let out = got.clone();
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                out.lock().unwrap().push((Instant::now(), msg));
            }
        }
    });
    got
}

/// The first line of each message: the state it announces.
fn states(got: &Mutex<Vec<(Instant, String)>>) -> Vec<String> {
    got.lock()
        .unwrap()
        .iter()
        .map(|(_, m)| m.lines().next().unwrap_or("").to_string())
        .collect()
}

#[test]
fn ready_then_watchdog_then_stopping_over_notify_socket() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("notify.sock");
    let got = collect(UnixDatagram::bind(&path).unwrap());
    let out = t.path().join("out.ndjson");
    let data = t.path().join("data");
    let d = Daemon::start(
        &[
            "run",
            "--data-dir",
            data.to_str().unwrap(),
            "--sink",
            &format!("out=file:{}", out.display()),
            "--ingest-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            // 1 s: fed every 500 ms.
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    wait_for("READY=1", 20, || !states(&got).is_empty());
    let first = got.lock().unwrap()[0].1.clone();
    assert_eq!(first, "READY=1\nSTATUS=delivering to 1 sink\n");
    // Ready means serving: both listeners answer.
    assert_eq!(
        http(d.admin.unwrap(), "GET", "/healthz", &[], b"").status,
        200
    );
    let r = d.post(b"{\"n\":1}\n");
    assert_eq!(r.status, 200, "{}", r.body);

    wait_for("three WATCHDOG=1", 20, || {
        states(&got).iter().filter(|s| *s == "WATCHDOG=1").count() >= 3
    });
    let (code, err) = d.stop();
    assert_eq!(code, 0, "{err}");
    wait_for("STOPPING=1", 20, || {
        states(&got).contains(&"STOPPING=1".to_string())
    });
    // Anything sent after STOPPING=1 would have arrived by now.
    std::thread::sleep(Duration::from_millis(300));

    let all = got.lock().unwrap().clone();
    let s = states(&got);
    assert_eq!(s[0], "READY=1", "{s:?}");
    assert_eq!(s.last().map(String::as_str), Some("STOPPING=1"), "{s:?}");
    let middle = &s[1..s.len() - 1];
    assert!(
        middle.len() >= 3 && middle.iter().all(|m| m == "WATCHDOG=1"),
        "{s:?}"
    );
    assert_eq!(all.last().unwrap().1, "STOPPING=1\nSTATUS=draining\n");
    // Fed at about half the timeout: every gap under the 1 s timeout, and
    // about 500 ms on average.
    let feeds: Vec<Instant> = all
        .iter()
        .filter(|(_, m)| m.starts_with("WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect();
    let gaps: Vec<Duration> = feeds.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1000)),
        "{gaps:?}"
    );
    let mean = (feeds[feeds.len() - 1] - feeds[0]) / (feeds.len() as u32 - 1);
    assert!(
        mean >= Duration::from_millis(400) && mean <= Duration::from_millis(750),
        "mean gap {mean:?}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "{\"n\":1}\n");
}

#[test]
fn stdin_mode_says_ready_and_stopping_and_skips_a_watchdog_meant_for_another_pid() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("notify.sock");
    let got = collect(UnixDatagram::bind(&path).unwrap());
    let out = t.path().join("out.ndjson");
    let mut child = common::cli::bin()
        .args([
            "run",
            "--data-dir",
            t.path().join("data").to_str().unwrap(),
            "--sink",
            &format!("out=file:{}", out.display()),
        ])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "100000")
        // systemd sets WATCHDOG_PID to the main process; this is not ours.
        .env("WATCHDOG_PID", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("READY=1", 20, || !states(&got).is_empty());
    // Long enough for a 100 ms watchdog to have been fed a few times.
    std::thread::sleep(Duration::from_millis(500));
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{\"n\":1}\n{\"n\":2}\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    wait_for("STOPPING=1", 20, || states(&got).len() >= 2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(states(&got), ["READY=1", "STOPPING=1"]);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "{\"n\":1}\n{\"n\":2}\n"
    );
}

#[test]
fn the_example_unit_parses_and_is_hardened() {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/outbox.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=outbox",
        "--data-dir /var/lib/outbox",
    ] {
        assert!(text.contains(want), "examples/outbox.service lacks {want}");
    }
    let Some(mut verify) = tool("systemd-analyze", "apt-get install systemd") else {
        return;
    };
    // verify wants the ExecStart binary to exist: point it at the one
    // just built, in a copy.
    let t = tempfile::tempdir().unwrap();
    let copy = t.path().join("outbox.service");
    std::fs::write(
        &copy,
        text.replace("/usr/local/bin/outbox", env!("CARGO_BIN_EXE_outbox")),
    )
    .unwrap();
    let o = verify.arg("verify").arg(&copy).output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && said.trim().is_empty(),
        "verify: {said}"
    );
    // Exposure at most 1.5 of 10 ("OK"); the threshold is in tenths.
    let o = tool("systemd-analyze", "apt-get install systemd")
        .unwrap()
        .args(["security", "--offline=true", "--threshold=15"])
        .arg(&unit)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "security: {said}");
    assert!(
        said.contains("Overall exposure level for outbox.service: 1."),
        "{said}"
    );
}
