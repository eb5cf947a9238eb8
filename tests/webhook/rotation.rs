//! Key rotation on the wire, checked by the independent Python
//! `standardwebhooks` library: every request reaching the receiver is
//! verified with each key alone, and the set of keys that verify it must be
//! exactly the keys active when it was signed.
//!
//! The library lives in a virtualenv under `target/` (`.ci/run` creates it;
//! this test creates it when it is missing). When `CI=true`, a missing
//! Python or package fails the test instead of skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use outbox::sink::webhook::SecretSpec;

use super::*;

/// The pinned release the test verifies with.
const PACKAGE: &str = "standardwebhooks==1.1.0";

const NEW: &str = "whsec_bmV3LWtleS1mb3Itb3V0Ym94LXJvdGF0aW9u";
const OLD: &str = VECTOR_SECRET;
/// Configured, but expired before the sink was built.
const GONE: &str = "whsec_Z29uZS1rZXktZm9yLW91dGJveA==";
/// Never configured.
const STRANGER: &str = "whsec_c3RyYW5nZXIta2V5LWZvci1vdXRib3g=";

fn keys(name: &str) -> Option<OsString> {
    match name {
        "ROT_NEW" => Some(NEW.into()),
        "ROT_OLD" => Some(OLD.into()),
        // ROT_GONE is deliberately unset: an expired key is not read.
        _ => None,
    }
}

fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/standardwebhooks-venv")
}

fn can_import(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import standardwebhooks.webhooks"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn install(venv: &Path) -> Result<(), String> {
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    run(Command::new("python3").arg("-m").arg("venv").arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", PACKAGE]))
}

/// The virtualenv's Python with `standardwebhooks` importable; `None` to
/// skip, which `CI=true` turns into a failure.
fn python() -> Option<PathBuf> {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PYTHON.get_or_init(|| {
        let venv = venv_dir();
        let python = venv.join("bin/python");
        if !can_import(&python) {
            install(&venv)?;
        }
        if can_import(&python) {
            Ok(python)
        } else {
            Err(format!("{PACKAGE} is not importable in {}", venv.display()))
        }
    });
    match found {
        Ok(p) => Some(p.clone()),
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true and the Python verifier is unavailable: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPED: the Python verifier is unavailable: {e}");
            None
        }
    }
}

/// For each request, the names of the secrets that verify it alone, as the
/// Python library decides (its own 5-minute timestamp tolerance included).
fn python_verdicts(python: &Path, secrets: &[(&str, &str)], hits: &[Hit]) -> Vec<Vec<String>> {
    const SCRIPT: &str = r#"
import json, sys
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
job = json.load(sys.stdin)
out = []
for req in job["requests"]:
    ok = []
    for name, secret in job["secrets"]:
        try:
            Webhook(secret).verify(req["body"], req["headers"], json_parse=False)
            ok.append(name)
        except WebhookVerificationError:
            pass
    out.append(ok)
json.dump(out, sys.stdout)
"#;
    let requests: Vec<serde_json::Value> = hits
        .iter()
        .map(|h| {
            serde_json::json!({
                "headers": {
                    "webhook-id": header(&h.headers, "webhook-id"),
                    "webhook-timestamp": header(&h.headers, "webhook-timestamp"),
                    "webhook-signature": header(&h.headers, "webhook-signature"),
                },
                "body": String::from_utf8(h.body.clone()).expect("UTF-8 bodies"),
            })
        })
        .collect();
    let job = serde_json::json!({ "secrets": secrets, "requests": requests });
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(job.to_string().as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

fn rotation_config(url: &str, old_expires: u64) -> WebhookConfig {
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    WebhookConfig {
        secret_env: vec![],
        secrets: vec![
            SecretSpec::new("ROT_NEW"),
            SecretSpec::expiring("ROT_OLD", at(old_expires)),
            SecretSpec::expiring("ROT_GONE", at(now_secs() - 60)),
        ],
        ..WebhookConfig::new(url, "")
    }
}

const ALL: [(&str, &str); 4] = [
    ("new", NEW),
    ("old", OLD),
    ("gone", GONE),
    ("stranger", STRANGER),
];

#[tokio::test]
async fn the_python_library_verifies_each_active_key_alone_and_no_other() {
    let Some(python) = python() else { return };
    let rx = Receiver::start(vec![], Reply::Status(200)).await;
    let start = now_secs();
    // OLD expires a minute from now: within Python's 5-minute tolerance
    // either side, so a clock moved past it still yields requests the
    // library accepts on their timestamp.
    let old_expires = start + 60;
    let cfg = rotation_config(&rx.url, old_expires);

    // 1. Through the engine, on the system clock: NEW and OLD sign.
    let sink = WebhookSink::with_env(&cfg, keys).unwrap();
    let d = dir();
    let (ob, mut acks) = open_hook(d.path(), sink, fast()).await;
    let payloads = [
        r#"{"alert":"disk full"}"#,
        "dots.in.body and a newline\n",
        "unicode ✓",
    ];
    let receipts = ob
        .dispatch_many(
            payloads
                .iter()
                .enumerate()
                .map(|(i, p)| (rec(p), vec![i as u32]))
                .collect(),
        )
        .await
        .unwrap();
    for want in 0..3 {
        assert_eq!(next_ack(&mut acks).await, want);
    }
    ob.shutdown(Duration::from_secs(5)).await.unwrap();

    // 2. Signed one second after OLD's expiry: NEW alone signs.
    let late = WebhookSink::with_env(&cfg, keys)
        .unwrap()
        .with_clock(move || old_expires + 1);
    late.send("msg_after_expiry", &rec(r#"{"late":true}"#))
        .await
        .unwrap();
    // 3. Signed in the last second before it: both still sign.
    let edge = WebhookSink::with_env(&cfg, keys)
        .unwrap()
        .with_clock(move || old_expires - 1);
    edge.send("msg_before_expiry", &rec(r#"{"edge":true}"#))
        .await
        .unwrap();

    let hits = rx.hits();
    assert_eq!(hits.len(), 5);
    assert_eq!(
        hits.iter().map(|h| h.id().to_string()).collect::<Vec<_>>(),
        receipts
            .iter()
            .map(|r| r.delivery_id.to_string())
            .chain(["msg_after_expiry".into(), "msg_before_expiry".into()])
            .collect::<Vec<_>>()
    );
    let sig_counts: Vec<usize> = hits
        .iter()
        .map(|h| header(&h.headers, "webhook-signature").split(' ').count())
        .collect();
    assert_eq!(sig_counts, [2, 2, 2, 1, 2]);

    let verdicts = python_verdicts(&python, &ALL, &hits);
    let both = vec!["new".to_string(), "old".to_string()];
    assert_eq!(
        verdicts,
        vec![
            both.clone(),
            both.clone(),
            both.clone(),
            vec!["new".to_string()],
            both
        ]
    );

    // The verifier is not a rubber stamp: a changed body or id, or a stale
    // timestamp, verifies with no key.
    let mut tampered = hits[0].clone();
    tampered.body = br#"{"alert":"disk fine"}"#.to_vec();
    let mut renamed = hits[1].clone();
    renamed
        .headers
        .insert("webhook-id", "msg_other".parse().unwrap());
    let mut stale = hits[2].clone();
    stale.headers.insert(
        "webhook-timestamp",
        (start - 3600).to_string().parse().unwrap(),
    );
    let verdicts = python_verdicts(&python, &ALL, &[tampered, renamed, stale]);
    assert_eq!(verdicts, vec![Vec::<String>::new(); 3]);
}

#[tokio::test]
async fn once_the_last_key_expires_nothing_reaches_the_receiver() {
    let rx = Receiver::start(vec![], Reply::Status(200)).await;
    let expires = now_secs() + 60;
    let cfg = WebhookConfig {
        secret_env: vec![],
        secrets: vec![SecretSpec::expiring(
            "ROT_OLD",
            UNIX_EPOCH + Duration::from_secs(expires),
        )],
        ..WebhookConfig::new(&rx.url, "")
    };
    let before = WebhookSink::with_env(&cfg, keys)
        .unwrap()
        .with_clock(move || expires - 1);
    before.send("msg_last_second", &rec("{}")).await.unwrap();
    let after = WebhookSink::with_env(&cfg, keys)
        .unwrap()
        .with_clock(move || expires);
    let e = after.send("msg_too_late", &rec("{}")).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        e.to_string().contains("no webhook secret is active") && e.to_string().contains("ROT_OLD"),
        "{e}"
    );
    // Only the request signed before the expiry arrived, with its one
    // signature.
    let hits = rx.hits();
    assert_eq!(
        hits.iter().map(|h| h.id().to_string()).collect::<Vec<_>>(),
        ["msg_last_second"]
    );
    verify_standard(OLD, &hits[0].headers, &hits[0].body, expires - 1).unwrap();

    // Through the engine: the record is retried, never sent, then dead-lettered
    // with the reason, and can be redriven once a key is configured.
    let d = dir();
    let (ob, mut acks) = open_hook(d.path(), after, fast()).await;
    ob.dispatch(rec(r#"{"n":1}"#), vec![1]).await.unwrap();
    assert_eq!(next_ack(&mut acks).await, 1);
    let dl = ob.dlq_list(None).unwrap();
    ob.shutdown(Duration::from_secs(5)).await.unwrap();
    assert_eq!(rx.hits().len(), 1, "nothing unsigned went out");
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].attempts, fast().retry_max + 1);
    assert!(
        dl[0].error.contains("no webhook secret is active"),
        "{}",
        dl[0].error
    );
}
