//! Helpers for the end-to-end tests of the `outbox` binary: run it, start
//! it as a daemon and find its ports, talk HTTP/1.1 to it, and a tiny
//! webhook receiver. Everything stays on 127.0.0.1.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::config::{HOOK_SECRET, HOOK_SECRET_ENV};

pub use super::process::bin;

/// Runs the binary to completion with `stdin` as its input.
pub fn run(args: &[&str], stdin: &[u8]) -> Output {
    run_env(args, &[], stdin)
}

/// The webhook secret's variable and value, as `Daemon::start` takes them
/// (see [`super::config::Config::webhook`]).
pub const HOOK: (&str, &str) = (HOOK_SECRET_ENV, HOOK_SECRET);

/// `outbox run --config CFG` to completion with [`HOOK`] set and `stdin`
/// as its input.
pub fn run_config(cfg: &Path, stdin: &[u8]) -> Output {
    run_env(&["run", "--config", cfg.to_str().unwrap()], &[HOOK], stdin)
}

/// [`run_config`], which must exit 0.
pub fn run_config_ok(cfg: &Path, stdin: &[u8]) -> Output {
    let o = run_config(cfg, stdin);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    o
}

/// [`run`] with the variables `envs` set.
pub fn run_env(args: &[&str], envs: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = bin()
        .envs(envs.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn outbox");
    let mut input = child.stdin.take().expect("stdin");
    // The child may exit before it reads (a config error): a broken pipe
    // here is not the test's failure; its exit code and output are.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait outbox")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// `outbox dump --format json` of a stopped outbox.
pub fn dump_json(dir: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "dump",
        "--data-dir",
        dir.to_str().unwrap(),
        "--format",
        "json",
    ];
    args.extend_from_slice(extra);
    let o = run(&args, b"");
    assert_eq!(code(&o), 0, "dump failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("dump json")
}

/// A running `outbox run` with its stderr collected.
pub struct Daemon {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    pub ingest: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

impl Daemon {
    /// Starts `outbox run ARGS` and waits until each listener it was given
    /// is announced.
    pub fn start(args: &[&str], envs: &[(&str, &str)]) -> Daemon {
        Self::try_start(args, envs).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `outbox run --config CFG` with ingest and admin listening on
    /// ephemeral loopback ports.
    pub fn listening(cfg: &Path, envs: &[(&str, &str)]) -> Daemon {
        Self::start(&Self::listening_args(cfg), envs)
    }

    /// `outbox run --config CFG --ingest-listen 127.0.0.1:0 EXTRA...`, no
    /// admin listener.
    pub fn ingesting(cfg: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let mut args = vec![
            "run",
            "--config",
            cfg.to_str().expect("utf-8 config path"),
            "--ingest-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Self::start(&args, envs)
    }

    /// POSTs NDJSON `body` to ingest, without a token.
    pub fn post(&self, body: &[u8]) -> Reply {
        http(
            self.ingest.expect("an ingest listener"),
            "POST",
            "/v1/records",
            &[("Content-Type", "application/x-ndjson")],
            body,
        )
    }

    /// The arguments of [`Daemon::listening`]: `run --config CFG` with
    /// ingest and admin on ephemeral loopback ports.
    pub fn listening_args(cfg: &Path) -> [&str; 7] {
        [
            "run",
            "--config",
            cfg.to_str().expect("utf-8 config path"),
            "--ingest-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ]
    }

    /// As [`Daemon::start`], but a daemon that exits (or stays silent for
    /// 30 s) before it announces its listeners is an `Err` with its exit
    /// code and stderr.
    pub fn try_start(args: &[&str], envs: &[(&str, &str)]) -> Result<Daemon, String> {
        let mut cmd = bin();
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn outbox run");
        let err = child.stderr.take().expect("stderr");
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = BufReader::new(out).read_to_end(&mut sink);
        });
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let want_ingest = args.contains(&"--ingest-listen");
        let want_admin = args.contains(&"--admin-listen");
        let mut d = Daemon {
            child,
            lines,
            ingest: None,
            admin: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while (want_ingest && d.ingest.is_none()) || (want_admin && d.admin.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let code = d.child.wait().ok().and_then(|s| s.code());
                    return Err(format!(
                        "daemon exited (code {code:?}) before announcing its listeners: {}",
                        d.stderr()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "daemon did not announce its listeners: {}",
                        d.stderr()
                    ));
                }
            };
            for (what, slot) in [("ingest", &mut d.ingest), ("admin", &mut d.admin)] {
                let prefix = format!("outbox: {what} listening on http://");
                if let Some(addr) = line.strip_prefix(&prefix) {
                    *slot = Some(addr.trim().parse().expect("announced address"));
                }
            }
        }
        Ok(d)
    }

    pub fn stderr(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The process id, for signals (SIGSTOP at a simulated power cut).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has exited, with its status if so.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// SIGTERM, then wait (at most 30 s) for the exit code.
    pub fn stop(mut self) -> (i32, String) {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the reader thread collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (status.code().unwrap_or(-1), self.stderr());
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("daemon did not stop: {}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one series (`name{labels}`) in Prometheus text.
pub fn prom_value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in\n{scrape}"))
        .trim()
        .parse()
        .unwrap()
}

/// One HTTP/1.1 exchange over a fresh connection.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    req += "\r\n";
    s.write_all(req.as_bytes()).unwrap();
    // A server may answer (413) before reading the whole body.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out += &rest[..n];
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A webhook receiver on 127.0.0.1: answers each request with the next
/// status from `plan` (the last one repeats), or with what
/// [`Receiver::answering`]'s function decides, and records the status,
/// `webhook-id` and body of every request.
pub struct Receiver {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<(u16, String, String)>>>,
    /// When each request in `seen` arrived, in the same order.
    pub at: Arc<Mutex<Vec<Instant>>>,
    pub plan: Arc<Mutex<Vec<u16>>>,
}

/// Decides a webhook answer from the `webhook-id` and the body.
pub type Answer = Box<dyn Fn(&str, &[u8]) -> u16 + Send>;

impl Receiver {
    pub fn start(plan: Vec<u16>) -> Receiver {
        let plan = Arc::new(Mutex::new(plan));
        let plan2 = plan.clone();
        let mut r = Self::answering(Box::new(move |_, _| {
            let mut p = plan2.lock().unwrap();
            if p.len() > 1 { p.remove(0) } else { p[0] }
        }));
        r.plan = plan;
        r
    }

    /// A receiver whose every answer is `answer(webhook-id, body)`.
    pub fn answering(answer: Answer) -> Receiver {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let at = Arc::new(Mutex::new(Vec::new()));
        let at2 = at.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { break };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut id = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.split_once(':') {
                        if k.eq_ignore_ascii_case("webhook-id") {
                            id = v.trim().to_string();
                        }
                        if k.eq_ignore_ascii_case("content-length") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                }
                let mut body = vec![0u8; len];
                let _ = r.read_exact(&mut body);
                let arrived = Instant::now();
                let status = answer(&id, &body);
                at2.lock().unwrap().push(arrived);
                seen2.lock().unwrap().push((
                    status,
                    id,
                    String::from_utf8_lossy(&body).into_owned(),
                ));
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        Receiver {
            addr,
            seen,
            at,
            plan: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub fn seen(&self) -> Vec<(u16, String, String)> {
        self.seen.lock().unwrap().clone()
    }
}
