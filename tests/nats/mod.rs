//! A real `nats-server -js` for the JetStream tests: on a free loopback
//! port, with a temporary store directory, stopped (SIGKILL, then reaped)
//! when the handle drops, so also when a test panics.
//!
//! `nats-server` comes from Debian's package of that name (2.9.10 here);
//! `.ci/run` installs it. Outside CI a missing binary skips the test with a
//! note on stderr; with `CI=true` it fails the test.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where `nats-server` is: on `PATH`, or in `/usr/sbin` where Debian puts
/// it (not on a non-root `PATH`).
pub fn binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("nats-server"))
            .collect::<Vec<_>>()
    });
    on_path
        .chain([PathBuf::from("/usr/sbin/nats-server")])
        .find(|p| p.is_file())
}

/// A running `nats-server -js`.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    log: Arc<Mutex<Vec<String>>>,
}

impl NatsServer {
    /// Starts a server with JetStream on a free port and a fresh store, and
    /// waits until it accepts connections. `None` when `nats-server` is not
    /// installed and `CI` is not `true` (the caller skips its test).
    ///
    /// # Panics
    /// When `CI=true` and `nats-server` is missing, or when it does not come
    /// up within 20 s.
    pub fn start() -> Option<NatsServer> {
        if binary().is_none() {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!(
                    "nats-server is not installed; CI must install it (apt-get install -y nats-server)"
                );
            }
            eprintln!("SKIPPED: nats-server is not installed (apt-get install nats-server)");
            return None;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = tmp.path().join("js");
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            store,
            _tmp: Some(tmp),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let bin = binary().expect("nats-server");
        let mut child = Command::new(bin)
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nats-server");
        let err = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self
                .log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("Server is ready"));
            if ready && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("nats-server exited with {status}: {}", self.log());
            }
            if Instant::now() > deadline {
                panic!("nats-server did not come up in 20 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store(&self) -> &Path {
        &self.store
    }

    /// What the server wrote on stderr.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// SIGKILLs the server and waits for it: the port is closed and the
    /// store is left as a crash leaves it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A paused server is killed too, but resume it so the kill is
            // reaped at once.
            // SAFETY: a plain kill(2) of our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOPs the server: connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONTs a paused server.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().expect("server running").id() as i32;
        // SAFETY: a plain kill(2) of our own child.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the server, or returns from the calling test when it may skip.
#[macro_export]
macro_rules! nats_or_skip {
    () => {
        match $crate::nats::NatsServer::start() {
            Some(s) => s,
            None => return,
        }
    };
}

/// A JetStream client of the test's own, for setting up streams and reading
/// what outbox did.
pub async fn js(url: &str) -> async_nats::jetstream::Context {
    let c = async_nats::connect(url)
        .await
        .expect("connect to nats-server");
    async_nats::jetstream::new(c)
}

/// Creates a file-backed stream over `subjects` with the given duplicate
/// window.
pub async fn stream(
    js: &async_nats::jetstream::Context,
    name: &str,
    subjects: &[&str],
    duplicate_window: Duration,
) -> async_nats::jetstream::stream::Stream {
    js.create_stream(async_nats::jetstream::stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        duplicate_window,
        ..Default::default()
    })
    .await
    .expect("create stream")
}

/// Every message of a stream, in stream order: (stream seq, Nats-Msg-Id,
/// payload), read with direct gets by sequence.
pub async fn read_stream(
    js: &async_nats::jetstream::Context,
    name: &str,
) -> Vec<(u64, Option<String>, Vec<u8>)> {
    let mut s = js.get_stream(name).await.expect("get stream");
    let info = s.info().await.expect("stream info").clone();
    let mut out = Vec::new();
    if info.state.messages == 0 {
        return out;
    }
    for seq in info.state.first_sequence..=info.state.last_sequence {
        match s.get_raw_message(seq).await {
            Ok(m) => {
                let id = m
                    .headers
                    .get(async_nats::header::NATS_MESSAGE_ID)
                    .map(|v| v.as_str().to_string());
                out.push((seq, id, m.payload.to_vec()));
            }
            Err(e) => panic!("stream {name}: message {seq} unreadable: {e}"),
        }
    }
    out
}
