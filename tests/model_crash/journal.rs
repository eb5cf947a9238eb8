//! The child's journal: one file of lines, each written and fdatasynced
//! before the child goes on, so after a SIGKILL it holds exactly what the
//! child had seen. Every line starts with the run (child) number.
//!
//! | line                                   | written                                   |
//! |----------------------------------------|-------------------------------------------|
//! | `<run> O <log id> <head>`              | once the outbox is open                   |
//! | `<run> R <seq> <delivery id> <id>`     | per receipt, after `dispatch` returned    |
//! | `<run> A <id>`                         | per ack token, as it is released          |
//! | `<run> H <sink> <seq> <delivery id> <id> <outcome>` | per delivery attempt, before the sink answers |
//! | `<run> W <sink> <moved>`               | after a redrive returned                  |
//! | `<run> E`                              | after the segment's last operation        |
//! | `<run> C`                              | after a drained close (last run only)     |

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use outbox::DeliveryId;

/// The journal's file name in the test directory.
pub const FILE: &str = "journal.log";

/// What a sink answered to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Ok,
    /// A failure the worker retries.
    Retry,
    /// The attempt after which the record is dead-lettered (a permanent failure,
    /// or the last retry).
    Terminal,
}

impl Outcome {
    fn code(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retry => "retry",
            Outcome::Terminal => "dead-letter",
        }
    }

    fn parse(s: &str) -> Option<Outcome> {
        match s {
            "ok" => Some(Outcome::Ok),
            "retry" => Some(Outcome::Retry),
            "dead-letter" => Some(Outcome::Terminal),
            _ => None,
        }
    }
}

/// One delivery attempt, as the sink saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The sink's index in [`crate::harness::SINKS`].
    pub sink: usize,
    pub seq: u64,
    pub did: DeliveryId,
    /// The record id in the payload.
    pub id: u64,
    pub outcome: Outcome,
}

/// One line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Line {
    Open { log_id: String, head: u64 },
    Receipt { seq: u64, did: DeliveryId, id: u64 },
    Ack { id: u64 },
    Handed(Attempt),
    Redrive { sink: usize, moved: usize },
    OpsDone,
    Closed,
}

/// The child's side: appends synced lines, from any task.
pub struct Writer {
    run: u32,
    file: Mutex<std::fs::File>,
}

impl Writer {
    /// Opens the journal for appending.
    ///
    /// # Panics
    /// When the file cannot be opened.
    pub fn open(dir: &Path, run: u32) -> Writer {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(FILE))
            .expect("open the journal");
        Writer {
            run,
            file: Mutex::new(file),
        }
    }

    /// Writes one line and fdatasyncs it.
    ///
    /// # Panics
    /// On a write or sync error: the journal is the oracle, a gap in it
    /// would make the test lie.
    pub fn write(&self, line: &Line) {
        let text = match line {
            Line::Open { log_id, head } => format!("O {log_id} {head}"),
            Line::Receipt { seq, did, id } => format!("R {seq} {did} {id}"),
            Line::Ack { id } => format!("A {id}"),
            Line::Handed(a) => format!(
                "H {} {} {} {} {}",
                a.sink,
                a.seq,
                a.did,
                a.id,
                a.outcome.code()
            ),
            Line::Redrive { sink, moved } => format!("W {sink} {moved}"),
            Line::OpsDone => "E".to_string(),
            Line::Closed => "C".to_string(),
        };
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(format!("{} {text}\n", self.run).as_bytes())
            .expect("journal write");
        f.sync_data().expect("journal fdatasync");
    }
}

/// The parent's side: every whole line, by run. A torn last line (the kill
/// came in the middle of a write) is cut off the file, so that the next
/// child appends after a whole line.
///
/// # Errors
/// A line that does not parse.
pub fn read(dir: &Path) -> Result<Vec<(u32, Line)>, String> {
    let path = dir.join(FILE);
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    if whole < text.len() {
        text.truncate(whole);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| format!("journal: {e}"))?;
        f.set_len(whole as u64)
            .map_err(|e| format!("journal: {e}"))?;
    }
    text.lines()
        .enumerate()
        .map(|(n, l)| parse(l).ok_or_else(|| format!("journal line {}: {l:?}", n + 1)))
        .collect()
}

/// How many whole lines the journal holds; what the parent polls.
pub fn count(dir: &Path) -> usize {
    std::fs::read(dir.join(FILE))
        .map(|b| bytecount(&b))
        .unwrap_or(0)
}

fn bytecount(b: &[u8]) -> usize {
    b.iter().filter(|c| **c == b'\n').count()
}

fn parse(l: &str) -> Option<(u32, Line)> {
    let w: Vec<&str> = l.split(' ').collect();
    let run = w.first()?.parse().ok()?;
    let num = |i: usize| -> Option<u64> { w.get(i)?.parse().ok() };
    let did = |i: usize| DeliveryId::parse(w.get(i)?);
    let line = match *w.get(1)? {
        "O" => Line::Open {
            log_id: (*w.get(2)?).to_string(),
            head: num(3)?,
        },
        "R" => Line::Receipt {
            seq: num(2)?,
            did: did(3)?,
            id: num(4)?,
        },
        "A" => Line::Ack { id: num(2)? },
        "H" => Line::Handed(Attempt {
            sink: usize::try_from(num(2)?).ok()?,
            seq: num(3)?,
            did: did(4)?,
            id: num(5)?,
            outcome: Outcome::parse(w.get(6)?)?,
        }),
        "W" => Line::Redrive {
            sink: usize::try_from(num(2)?).ok()?,
            moved: usize::try_from(num(3)?).ok()?,
        },
        "E" => Line::OpsDone,
        "C" => Line::Closed,
        _ => return None,
    };
    Some((run, line))
}

#[test]
fn every_line_reads_back_and_a_torn_tail_is_cut() {
    let d = tempfile::tempdir().unwrap();
    let did = DeliveryId {
        log_id: uuid::Uuid::nil(),
        seq: outbox::Seq(9),
    };
    let lines = vec![
        Line::Open {
            log_id: "abc".into(),
            head: 4,
        },
        Line::Receipt { seq: 9, did, id: 3 },
        Line::Ack { id: 3 },
        Line::Handed(Attempt {
            sink: 1,
            seq: 9,
            did,
            id: 3,
            outcome: Outcome::Terminal,
        }),
        Line::Redrive { sink: 1, moved: 2 },
        Line::OpsDone,
        Line::Closed,
    ];
    let w = Writer::open(d.path(), 7);
    for l in &lines {
        w.write(l);
    }
    drop(w);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.path().join(FILE))
        .unwrap();
    f.write_all(b"7 R 10 msg_").unwrap();
    assert_eq!(count(d.path()), 7);
    let got = read(d.path()).unwrap();
    assert_eq!(got, lines.into_iter().map(|l| (7, l)).collect::<Vec<_>>());
    let text = std::fs::read_to_string(d.path().join(FILE)).unwrap();
    assert!(text.ends_with("7 C\n"), "torn tail cut: {text:?}");
}
