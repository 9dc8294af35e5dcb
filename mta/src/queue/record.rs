//! Binary encoding of queued messages and log records.
//!
//! A log record on disk is `len:u32 | crc32c:u32 | body` where `body` is `kind:u8 | payload`
//! and `len` is the body's length. The checksum makes a torn or never-written tail detectable,
//! so recovery can cut the log at the first record that is not whole.
//!
//! The checksum is keyed: it starts from the segment's secret key (named in the segment's
//! file name, random per segment) instead of zero. A message's data may hold any bytes, even
//! bytes shaped exactly like records; when recovery has to search for whole records after
//! damage, such forged bytes fail the check unless their sender guessed the 32-bit key.

use std::fmt;

use super::body::BodyRef;
use super::QueueError;

/// A message id: birth second and 64 random bits. Unique forever (never reused after the
/// message is gone), because delivery names files after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MsgId {
    pub secs: u64,
    pub rand: u64,
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:016x}", self.secs, self.rand)
    }
}

impl std::str::FromStr for MsgId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.split_once('.').ok_or(())?;
        if b.len() != 16 {
            return Err(());
        }
        Ok(MsgId {
            secs: a.parse().map_err(|_| ())?,
            rand: u64::from_str_radix(b, 16).map_err(|_| ())?,
        })
    }
}

/// Where a recipient is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Channel {
    Local,
    Remote,
}

/// A recipient's durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pending,
    Delivered,
    /// Permanently failed; the text goes into the bounce.
    Failed(String),
}

/// An injected message as it sits in `todo/` (envelope not yet rewritten).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub id: MsgId,
    /// Unix seconds; the retry schedule is anchored here.
    pub birth: u64,
    /// Injecting process id (qmail's `qp`) and user id, for the log.
    pub qp: u64,
    pub uid: u32,
    pub sender: String,
    pub recipients: Vec<String>,
}

/// A recipient after preprocessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as injected.
    pub original: String,
    /// The address after rewriting (virtual domains, envnoathost, percenthack).
    pub addr: String,
    pub channel: Channel,
}

/// A forward queued with the outcome that made it, as one group: on disk exactly a
/// [`Record::Group`] of a [`Record::Msg`] and the outcome, but the message's bytes (`prefix`,
/// the new `Delivered-To:` line, then the original message) are copied from the log while
/// written, never held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub env: Envelope,
    pub rcpts: Vec<Recipient>,
    pub prefix: Vec<u8>,
    /// The original message in the log, and the crc32c of its bytes ([`Forward::checksum`]).
    pub body: BodyRef,
    pub body_crc: u32,
    pub outcome: Record,
}

/// A [`Forward`]'s group frame around the copied bytes.
pub struct ForwardFrame {
    /// Frame header, group kind, the message member's header, the message up to its body.
    pub before: Vec<u8>,
    /// The outcome member.
    pub after: Vec<u8>,
}

impl Forward {
    /// The data length of the forwarded message.
    pub fn data_len(&self) -> u64 {
        self.prefix.len() as u64 + self.body.len
    }

    /// The crc32c of the body's bytes, read a piece at a time: taken before the append, so
    /// an original that cannot be read fails this forward alone, not the whole batch.
    pub fn checksum<F: crate::env::Fs>(fs: &F, body: &BodyRef) -> std::io::Result<u32> {
        let mut crc = 0;
        body.open(fs)?.each_piece(|p| {
            crc = crc32c::crc32c_append(crc, p);
            Ok(())
        })?;
        Ok(crc)
    }

    /// The frame under `key`, given the crc32c of the body's bytes (checksums of the pieces
    /// are combined, so the body is read only to be copied).
    pub fn frame(&self, key: u32, body_crc: u32) -> Result<ForwardFrame, QueueError> {
        let n = self.body.len as usize;
        let mut m = Enc(Vec::new());
        m.msg_head(&self.env, &self.rcpts, self.data_len());
        m.0.extend_from_slice(&self.prefix);
        let member_len = m.0.len() + n;
        let member_crc =
            crc32c::crc32c_combine(crc32c::crc32c_append(key, &m.0), body_crc, n) ^ MEMBER;
        let mut g = vec![K_GROUP];
        g.extend_from_slice(&frame_len(member_len)?.to_le_bytes());
        g.extend_from_slice(&member_crc.to_le_bytes());
        g.extend_from_slice(&m.0);
        let mut after = Vec::new();
        self.outcome.encode_framed(&mut after, key, MEMBER);
        let group_len = g.len() + n + after.len();
        let crc = crc32c::crc32c_combine(crc32c::crc32c_append(key, &g), body_crc, n);
        let crc = crc32c::crc32c_combine(crc, crc32c::crc32c(&after), after.len());
        let mut before = frame_len(group_len)?.to_le_bytes().to_vec();
        before.extend_from_slice(&crc.to_le_bytes());
        before.extend_from_slice(&g);
        Ok(ForwardFrame { before, after })
    }
}

/// A frame's length field; recovery takes nothing longer than [`MAX_RECORD`].
fn frame_len(n: usize) -> Result<u32, QueueError> {
    if n > MAX_RECORD {
        return Err(QueueError::TooLarge(n));
    }
    Ok(n as u32)
}

/// One record of the queue log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A preprocessed message with its bytes.
    Msg {
        env: Envelope,
        rcpts: Vec<Recipient>,
        data: Vec<u8>,
    },
    /// The final state of one recipient.
    Outcome {
        id: MsgId,
        rcpt: u32,
        status: Status,
    },
    /// The message is finished (its bounce, if any, is already queued).
    Retire { id: MsgId },
    /// A delivery pass on `channel` that started at `at` (unix seconds) left recipients
    /// pending: a restart continues the retry schedule from it (qmail keeps this time in
    /// the mtime of the message's info file).
    Tried {
        id: MsgId,
        channel: Channel,
        at: u64,
    },
    /// Segments numbered below `low_water` hold nothing live and are being removed. Made
    /// durable before the unlinks, so a segment whose unlink did not persist is ignored.
    Checkpoint { low_water: u64 },
    /// Compaction: a live message's whole state (envelope, every recipient's status, the last
    /// passes, its bytes) written again at the head, so the old segments holding its records
    /// can go. It replaces whatever earlier records said about the message.
    Moved {
        env: Envelope,
        rcpts: Vec<(Recipient, Status)>,
        tried: [u64; 2],
        data: Vec<u8>,
    },
    /// Records that take effect together or not at all (one frame, one checksum): a forward
    /// with the outcome that produced it, a bounce with the retirement of its message.
    Group(Vec<Record>),
}

const K_MSG: u8 = 1;
const K_OUTCOME: u8 = 2;
const K_RETIRE: u8 = 3;
const K_CHECKPOINT: u8 = 4;
const K_GROUP: u8 = 5;
const K_TRIED: u8 = 6;
const K_MOVED: u8 = 7;
/// First bytes of every `todo/` file.
pub const TODO_MAGIC: &[u8; 8] = b"MTATODO2";
/// Records larger than this are refused as corrupt while reading (a message is at most this).
pub const MAX_RECORD: usize = 1 << 30;

pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn id(&mut self, id: MsgId) {
        self.u64(id.secs);
        self.u64(id.rand);
    }
    fn recipient(&mut self, r: &Recipient) {
        self.bytes(r.original.as_bytes());
        self.bytes(r.addr.as_bytes());
        self.u8(match r.channel {
            Channel::Local => 0,
            Channel::Remote => 1,
        });
    }
    fn status(&mut self, s: &Status) {
        match s {
            Status::Pending => self.u8(0),
            Status::Delivered => self.u8(1),
            Status::Failed(r) => {
                self.u8(2);
                self.bytes(r.as_bytes());
            }
        }
    }
    /// A [`Record::Msg`] up to its data, whose length comes first.
    fn msg_head(&mut self, env: &Envelope, rcpts: &[Recipient], data_len: u64) {
        self.u8(K_MSG);
        self.envelope(env);
        rcpts.iter().for_each(|r| self.recipient(r));
        self.u64(data_len);
    }
    fn envelope(&mut self, e: &Envelope) {
        self.id(e.id);
        self.u64(e.birth);
        self.u64(e.qp);
        self.u32(e.uid);
        self.bytes(e.sender.as_bytes());
        self.u32(e.recipients.len() as u32);
        for r in &e.recipients {
            self.bytes(r.as_bytes());
        }
    }
}

pub(crate) struct Dec<'a>(pub &'a [u8]);

impl<'a> Dec<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], QueueError> {
        if self.0.len() < n {
            return Err(QueueError::Corrupt("record shorter than its fields".into()));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, QueueError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, QueueError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, QueueError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<&'a [u8], QueueError> {
        let n = self.u64()?;
        if n > self.0.len() as u64 {
            return Err(QueueError::Corrupt("field length past the record".into()));
        }
        self.take(n as usize)
    }
    fn string(&mut self) -> Result<String, QueueError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| QueueError::Corrupt("address is not UTF-8".into()))
    }
    fn id(&mut self) -> Result<MsgId, QueueError> {
        Ok(MsgId {
            secs: self.u64()?,
            rand: self.u64()?,
        })
    }
    fn recipient(&mut self) -> Result<Recipient, QueueError> {
        let original = self.string()?;
        let addr = self.string()?;
        let channel = match self.u8()? {
            0 => Channel::Local,
            1 => Channel::Remote,
            _ => return Err(QueueError::Corrupt("bad channel".into())),
        };
        Ok(Recipient {
            original,
            addr,
            channel,
        })
    }
    fn status(&mut self) -> Result<Status, QueueError> {
        Ok(match self.u8()? {
            0 => Status::Pending,
            1 => Status::Delivered,
            2 => Status::Failed(self.string()?),
            _ => return Err(QueueError::Corrupt("bad status".into())),
        })
    }
    fn envelope(&mut self) -> Result<Envelope, QueueError> {
        let id = self.id()?;
        let birth = self.u64()?;
        let qp = self.u64()?;
        let uid = self.u32()?;
        let sender = self.string()?;
        let n = self.u32()? as usize;
        let mut recipients = Vec::with_capacity(n.min(1024));
        for _ in 0..n {
            recipients.push(self.string()?);
        }
        Ok(Envelope {
            id,
            birth,
            qp,
            uid,
            sender,
            recipients,
        })
    }
    fn end(&self) -> Result<(), QueueError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(QueueError::Corrupt("trailing bytes in record".into()))
        }
    }
}

impl Record {
    /// Append the record to `out`, framed with a checksum keyed by `key` (the segment's).
    pub fn encode(&self, out: &mut Vec<u8>, key: u32) {
        let mut e = Enc(Vec::new());
        match self {
            Record::Msg { env, rcpts, data } => {
                e.msg_head(env, rcpts, data.len() as u64);
                e.0.extend_from_slice(data);
            }
            Record::Moved {
                env,
                rcpts,
                tried,
                data,
            } => {
                e.u8(K_MOVED);
                e.envelope(env);
                for (r, s) in rcpts {
                    e.recipient(r);
                    e.status(s);
                }
                e.u64(tried[0]);
                e.u64(tried[1]);
                e.bytes(data);
            }
            Record::Outcome { id, rcpt, status } => {
                e.u8(K_OUTCOME);
                e.id(*id);
                e.u32(*rcpt);
                e.status(status);
            }
            Record::Retire { id } => {
                e.u8(K_RETIRE);
                e.id(*id);
            }
            Record::Tried { id, channel, at } => {
                e.u8(K_TRIED);
                e.id(*id);
                e.u8(match channel {
                    Channel::Local => 0,
                    Channel::Remote => 1,
                });
                e.u64(*at);
            }
            Record::Checkpoint { low_water } => {
                e.u8(K_CHECKPOINT);
                e.u64(*low_water);
            }
            Record::Group(recs) => {
                e.u8(K_GROUP);
                for r in recs {
                    r.encode_framed(&mut e.0, key, MEMBER);
                }
            }
        }
        let body = e.0;
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c_append(key, &body).to_le_bytes());
        out.extend_from_slice(&body);
    }

    /// Encode with the checksum flipped by `tweak`: a group's members carry
    /// [`MEMBER`], so recovery looking for whole records after damage can never take a member
    /// alone for a record of its own (a group is all or nothing).
    fn encode_framed(&self, out: &mut Vec<u8>, key: u32, tweak: u32) {
        let start = out.len();
        self.encode(out, key);
        let crc = u32::from_le_bytes(out[start + 4..start + 8].try_into().expect("4 bytes"));
        out[start + 4..start + 8].copy_from_slice(&(crc ^ tweak).to_le_bytes());
    }

    /// Decode a record body into the records it applies, each with the offset (within the
    /// body) where it ends: a group yields its members in order.
    pub fn decode_flat(body: &[u8], key: u32) -> Result<Vec<(Record, usize)>, QueueError> {
        if body.first() != Some(&K_GROUP) {
            return Ok(vec![(Record::decode(body, key)?, body.len())]);
        }
        let mut out = Vec::new();
        let mut at = 1;
        while at < body.len() {
            match frame_with(&body[at..], key, MEMBER) {
                Frame::Whole(inner, n) => {
                    if inner.first() == Some(&K_GROUP) {
                        return Err(QueueError::Corrupt("nested group".into()));
                    }
                    out.push((Record::decode(inner, key)?, at + n));
                    at += n;
                }
                Frame::End => return Err(QueueError::Corrupt("bad frame inside a group".into())),
            }
        }
        Ok(out)
    }

    /// Decode one record body (after the frame was checked with `key`).
    pub fn decode(body: &[u8], key: u32) -> Result<Record, QueueError> {
        let mut d = Dec(body);
        let rec = match d.u8()? {
            K_MSG => {
                let env = d.envelope()?;
                let rcpts = (0..env.recipients.len())
                    .map(|_| d.recipient())
                    .collect::<Result<_, _>>()?;
                let data = d.bytes()?.to_vec();
                Record::Msg { env, rcpts, data }
            }
            K_MOVED => {
                let env = d.envelope()?;
                let rcpts = (0..env.recipients.len())
                    .map(|_| Ok((d.recipient()?, d.status()?)))
                    .collect::<Result<_, QueueError>>()?;
                let tried = [d.u64()?, d.u64()?];
                let data = d.bytes()?.to_vec();
                Record::Moved {
                    env,
                    rcpts,
                    tried,
                    data,
                }
            }
            K_OUTCOME => {
                let id = d.id()?;
                let rcpt = d.u32()?;
                let status = d.status()?;
                Record::Outcome { id, rcpt, status }
            }
            K_RETIRE => Record::Retire { id: d.id()? },
            K_TRIED => Record::Tried {
                id: d.id()?,
                channel: match d.u8()? {
                    0 => Channel::Local,
                    1 => Channel::Remote,
                    _ => return Err(QueueError::Corrupt("bad channel".into())),
                },
                at: d.u64()?,
            },
            K_CHECKPOINT => Record::Checkpoint {
                low_water: d.u64()?,
            },
            K_GROUP => {
                let recs = Record::decode_flat(body, key)?
                    .into_iter()
                    .map(|(r, _)| r)
                    .collect();
                return Ok(Record::Group(recs));
            }
            k => return Err(QueueError::Corrupt(format!("unknown record kind {k}"))),
        };
        d.end()?;
        Ok(rec)
    }
}

/// Result of looking at the bytes at one position of a log segment.
pub enum Frame<'a> {
    /// A whole record body and the total framed length.
    Whole(&'a [u8], usize),
    /// Not a whole, valid record: the log ends here.
    End,
}

/// What a group member's checksum is flipped by (see [`Record::encode`]).
const MEMBER: u32 = 0x6d65_6d62;

/// Parse the frame at the start of `buf`, its checksum keyed by `key`.
pub fn frame(buf: &[u8], key: u32) -> Frame<'_> {
    frame_with(buf, key, 0)
}

/// Parse a frame whose checksum is keyed by `key` and flipped by `tweak`.
fn frame_with(buf: &[u8], key: u32, tweak: u32) -> Frame<'_> {
    if buf.len() < 8 {
        return Frame::End;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len == 0 || len > MAX_RECORD || buf.len() - 8 < len {
        return Frame::End;
    }
    let body = &buf[8..8 + len];
    if crc32c::crc32c_append(key, body) ^ tweak != crc {
        return Frame::End;
    }
    Frame::Whole(body, 8 + len)
}

/// `todo/` file layout: `MAGIC | message | envelope | trailer`, with the trailer
/// `message_len:u64 | envelope_len:u32 | crc32c:u32` (the checksum covers message, envelope
/// and both lengths). The message comes first so a receiver can stream it to disk before the
/// envelope is final; the trailer makes a torn file detectable.
pub const TODO_TRAILER: usize = 16;

/// Encode the envelope part of a `todo/` file.
pub fn encode_envelope(env: &Envelope) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(256));
    e.envelope(env);
    e.0
}

/// The trailer for a message of `data_len` bytes, an envelope of `env_len` bytes, and the
/// running checksum `crc` of both.
pub fn todo_trailer(data_len: u64, env_len: u32, crc: u32) -> [u8; TODO_TRAILER] {
    let mut lens = [0u8; 12];
    lens[..8].copy_from_slice(&data_len.to_le_bytes());
    lens[8..].copy_from_slice(&env_len.to_le_bytes());
    let crc = crc32c::crc32c_append(crc, &lens);
    let mut t = [0u8; TODO_TRAILER];
    t[..12].copy_from_slice(&lens);
    t[12..].copy_from_slice(&crc.to_le_bytes());
    t
}

/// Encode a whole `todo/` file.
pub fn encode_todo(env: &Envelope, data: &[u8]) -> Vec<u8> {
    let e = encode_envelope(env);
    let crc = crc32c::crc32c_append(crc32c::crc32c(data), &e);
    let mut out = Vec::with_capacity(TODO_MAGIC.len() + data.len() + e.len() + TODO_TRAILER);
    out.extend_from_slice(TODO_MAGIC);
    out.extend_from_slice(data);
    out.extend_from_slice(&e);
    out.extend_from_slice(&todo_trailer(data.len() as u64, e.len() as u32, crc));
    out
}

/// Decode a `todo/` file, checking that it is whole.
pub fn decode_todo(buf: &[u8]) -> Result<(Envelope, Vec<u8>), QueueError> {
    let bad = |why: &str| Err(QueueError::Corrupt(format!("todo file {why}")));
    if buf.len() < TODO_MAGIC.len() + TODO_TRAILER || &buf[..TODO_MAGIC.len()] != TODO_MAGIC {
        return bad("has no header");
    }
    let body = &buf[TODO_MAGIC.len()..buf.len() - TODO_TRAILER];
    let t = &buf[buf.len() - TODO_TRAILER..];
    let data_len = u64::from_le_bytes(t[..8].try_into().unwrap());
    let env_len = u32::from_le_bytes(t[8..12].try_into().unwrap()) as u64;
    let crc = u32::from_le_bytes(t[12..].try_into().unwrap());
    if data_len.checked_add(env_len) != Some(body.len() as u64) {
        return bad("lengths do not add up");
    }
    if crc32c::crc32c_append(crc32c::crc32c(body), &t[..12]) != crc {
        return bad("checksum mismatch");
    }
    let (data, e) = body.split_at(data_len as usize);
    let mut d = Dec(e);
    let env = d.envelope()?;
    d.end()?;
    Ok((env, data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope {
            id: MsgId { secs: 5, rand: 77 },
            birth: 5,
            qp: 9,
            uid: 1000,
            sender: "joe@x".into(),
            recipients: vec!["a@b".into(), "c".into()],
        }
    }

    /// A forward's frame around its copied bytes is exactly the group it stands for, under
    /// any key (the combined checksums equal the checksums of the whole).
    #[test]
    fn a_forward_frames_exactly_the_group_it_stands_for() {
        let body = b"Subject: s\n\nbody \x00\xff\n".repeat(50);
        let rcpts = vec![Recipient {
            original: "a@b".into(),
            addr: "a@b".into(),
            channel: Channel::Remote,
        }];
        let outcome = Record::Outcome {
            id: MsgId { secs: 1, rand: 2 },
            rcpt: 0,
            status: Status::Delivered,
        };
        let fw = Forward {
            env: env(),
            rcpts: rcpts.clone(),
            prefix: b"Delivered-To: x@y\n".to_vec(),
            body: BodyRef {
                path: "unused".into(),
                offset: 0,
                len: body.len() as u64,
            },
            body_crc: crc32c::crc32c(&body),
            outcome: outcome.clone(),
        };
        let mut data = fw.prefix.clone();
        data.extend_from_slice(&body);
        let msg = Record::Msg {
            env: env(),
            rcpts,
            data,
        };
        for key in [0, 0xdead_beef] {
            let mut want = Vec::new();
            Record::Group(vec![msg.clone(), outcome.clone()]).encode(&mut want, key);
            let fr = fw.frame(key, fw.body_crc).unwrap();
            let got = [fr.before, body.clone(), fr.after].concat();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn records_round_trip() {
        let recs = vec![
            Record::Msg {
                env: env(),
                rcpts: vec![
                    Recipient {
                        original: "a@b".into(),
                        addr: "a@b".into(),
                        channel: Channel::Remote,
                    };
                    2
                ],
                data: b"x\0\xff".to_vec(),
            },
            Record::Outcome {
                id: env().id,
                rcpt: 1,
                status: Status::Failed("no/such".into()),
            },
            Record::Outcome {
                id: env().id,
                rcpt: 0,
                status: Status::Delivered,
            },
            Record::Retire { id: env().id },
            Record::Checkpoint { low_water: 3 },
            Record::Moved {
                env: env(),
                rcpts: vec![
                    (
                        Recipient {
                            original: "a@b".into(),
                            addr: "a@c".into(),
                            channel: Channel::Local,
                        },
                        Status::Failed("gone".into()),
                    ),
                    (
                        Recipient {
                            original: "d@b".into(),
                            addr: "d@b".into(),
                            channel: Channel::Remote,
                        },
                        Status::Pending,
                    ),
                ],
                tried: [7, 9],
                data: b"moved\0".to_vec(),
            },
            Record::Group(vec![
                Record::Retire { id: env().id },
                Record::Checkpoint { low_water: 4 },
            ]),
        ];
        let key = 0x5eed_cafe;
        let mut buf = Vec::new();
        for r in &recs {
            r.encode(&mut buf, key);
        }
        let mut at = 0;
        let mut got = Vec::new();
        while let Frame::Whole(body, n) = frame(&buf[at..], key) {
            got.push(Record::decode(body, key).unwrap());
            at += n;
        }
        assert_eq!(got, recs);
        assert_eq!(at, buf.len());
    }

    #[test]
    fn a_frame_is_whole_only_under_its_own_key() {
        let mut buf = Vec::new();
        Record::Retire { id: env().id }.encode(&mut buf, 7);
        assert!(matches!(frame(&buf, 7), Frame::Whole(..)));
        assert!(matches!(frame(&buf, 0), Frame::End));
        assert!(matches!(frame(&buf, 8), Frame::End));
        let mut group = Vec::new();
        Record::Group(vec![Record::Retire { id: env().id }]).encode(&mut group, 7);
        let Frame::Whole(body, _) = frame(&group, 7) else {
            panic!("group not whole")
        };
        assert!(Record::decode_flat(body, 7).is_ok());
        assert!(
            Record::decode_flat(body, 8).is_err(),
            "members are keyed too"
        );
    }

    #[test]
    fn torn_and_zeroed_frames_end_the_log() {
        let mut buf = Vec::new();
        Record::Retire { id: env().id }.encode(&mut buf, 1);
        for cut in 0..buf.len() {
            assert!(matches!(frame(&buf[..cut], 1), Frame::End), "cut at {cut}");
        }
        assert!(matches!(frame(&[0u8; 64], 1), Frame::End));
        let mut flipped = buf.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(matches!(frame(&flipped, 1), Frame::End));
    }

    #[test]
    fn todo_round_trip_and_corruption() {
        let data = b"Subject: x\n\nbody\0with nul\xff".to_vec();
        let buf = encode_todo(&env(), &data);
        assert_eq!(decode_todo(&buf).unwrap(), (env(), data));
        for cut in 0..buf.len() {
            assert!(decode_todo(&buf[..cut]).is_err());
        }
        let mut z = buf.clone();
        z[20] ^= 0x10;
        assert!(decode_todo(&z).is_err());
    }

    #[test]
    fn msg_id_text_round_trip() {
        let id = MsgId {
            secs: 1_700_000_000,
            rand: 0xdead_beef,
        };
        assert_eq!(id.to_string().parse::<MsgId>(), Ok(id));
        assert!("x".parse::<MsgId>().is_err());
    }
}
