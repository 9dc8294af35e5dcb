//! Latent corruption for the swarm: one sector of a synced queue file (a log segment or a
//! `todo/` file) is zeroed while the machine is down. The oracle must then forgive exactly the
//! transmissions whose records lay in that sector (their mail may be lost or, when an outcome
//! or retirement was hit, delivered again), and hold every other one to the usual rules.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use mta::queue::record::{decode_todo, frame, Frame, Record};
use mta::queue::{MsgId, Seg};

use crate::fs::{Image, SECTOR};
use crate::oracle;

/// What a damage did.
#[derive(Debug, Clone, Default)]
pub struct Damage {
    pub what: String,
    /// Transmissions whose message record was in the damaged sector: they may be lost.
    pub lost: Vec<String>,
    /// Transmissions whose outcome or retirement was: they may be delivered again.
    pub again: Vec<String>,
}

/// Tokens a message's bytes carry (a bounce carries the one it bounces).
fn tokens_in(data: &[u8]) -> Vec<String> {
    let prefix = oracle::token_line("");
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// The records of the log segment at `path` with their byte ranges, up to the first bad one
/// (checksums keyed as the segment's name says).
pub fn frames(path: &str, bytes: &[u8]) -> Vec<((u64, u64), Vec<Record>)> {
    let name = path.rsplit('/').next().unwrap_or(path);
    let key = Seg::parse(name).map_or(0, |s| s.key);
    let (mut at, mut out) = (0usize, Vec::new());
    while let Frame::Whole(body, n) = frame(&bytes[at..], key) {
        let recs =
            Record::decode_flat(body, key).map_or(vec![], |v| v.into_iter().map(|r| r.0).collect());
        out.push(((at as u64, (at + n) as u64), recs));
        at += n;
    }
    out
}

/// Which message each id is, over every log segment.
fn tokens_by_id(files: &[(String, Vec<u8>)]) -> BTreeMap<MsgId, Vec<String>> {
    let mut m = BTreeMap::new();
    for (path, bytes) in files.iter().filter(|(p, _)| p.contains("/queue/log/")) {
        for (_, recs) in frames(path, bytes) {
            for r in recs {
                if let Record::Msg { env, data, .. } | Record::Moved { env, data, .. } = r {
                    m.insert(env.id, tokens_in(&data));
                }
            }
        }
    }
    m
}

/// Zero one sector, chosen by `seed`, of one non-empty queue file; `None` if there is none.
pub fn corrupt_queue(img: &mut Image, seed: u64) -> Option<Damage> {
    let files: Vec<(String, Vec<u8>)> = img
        .files()
        .into_iter()
        .filter(|(p, b)| !b.is_empty() && (p.contains("/queue/log/") || p.contains("/queue/todo/")))
        .collect();
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    let (path, bytes) = files.get(r.random_range(0..files.len().max(1)))?.clone();
    let sector = r.random_range(0..(bytes.len() as u64).div_ceil(SECTOR));
    let hit = (sector * SECTOR, (sector + 1) * SECTOR);
    img.zero_sector(&path, sector);
    let (mut lost, mut again) = (Vec::new(), Vec::new());
    if path.contains("/queue/todo/") {
        lost = decode_todo(&bytes).map_or(vec![], |(_, data)| tokens_in(&data));
    } else {
        let ids = tokens_by_id(&files);
        for ((a, b), recs) in frames(&path, &bytes) {
            if a >= hit.1 || b <= hit.0 {
                continue;
            }
            for rec in recs {
                match rec {
                    Record::Msg { data, .. } | Record::Moved { data, .. } => {
                        lost.extend(tokens_in(&data))
                    }
                    Record::Outcome { id, .. } | Record::Retire { id } => {
                        again.extend(ids.get(&id).cloned().unwrap_or_default())
                    }
                    _ => {}
                }
            }
        }
    }
    Some(Damage {
        what: format!("{path}: sector {sector} zeroed"),
        lost,
        again,
    })
}
