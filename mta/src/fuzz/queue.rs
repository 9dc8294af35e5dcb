//! Queue files from the disk: whole log segments (recovery) and `todo/` files.

use arbitrary::{Result as ArbResult, Unstructured};

use crate::queue::record::{decode_todo, encode_todo};
use crate::queue::{replay_segment, Channel, Envelope, MsgId, Recipient, Record, Replayed, Status};

/// Ids of records hidden inside message data: recovery must never apply one.
const FORGED: u64 = 0xf0f0_f0f0_f0f0_f0f0;

/// The key of the segments this target writes and replays. Forged records get any other key:
/// a sender does not know the segment's.
const KEY: u32 = 0x5e6_0001;

/// Whole log segments. Byte 0 even: arbitrary bytes. Odd: a segment the log wrote (with
/// records forged inside message data), then damaged by a flipped byte and/or a cut.
pub fn log_recovery(data: &[u8]) {
    match data.split_first() {
        Some((m, rest)) if m & 1 == 1 => {
            let _ = written_then_damaged(&mut Unstructured::new(rest));
        }
        Some((_, rest)) => {
            check_replay(rest);
        }
        None => {}
    }
}

/// What holds for any bytes: every applied record lies, byte for byte, where recovery says it
/// ends; every message the queue would hold comes from such a record, with its own data.
fn check_replay(buf: &[u8]) -> Replayed {
    let r = replay_segment(buf, KEY);
    assert!(r.keep <= buf.len() as u64);
    let mut last = 0;
    for &(a, b) in &r.damaged {
        assert!(
            last <= a && a < b && b <= buf.len() as u64,
            "{:?}",
            r.damaged
        );
        last = b;
    }
    for (rec, end) in &r.records {
        let mut enc = Vec::new();
        rec.encode(&mut enc, KEY);
        let body = &enc[8..];
        let end = *end as usize;
        assert!(
            end <= buf.len() && end >= body.len(),
            "end {end} of {rec:?}"
        );
        assert!(
            &buf[end - body.len()..end] == body,
            "{rec:?} is not in the bytes where recovery says"
        );
    }
    for (m, bytes) in &r.messages {
        let held = r.records.iter().any(|(rec, _)| match rec {
            Record::Msg { env, data, .. } | Record::Moved { env, data, .. } => {
                env.id == m.id() && data == bytes
            }
            _ => false,
        });
        assert!(held, "message {} held by no record", m.id());
    }
    r
}

/// Up to `max` arbitrary bytes.
fn some_bytes(u: &mut Unstructured<'_>, max: usize) -> ArbResult<Vec<u8>> {
    let n = u.int_in_range(0..=max)?;
    Ok(u.bytes(n)?.to_vec())
}

fn text(u: &mut Unstructured<'_>) -> ArbResult<String> {
    let n = u.int_in_range(0..=12)?;
    (0..n)
        .map(|_| u.choose(&['a', 'b', '@', '.', '\u{e9}', '\n']).copied())
        .collect()
}

fn envelope(u: &mut Unstructured<'_>, id: MsgId) -> ArbResult<Envelope> {
    let n = u.int_in_range(1..=3)?;
    Ok(Envelope {
        id,
        birth: u.arbitrary()?,
        qp: u.arbitrary()?,
        uid: u.arbitrary()?,
        sender: text(u)?,
        recipients: (0..n).map(|_| text(u)).collect::<ArbResult<_>>()?,
    })
}

fn message(u: &mut Unstructured<'_>, id: MsgId, forge: bool) -> ArbResult<Record> {
    let env = envelope(u, id)?;
    let rcpts = env
        .recipients
        .iter()
        .map(|a| {
            Ok(Recipient {
                original: a.clone(),
                addr: text(u)?,
                channel: if u.arbitrary()? {
                    Channel::Local
                } else {
                    Channel::Remote
                },
            })
        })
        .collect::<ArbResult<_>>()?;
    let mut data = some_bytes(u, 24)?;
    if forge {
        // Bytes shaped like records, as a sender could put in a message.
        let forged = MsgId {
            secs: FORGED,
            rand: FORGED,
        };
        let fake = message(u, forged, false)?;
        let key = u.arbitrary::<u32>()?;
        let key = if key == KEY { !key } else { key };
        for r in [Record::Retire { id: forged }, fake] {
            r.encode(&mut data, key);
        }
        data.extend(some_bytes(u, 8)?);
    }
    Ok(Record::Msg { env, rcpts, data })
}

/// One record the log could write, about message `1.k`.
fn record(u: &mut Unstructured<'_>, depth: u8) -> ArbResult<Record> {
    let id = MsgId {
        secs: 1,
        rand: u.int_in_range(0..=3)?,
    };
    Ok(match u.int_in_range(0..=6)? {
        0 => {
            let forge = u.arbitrary()?;
            message(u, id, forge)?
        }
        1 => Record::Outcome {
            id,
            rcpt: u.int_in_range(0..=3)?,
            status: match u.int_in_range(0..=2)? {
                0 => Status::Pending,
                1 => Status::Delivered,
                _ => Status::Failed(text(u)?),
            },
        },
        2 => Record::Retire { id },
        3 => Record::Tried {
            id,
            channel: Channel::Remote,
            at: u.arbitrary()?,
        },
        5 => match message(u, id, false)? {
            Record::Msg { env, rcpts, data } => Record::Moved {
                env,
                rcpts: rcpts.into_iter().map(|r| (r, Status::Pending)).collect(),
                tried: [u.arbitrary()?, u.arbitrary()?],
                data,
            },
            r => r,
        },
        4 if depth == 0 => {
            let n = u.int_in_range(1..=3)?;
            Record::Group((0..n).map(|_| record(u, 1)).collect::<ArbResult<_>>()?)
        }
        _ => Record::Checkpoint {
            low_water: u.int_in_range(0..=9)?,
        },
    })
}

/// Records as replay applies them: group members one by one.
fn flat(r: &Record) -> Vec<Record> {
    match r {
        Record::Group(m) => m.clone(),
        r => vec![r.clone()],
    }
}

/// A written segment, damaged. Exact expectations when a byte outside a length field flips
/// (that record alone is lost) or the tail is cut (a prefix survives).
fn written_then_damaged(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let recs: Vec<Record> = (0..u.int_in_range(1..=6)?)
        .map(|_| record(u, 0))
        .collect::<ArbResult<_>>()?;
    let mut buf = Vec::new();
    let mut frames = Vec::new();
    for r in &recs {
        let start = buf.len();
        r.encode(&mut buf, KEY);
        frames.push(start..buf.len());
    }
    let flip = if u.arbitrary()? {
        let at = u.choose_index(buf.len())?;
        let in_len = frames.iter().any(|f| (f.start..f.start + 4).contains(&at));
        (!in_len).then_some(at)
    } else {
        None
    };
    let cut = if u.arbitrary()? {
        Some(u.choose_index(buf.len())?)
    } else {
        None
    };
    if let Some(at) = flip {
        buf[at] ^= u.int_in_range(1..=255)?;
    }
    buf.truncate(cut.unwrap_or(buf.len()));
    let got: Vec<Record> = check_replay(&buf)
        .records
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    let survives =
        |f: &std::ops::Range<usize>| f.end <= buf.len() && flip.is_none_or(|at| !f.contains(&at));
    let expect: Vec<Record> = recs
        .iter()
        .zip(&frames)
        .filter(|(_, f)| survives(f))
        .flat_map(|(r, _)| flat(r))
        .collect();
    assert_eq!(got, expect, "flip {flip:?} cut {cut:?}");
    Ok(())
}

/// `todo/` files: whatever decodes re-encodes to the same bytes (nothing is invented or
/// dropped); with byte 0 odd, a file written by `encode_todo` with one byte changed or a cut
/// never decodes to anything but the original.
pub fn todo_file(data: &[u8]) {
    let Some((m, rest)) = data.split_first() else {
        return;
    };
    if m & 1 == 0 {
        if let Ok((env, msg)) = decode_todo(rest) {
            assert!(
                encode_todo(&env, &msg) == rest,
                "decode is not the inverse of encode"
            );
        }
        return;
    }
    let _ = damaged_todo(&mut Unstructured::new(rest));
}

fn damaged_todo(u: &mut Unstructured<'_>) -> ArbResult<()> {
    let env = envelope(u, MsgId { secs: 7, rand: 9 })?;
    let msg = some_bytes(u, 64)?;
    let mut file = encode_todo(&env, &msg);
    assert_eq!(decode_todo(&file).ok(), Some((env.clone(), msg.clone())));
    let at = u.choose_index(file.len())?;
    if u.arbitrary()? {
        file[at] ^= u.int_in_range(1..=255)?;
    } else {
        file.truncate(at);
    }
    if let Ok(got) = decode_todo(&file) {
        assert_eq!(
            got,
            (env, msg),
            "a damaged todo/ file decoded to something else"
        );
    }
    Ok(())
}
