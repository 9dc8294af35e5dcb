//! Latent corruption of synced data: a queue log holding acknowledged messages gets one
//! zeroed sector, or one flipped bit per sector, at every sector in turn. Recovery must keep
//! every message whose record the damage did not touch (readable mail is never dropped),
//! lose only what lies in the damaged bytes, and set a segment damaged in the middle aside.

use std::path::PathBuf;

use mta::env::{Env, Fs};
use mta::queue::{Config, MsgId, NewMessage, Paths, Queue};

use crate::env::SimEnv;
use crate::fixture::T0_MS;
use crate::fs::{Clock, Image, Persist, SimFs, SECTOR};
use crate::lifecycle::classifier;

/// Totals of the enumeration.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub states: usize,
    /// Messages recovered intact though their segment was damaged elsewhere.
    pub kept: usize,
    /// Messages lost because the damage hit their own record.
    pub lost_in_damage: usize,
    pub violations: Vec<String>,
}

fn env(img: Image, seed: u64) -> SimEnv {
    let clock = Clock::new(T0_MS);
    SimEnv::manual(SimFs::from_image(img, clock.clone()), clock, seed)
}

fn queue_dir() -> PathBuf {
    PathBuf::from("/q")
}

/// A message in the log: its id, its bytes, and the byte range of its record.
type Stored = (MsgId, Vec<u8>, (u64, u64));

/// A log of `n` messages, each its own durable append; returns the disk and, per message,
/// its id, bytes and the byte range of its record in the one segment.
fn setup(n: usize, seed: u64) -> (Image, PathBuf, Vec<Stored>) {
    let e = env(Image::default(), seed);
    let paths = Paths::new(queue_dir());
    let (mut q, _) = Queue::open(e.clone(), paths.clone(), Config::default(), &classifier())
        .expect("fresh queue");
    let mut msgs = Vec::new();
    for i in 0..n {
        let data = format!("Subject: {i}\n\nlatent corruption test message {i}\n").into_bytes();
        let m = NewMessage {
            sender: "joe@heaven.af.mil".into(),
            recipients: vec!["fred".into()],
            data: data.clone(),
            qp: 1,
            uid: 1,
        };
        let id = q.submit(vec![m], &classifier()).expect("append")[0];
        msgs.push((id, data));
    }
    let log = paths.log();
    let name = e.fs().list_dir(&log).expect("log")[0].clone();
    let bytes = e.fs().read(&log.join(&name)).expect("segment");
    let ranges = crate::damage::frames(&name, &bytes)
        .into_iter()
        .map(|(r, _)| r);
    let seg = log.join(name);
    let out = msgs
        .into_iter()
        .zip(ranges)
        .map(|((id, d), r)| (id, d, r))
        .collect();
    (e.sim_fs().crash_image(&Persist::Synced), seg, out)
}

/// Recover from `img` (damaged in `hit`) and check what the oracle demands.
fn check(img: Image, msgs: &[Stored], hit: (u64, u64), seed: u64, rep: &mut Report) {
    let e = env(img, seed);
    let paths = Paths::new(queue_dir());
    let Ok((mut q, rec)) = Queue::open(e.clone(), paths.clone(), Config::default(), &classifier())
    else {
        rep.violations
            .push(format!("damage at {hit:?}: recovery failed"));
        return;
    };
    let last = msgs.last().map_or(0, |m| m.2 .1);
    for (id, data, range) in msgs {
        let touched = range.0 < hit.1 && hit.0 < range.1;
        match q.read_data(*id) {
            Ok(d) if &d == data => rep.kept += usize::from(!touched),
            Ok(_) => rep.violations.push(format!(
                "damage at {hit:?}: {id} recovered with other bytes"
            )),
            Err(_) if touched => rep.lost_in_damage += 1,
            Err(_) => rep
                .violations
                .push(format!("damage at {hit:?}: {id} readable but dropped")),
        }
    }
    let in_middle = msgs.iter().any(|m| m.2 .0 >= hit.1);
    let aside = e.fs().list_dir(&paths.corrupt()).unwrap_or_default();
    if in_middle && (aside.is_empty() || rec.damaged_bytes == 0) {
        rep.violations.push(format!(
            "damage at {hit:?} (segment end {last}): not set aside ({aside:?}, {rec:?})"
        ));
    }
}

/// Zero each sector, and flip one bit in each, of a log holding `n` messages.
pub fn enumerate(n: usize, seed: u64) -> Report {
    let (img, seg, msgs) = setup(n, seed);
    let len = msgs.last().map_or(0, |m| m.2 .1);
    let mut rep = Report::default();
    for s in 0..len.div_ceil(SECTOR) {
        let hit = (s * SECTOR, ((s + 1) * SECTOR).min(len));
        let mut zeroed = img.clone();
        zeroed.zero_sector(&seg, s);
        check(zeroed, &msgs, hit, seed, &mut rep);
        let mid = (hit.0 + hit.1) / 2;
        let mut flipped = img.clone();
        flipped.flip_bit(&seg, mid, (s % 8) as u8);
        check(flipped, &msgs, (mid, mid + 1), seed, &mut rep);
        rep.states += 2;
    }
    rep
}
