//! The plan: the operations of a sequence, cut into segments at each
//! crash, and the text form in which one segment travels to its child
//! process (an environment variable).

use crate::harness::Fate;

/// One step of a sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// One `dispatch` (one record) or `dispatch_many` call, each record
    /// with one ack token and its fate at each sink.
    Dispatch(Vec<[Fate; 2]>),
    /// Let delivery get partway, in ms.
    Sleep(u8),
    /// Redrive every DLQ entry the sink has at that moment.
    Redrive(usize),
    /// SIGKILL the child; the next segment runs in a new one.
    Crash(Kill),
}

/// When the parent kills the child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kill {
    /// Once the child's journal holds this many lines of this run (its
    /// open is the first), wherever the child is then: in a burst of
    /// receipts, a delivery, an ack. If the run never writes that many, as
    /// [`Kill::AfterMs`]`(IDLE_MS)`.
    AtLine(u16),
    /// This many ms after the child has issued every operation of its
    /// segment, while its sinks are still delivering.
    AfterMs(u8),
}

/// How long after its last operation a child that never reached its
/// [`Kill::AtLine`] is killed.
pub const IDLE_MS: u8 = 60;

/// One child's share of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The operations the child runs, in order.
    pub ops: Vec<Op>,
    /// How it ends: killed, or (the last segment) a drained close.
    pub kill: Option<Kill>,
}

/// Cuts `ops` at each crash. The last segment has no kill: after it the
/// child drains and closes.
pub fn segments(ops: &[Op]) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for op in ops {
        match op {
            Op::Crash(k) => out.push(Segment {
                ops: std::mem::take(&mut cur),
                kill: Some(*k),
            }),
            other => cur.push(other.clone()),
        }
    }
    out.push(Segment {
        ops: cur,
        kill: None,
    });
    out
}

/// The text form of a segment's operations: `d:oo.px;s:5;r:1`.
pub fn encode(ops: &[Op]) -> String {
    let one = |op: &Op| match op {
        Op::Dispatch(recs) => {
            let fates: Vec<String> = recs
                .iter()
                .map(|[a, b]| format!("{}{}", a.code(), b.code()))
                .collect();
            format!("d:{}", fates.join("."))
        }
        Op::Sleep(ms) => format!("s:{ms}"),
        Op::Redrive(k) => format!("r:{k}"),
        Op::Crash(_) => unreachable!("a crash ends a segment"),
    };
    ops.iter().map(one).collect::<Vec<_>>().join(";")
}

/// Reads what [`encode`] wrote.
///
/// # Panics
/// On text `encode` does not write.
pub fn decode(text: &str) -> Vec<Op> {
    text.split(';')
        .filter(|s| !s.is_empty())
        .map(|s| {
            let (kind, arg) = s.split_once(':').expect("op:arg");
            match kind {
                "d" => Op::Dispatch(
                    arg.split('.')
                        .map(|f| {
                            let f = f.as_bytes();
                            assert_eq!(f.len(), 2, "two fates: {s}");
                            [
                                Fate::from_code(f[0]).expect("fate"),
                                Fate::from_code(f[1]).expect("fate"),
                            ]
                        })
                        .collect(),
                ),
                "s" => Op::Sleep(arg.parse().expect("ms")),
                "r" => Op::Redrive(arg.parse().expect("sink")),
                _ => panic!("unknown op {s:?}"),
            }
        })
        .collect()
}

#[test]
fn a_segment_survives_its_text_form() {
    use Fate::{Exhaust, Ok as O, Panic, Permanent as P, Transient as T};
    let ops = vec![
        Op::Dispatch(vec![[O, P], [T(2), Exhaust], [Panic, O]]),
        Op::Sleep(7),
        Op::Redrive(1),
        Op::Dispatch(vec![[O, O]]),
    ];
    let text = encode(&ops);
    assert_eq!(text, "d:op.2x.!o;s:7;r:1;d:oo");
    assert_eq!(decode(&text), ops);
    assert_eq!(decode(""), Vec::<Op>::new());
    let segs = segments(&[
        Op::Sleep(1),
        Op::Crash(Kill::AtLine(3)),
        Op::Crash(Kill::AfterMs(2)),
        Op::Redrive(0),
    ]);
    assert_eq!(segs.len(), 3);
    assert_eq!(segs[0].kill, Some(Kill::AtLine(3)));
    assert!(segs[1].ops.is_empty());
    assert_eq!(segs[2].ops, vec![Op::Redrive(0)]);
    assert_eq!(segs[2].kill, None);
}
