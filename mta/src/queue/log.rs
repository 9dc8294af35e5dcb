//! The queue log: numbered segment files of checksummed records, appended in durable batches.
//!
//! A segment is named `NNNNNNNNNNNNNNNN.KKKKKKKK`: its number (16 hex digits, never reused) and
//! the random key its records' checksums start from (see `record`). Names of 16 digits alone
//! are segments written before keys existed (key 0).

use std::path::{Path, PathBuf};

use super::record::{frame, Forward, Frame, Record, MAX_RECORD};
use super::{ctx, sync_dir, Config, Paths, QueueError, SyncPoint};
use crate::env::{Fs, FsFile};

/// Counters about the log, for reports and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub segments: usize,
    pub head: u64,
    pub head_len: u64,
    pub torn_bytes_cut: u64,
    /// Bytes of damage found in the middle of segments (records after them were kept).
    pub damaged_bytes: u64,
    pub appends: u64,
    pub records: u64,
}

/// One segment: its number and checksum key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seg {
    pub n: u64,
    pub key: u32,
}

impl Seg {
    /// The segment's file name.
    pub fn name(self) -> String {
        if self.key == 0 {
            format!("{:016x}", self.n)
        } else {
            format!("{:016x}.{:08x}", self.n, self.key)
        }
    }

    /// The segment a file name in `queue/log/` names, if any.
    pub fn parse(name: &str) -> Option<Seg> {
        let (n, key) = match name.split_once('.') {
            Some((n, k)) if k.len() == 8 => (n, u32::from_str_radix(k, 16).ok()?),
            Some(_) => return None,
            None => (name, 0),
        };
        if n.len() != 16 || !n.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Seg {
            n: u64::from_str_radix(n, 16).ok()?,
            key,
        })
    }
}

pub(super) struct Log<F: Fs> {
    dir: PathBuf,
    /// Live segments, oldest first; the last is the head.
    segs: Vec<Seg>,
    /// The segment appends go to; `None` after a failed fsync abandoned it (the next append
    /// starts a new one) or a failed start of a new one.
    head: Option<F::File>,
    head_len: u64,
    /// The number the next new segment gets (never reused, even after a failed start).
    next_seg: u64,
    /// Where new segments' keys come from (seeded from the environment's randomness).
    keys: u64,
    /// Bytes in each segment before the head (the head's are `head_len`).
    sealed: std::collections::BTreeMap<u64, u64>,
    stats: LogStats,
}

/// The next key from `state` (SplitMix64): new segments need unpredictable keys, not many.
fn next_key(state: &mut u64) -> u32 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    // Key 0 means "legacy, unkeyed": never hand it out.
    ((z ^ (z >> 31)) as u32).max(1)
}

/// What scanning a segment found.
pub(super) struct Scanned {
    /// End of the last whole record: what lies after it is a torn tail.
    pub(super) keep: u64,
    /// Damaged stretches with whole records after them (latent corruption, not a torn tail).
    pub(super) damaged: Vec<(u64, u64)>,
}

/// Where whole records start again after a bad one at `at`, if anywhere. A bad record whose
/// own length runs to the end of the segment is a torn tail: nothing after it. If its length
/// leads to a whole record, that is where. Otherwise the search goes byte by byte, through the
/// bad record's own bytes too: a message's data may hold bytes shaped like records, but their
/// checksums are not keyed with this segment's secret key, so they are never taken as whole.
fn resync(buf: &[u8], key: u32, at: usize) -> Option<usize> {
    let whole = |o: usize| matches!(frame(&buf[o..], key), Frame::Whole(..));
    let len = buf.get(at..at + 4)?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > 0 && len <= MAX_RECORD {
        let next = at + 8 + len;
        if next >= buf.len() {
            return None;
        }
        if whole(next) {
            return Some(next);
        }
    }
    (at + 1..buf.len().saturating_sub(8)).find(|&o| whole(o))
}

/// Scan one segment's bytes: calls `f(record, end_offset)` for each whole record. A bad
/// stretch followed by whole records is damage in the middle (every record after it is
/// kept); one that runs to the end is a torn tail.
pub(super) fn scan(
    buf: &[u8],
    key: u32,
    mut f: impl FnMut(Record, u64) -> Result<(), QueueError>,
) -> Result<Scanned, QueueError> {
    let (mut at, mut keep, mut damaged) = (0usize, 0usize, Vec::new());
    while at < buf.len() {
        match frame(&buf[at..], key) {
            Frame::Whole(body, n) => {
                match Record::decode_flat(body, key) {
                    Ok(recs) => {
                        for (r, end) in recs {
                            f(r, (at + 8 + end) as u64)?;
                        }
                    }
                    // A valid checksum over a body that does not decode: damage all the same.
                    Err(_) => damaged.push((at as u64, (at + n) as u64)),
                }
                at += n;
                keep = at;
            }
            Frame::End if crate::planted::on(crate::planted::Bug::CutAtFirstDamage) => break,
            Frame::End => match resync(buf, key, at) {
                Some(next) => {
                    damaged.push((at as u64, next as u64));
                    at = next;
                }
                None => break,
            },
        }
    }
    Ok(Scanned {
        keep: keep as u64,
        damaged,
    })
}

/// Damage in the middle of a segment is latent corruption, not a crash: say so loudly and
/// keep a copy of the segment as found in `corrupt/` for the administrator.
fn set_aside<F: Fs>(
    fs: &F,
    paths: &Paths,
    seg: Seg,
    buf: &[u8],
    damaged: &[(u64, u64)],
    repair: bool,
) {
    let seg = seg.name();
    tracing::error!(
        "queue log segment {seg}: damaged bytes at {damaged:?}; every whole record after them is kept; records inside them are lost"
    );
    if !repair {
        return;
    }
    let to = paths.corrupt().join(format!("log-{seg}"));
    match fs.create_new(&to) {
        Ok(mut f) => {
            if let Err(e) = f.write_at(0, buf).and_then(|()| f.sync()) {
                tracing::error!("cannot keep a copy of segment {seg} in corrupt/: {e}");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => tracing::error!("cannot keep a copy of segment {seg} in corrupt/: {e}"),
    }
}

/// What replaying one segment found.
struct Found {
    seg: Seg,
    len: u64,
    scanned: Scanned,
}

/// One replay pass over the segments from `low_water` on, every record to `apply`; also the
/// highest low water a checkpoint names (a checkpoint names an earlier segment than its own:
/// anything else is not one the log wrote, and would make recovery drop live segments).
fn replay<F: Fs>(
    fs: &F,
    dir: &Path,
    segs: &[Seg],
    low_water: u64,
    apply: &mut impl FnMut(Option<(u64, u64, Record)>),
) -> Result<(Vec<Found>, u64), QueueError> {
    let (mut found, mut highest) = (Vec::new(), low_water);
    for &seg in segs.iter().filter(|s| s.n >= low_water) {
        let path = dir.join(seg.name());
        let buf = ctx(fs.read(&path), || format!("read {}", path.display()))?;
        let scanned = scan(&buf, seg.key, |r, end| {
            if let Record::Checkpoint { low_water: lw } = r {
                if lw <= seg.n {
                    highest = highest.max(lw);
                }
            }
            apply(Some((seg.n, end, r)));
            Ok(())
        })?;
        found.push(Found {
            seg,
            len: buf.len() as u64,
            scanned,
        });
    }
    Ok((found, highest))
}

/// Encode a batch under `key`, with the end offset of every record (a group's members each).
fn encode_batch(recs: &[Record], key: u32) -> (Vec<u8>, Vec<u64>) {
    let mut buf = Vec::new();
    let mut ends = Vec::with_capacity(recs.len());
    for r in recs {
        let start = buf.len();
        r.encode(&mut buf, key);
        match r {
            // Members end inside the group's frame, after its 8-byte header and kind byte.
            Record::Group(members) => {
                let mut at = start + 9;
                for m in members {
                    let mut one = Vec::new();
                    m.encode(&mut one, key);
                    at += one.len();
                    ends.push(at as u64);
                }
            }
            _ => ends.push(buf.len() as u64),
        }
    }
    (buf, ends)
}

/// Write forwards behind a batch's first `len` bytes at `at`, each message's bytes copied from
/// its original a piece at a time. The bytes written must have the checksum the frame was
/// made with (taken before the append); otherwise the append fails. Pushes each member's end.
fn write_forwards<F: Fs>(
    fs: &F,
    f: &mut F::File,
    (at, len): (u64, u64),
    fwds: &[Forward],
    key: u32,
    ends: &mut Vec<u64>,
) -> Result<(), QueueError> {
    let mut pos = at + len;
    for fw in fwds {
        let fr = fw.frame(key, fw.body_crc)?;
        let what = || format!("copy {} into a forward", fw.body.path.display());
        let mut body = ctx(fw.body.open(fs), what)?;
        ctx(f.write_at(pos, &fr.before), what)?;
        pos += fr.before.len() as u64;
        let mut copied = 0;
        let copy = |p: &[u8]| {
            copied = crc32c::crc32c_append(copied, p);
            f.write_at(pos, p)?;
            pos += p.len() as u64;
            Ok(())
        };
        ctx(body.each_piece(copy), what)?;
        if copied != fw.body_crc {
            return Err(QueueError::Corrupt(format!("{}: changed", what())));
        }
        ends.push(pos - at);
        ctx(f.write_at(pos, &fr.after), what)?;
        pos += fr.after.len() as u64;
        ends.push(pos - at);
    }
    Ok(())
}

/// After the final replay: damage in the middle set aside in `corrupt/`, a torn tail cut.
/// Returns the length of the segment's whole records.
fn repair_segment<F: Fs>(
    fs: &F,
    paths: &Paths,
    f: &Found,
    repair: bool,
    stats: &mut LogStats,
) -> Result<u64, QueueError> {
    let path = paths.log().join(f.seg.name());
    let damaged = &f.scanned.damaged;
    if !damaged.is_empty() {
        stats.damaged_bytes += damaged.iter().map(|(a, b)| b - a).sum::<u64>();
        // Read again: damage is rare, and keeping every segment's bytes is not.
        let buf = fs.read(&path).unwrap_or_default();
        set_aside(fs, paths, f.seg, &buf, damaged, repair);
    }
    let valid = f.scanned.keep;
    if valid < f.len {
        stats.torn_bytes_cut += f.len - valid;
        if repair {
            // The cut need not be synced: until it is durable, a recovery after a crash cuts
            // the same bytes again.
            let mut file = ctx(fs.open_rw(&path), || format!("open {}", path.display()))?;
            ctx(file.set_len(valid), || {
                format!("truncate {}", path.display())
            })?;
        }
    }
    Ok(valid)
}

impl<F: Fs> Log<F> {
    /// Replay the log. `apply(Some((segment, end_offset, record)))` sees every live record in
    /// order; `apply(None)` means "forget what was applied so far: the replay starts over".
    /// With `repair`, torn tails are cut off and an empty log gets its first segment (keys of
    /// new segments come from `seed`).
    pub fn open(
        fs: &F,
        paths: &Paths,
        cfg: &Config,
        (repair, seed): (bool, u64),
        mut apply: impl FnMut(Option<(u64, u64, Record)>),
    ) -> Result<Self, QueueError> {
        let dir = paths.log();
        let mut segs: Vec<Seg> = ctx(fs.list_dir(&dir), || format!("list {}", dir.display()))?
            .iter()
            .filter_map(|n| Seg::parse(n))
            .collect();
        segs.sort_unstable_by_key(|s| s.n);
        // Segments below a checkpoint's low water are dead: only a crash between the
        // checkpoint and their unlinks leaves one. Replay optimistically once; if a dead one
        // was replayed, forget everything and replay from the low water (rare).
        let (mut found, low_water) = replay(fs, &dir, &segs, 0, &mut apply)?;
        if segs.first().is_some_and(|s| s.n < low_water) {
            apply(None);
            found = replay(fs, &dir, &segs, low_water, &mut apply)?.0;
            if repair {
                for s in segs.iter().filter(|s| s.n < low_water) {
                    // Its unlink had not persisted before a crash: finish it.
                    let p = dir.join(s.name());
                    ctx(fs.unlink(&p), || format!("remove {}", p.display()))?;
                }
            }
        }
        let mut stats = LogStats::default();
        let mut live: Vec<Seg> = Vec::new();
        let (mut head_len, mut sealed) = (0, std::collections::BTreeMap::new());
        for f in found {
            let valid = repair_segment(fs, paths, &f, repair, &mut stats)?;
            if let Some(prev) = live.last() {
                sealed.insert(prev.n, head_len);
            }
            live.push(f.seg);
            head_len = valid;
        }
        let mut log = Log {
            dir,
            segs: live,
            head: None,
            head_len,
            next_seg: segs.last().map_or(1, |s| s.n + 1),
            keys: seed,
            sealed,
            stats,
        };
        if repair {
            // Appends always go to a segment this open made durable itself, never to one
            // found: a reopen in the same process sees the page cache, where a segment whose
            // name a failed fsync dropped (its cleanup unlink failing too) or whose last batch
            // a failed fsync dropped still looks whole; records appended there would vanish.
            log.roll(fs, cfg)?;
            log.drop_empty_before_head(fs);
        }
        Ok(log)
    }

    /// Remove the segment before the head if it holds nothing (the head of the last run, or
    /// one a failed roll left), so restarts do not pile up empty files. No checkpoint is
    /// needed: if the unlink does not persist, the segment comes back just as empty.
    fn drop_empty_before_head(&mut self, fs: &F) {
        let Some(&prev) = self.segs.iter().rev().nth(1) else {
            return;
        };
        if self.sealed.get(&prev.n) != Some(&0) {
            return;
        }
        // A failed unlink leaves a dead empty segment: later collection takes it.
        if fs.unlink(&self.dir.join(prev.name())).is_ok() {
            self.sealed.remove(&prev.n);
            self.segs.retain(|s| s.n != prev.n);
        }
    }

    /// Start a new segment as the head and make its directory entry durable.
    fn roll(&mut self, fs: &F, cfg: &Config) -> Result<(), QueueError> {
        let seg = Seg {
            n: self.next_seg,
            key: next_key(&mut self.keys),
        };
        self.next_seg += 1;
        let p = self.dir.join(seg.name());
        let f = ctx(fs.create_new(&p), || format!("create {}", p.display()))?;
        if let Err(e) = sync_dir(fs, cfg, SyncPoint::LogDir, &self.dir) {
            // Its name may never reach the disk: records appended there could vanish.
            let _ = fs.unlink(&p);
            return Err(e);
        }
        if let Some(prev) = self.segs.last() {
            self.sealed.insert(prev.n, self.head_len);
        }
        self.segs.push(seg);
        self.head = Some(f);
        self.head_len = 0;
        Ok(())
    }

    /// Append a batch durably (one fsync): `recs`, then each forward as a group whose message
    /// bytes are copied from the log a piece at a time. Returns, per record (per member of a
    /// group, a forward's message and outcome), its segment and end offset.
    pub fn append(
        &mut self,
        fs: &F,
        cfg: &Config,
        recs: &[Record],
        fwds: &[Forward],
    ) -> Result<Vec<(u64, u64)>, QueueError> {
        let head_key = self
            .segs
            .last()
            .filter(|_| self.head.is_some())
            .map(|s| s.key);
        let (mut buf, mut ends) = encode_batch(recs, head_key.unwrap_or(0));
        let mut total = buf.len() as u64;
        for fw in fwds {
            // Lengths do not depend on the key or the checksum.
            let fr = fw.frame(0, 0)?;
            total += (fr.before.len() + fr.after.len()) as u64 + fw.body.len;
        }
        let full = self.head_len > 0 && self.head_len + total > cfg.segment_size;
        if self.head.is_none() || full {
            self.roll(fs, cfg)?;
            // The new segment has its own key (lengths do not depend on keys: `ends` hold).
            buf = encode_batch(recs, self.segs.last().expect("rolled").key).0;
        }
        let key = self.segs.last().expect("log has a head").key;
        let seg = self.segs.last().expect("log has a head").n;
        let at = self.head_len;
        let f = self.head.as_mut().expect("rolled above");
        let written = ctx(f.write_at(at, &buf), || {
            format!("append to log segment {seg}")
        })
        .and_then(|()| write_forwards(fs, f, (at, buf.len() as u64), fwds, key, &mut ends));
        if let Err(e) = written {
            // Cut a partial write (ENOSPC midway) so the next batch starts on a record boundary.
            let _ = f.set_len(at);
            return Err(e);
        }
        if !cfg.disabled.contains(SyncPoint::LogData) {
            if let Err(e) = f.sync() {
                // Linux may have dropped this batch from the disk while reads still return it:
                // never append behind it again (a recovery would cut later batches with it).
                // The next append starts a new segment; this one keeps its synced prefix.
                if crate::planted::on(crate::planted::Bug::AppendAfterFailedFsync) {
                    // The planted bug trusts the cached file: it appends behind the batch.
                    self.head_len += total;
                } else {
                    // Cut the batch from what readers see too: a recovery later in this boot
                    // (the queue is reopened after an error) must not take records the disk
                    // may not hold for recorded, and unlink the todo/ entries they replace.
                    let _ = f.set_len(at);
                    // Best effort to make the cut durable: no later append goes to this
                    // segment, so no later fsync would cover it.
                    let _ = f.sync();
                    self.head = None;
                }
                return ctx(Err(e), || format!("fsync log segment {seg}"));
            }
        }
        self.head_len += total;
        self.stats.appends += 1;
        self.stats.records += (recs.len() + fwds.len()) as u64;
        Ok(ends.into_iter().map(|e| (seg, at + e)).collect())
    }

    /// Remove the oldest segments that hold nothing live (`live`: segments live messages use).
    /// A checkpoint record is made durable first, so unlinks need no directory fsync: one that
    /// did not persist is finished by the next recovery.
    pub fn collect(&mut self, fs: &F, cfg: &Config, live: &[u64]) -> Result<(), QueueError> {
        let head = self.segs.last().expect("log has a head").n;
        let dead = self
            .segs
            .iter()
            .take_while(|s| s.n != head && live.binary_search(&s.n).is_err())
            .count();
        if dead == 0 {
            return Ok(());
        }
        let low_water = self.segs[dead].n;
        self.append(fs, cfg, &[Record::Checkpoint { low_water }], &[])?;
        for s in self.segs.drain(..dead) {
            let p = self.dir.join(s.name());
            self.sealed.remove(&s.n);
            ctx(fs.unlink(&p), || format!("remove {}", p.display()))?;
        }
        Ok(())
    }

    /// Bytes in every live segment.
    pub fn total_bytes(&self) -> u64 {
        self.sealed.values().sum::<u64>() + self.head_len
    }

    /// The oldest live segment, unless it is the head.
    pub fn oldest_sealed(&self) -> Option<u64> {
        (self.segs.len() > 1).then(|| self.segs[0].n)
    }

    /// The file of live segment number `seg`.
    pub fn segment_path(&self, seg: u64) -> PathBuf {
        let key = self.segs.iter().find(|s| s.n == seg).map_or(0, |s| s.key);
        self.dir.join(Seg { n: seg, key }.name())
    }

    /// Read `len` bytes ending at `end` of segment `seg`.
    pub fn read_data(
        &mut self,
        fs: &F,
        (seg, end, len): (u64, u64, u64),
    ) -> Result<Vec<u8>, QueueError> {
        let mut buf = vec![0u8; len as usize];
        let off = end - len;
        let read = |f: &mut F::File, buf: &mut [u8]| -> std::io::Result<()> {
            let mut got = 0;
            while got < buf.len() {
                let n = f.read_at(off + got as u64, &mut buf[got..])?;
                if n == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                got += n;
            }
            Ok(())
        };
        if let Some(f) = self
            .head
            .as_mut()
            .filter(|_| Some(seg) == self.segs.last().map(|s| s.n))
        {
            ctx(read(f, &mut buf), || format!("read log segment {seg}"))?;
        } else {
            let p: &Path = &self.segment_path(seg);
            let mut f = ctx(fs.open_rw(p), || format!("open {}", p.display()))?;
            ctx(read(&mut f, &mut buf), || format!("read {}", p.display()))?;
        }
        Ok(buf)
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            segments: self.segs.len(),
            head: self.segs.last().map_or(0, |s| s.n),
            head_len: self.head_len,
            ..self.stats
        }
    }
}
