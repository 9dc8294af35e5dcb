//! A message as POP3 sends it: lines end in CRLF (a file's LF or CRLF alike), a line starting
//! with `.` gets another one, and `.` CRLF ends it. Works piece by piece, so RETR streams a
//! message of any size in bounded memory and gives the same bytes however the file is split.
//! Without the dot-stuffing and the final line, the same encoder counts the size LIST reports,
//! so sizes and what RETR sends agree exactly.

/// The state of one message being encoded.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// Dot-stuff and terminate (RETR/TOP); off to count the size.
    stuff: bool,
    /// Nothing of the current line sent yet.
    start: bool,
    /// A CR waiting to see whether an LF follows.
    cr: bool,
    /// Past the blank line that ends the header.
    body: bool,
    /// TOP: body lines still to send; `None`: all of them.
    left: Option<u64>,
    /// TOP's limit reached: the rest is ignored.
    done: bool,
}

impl Encoder {
    /// `lines`: TOP's count of body lines; `None` for the whole message.
    pub fn new(lines: Option<u64>) -> Encoder {
        Encoder {
            stuff: true,
            start: true,
            cr: false,
            body: false,
            left: lines,
            done: false,
        }
    }

    /// An encoder that counts the size LIST reports (no stuffing, no final dot).
    pub fn counting() -> Encoder {
        Encoder {
            stuff: false,
            ..Encoder::new(None)
        }
    }

    /// True once TOP has sent all it will: the caller can stop reading.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Encode the next piece of the file onto `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.done {
                return;
            }
            if std::mem::take(&mut self.cr) {
                if b == b'\n' {
                    self.newline(out);
                    continue;
                }
                self.byte(b'\r', out);
            }
            match b {
                b'\r' => self.cr = true,
                b'\n' => self.newline(out),
                _ => self.byte(b, out),
            }
        }
    }

    /// End the message: a last line without a line end gets one, then (when stuffing) the
    /// terminating `.` line.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if std::mem::take(&mut self.cr) && !self.done {
            self.byte(b'\r', out);
        }
        if !self.start && !self.done {
            out.extend_from_slice(b"\r\n");
        }
        if self.stuff {
            out.extend_from_slice(b".\r\n");
        }
    }

    fn limit_reached(&self) -> bool {
        self.body && self.left == Some(0)
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        if self.start {
            if self.limit_reached() {
                self.done = true;
                return;
            }
            if self.stuff && b == b'.' {
                out.push(b'.');
            }
            self.start = false;
        }
        out.push(b);
    }

    fn newline(&mut self, out: &mut Vec<u8>) {
        if self.start && self.limit_reached() {
            self.done = true;
            return;
        }
        let blank = self.start;
        out.extend_from_slice(b"\r\n");
        if self.body {
            if let Some(n) = self.left.as_mut() {
                *n -= 1;
            }
        } else if blank {
            self.body = true;
        }
        self.start = true;
    }
}

/// The size LIST and STAT report for a message made of these pieces.
#[derive(Debug)]
pub struct Counter {
    enc: Encoder,
    size: u64,
    buf: Vec<u8>,
}

impl Default for Counter {
    fn default() -> Self {
        Counter {
            enc: Encoder::counting(),
            size: 0,
            buf: Vec::new(),
        }
    }
}

impl Counter {
    pub fn push(&mut self, input: &[u8]) {
        self.enc.push(input, &mut self.buf);
        self.size += self.buf.len() as u64;
        self.buf.clear();
    }
    pub fn finish(mut self) -> u64 {
        self.enc.finish(&mut self.buf);
        self.size + self.buf.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(msg: &[u8], lines: Option<u64>, split: usize) -> Vec<u8> {
        let mut e = Encoder::new(lines);
        let mut out = Vec::new();
        for piece in msg.chunks(split.max(1)) {
            e.push(piece, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn crlf_and_dot_stuffing_whatever_the_pieces() {
        let msg = b"Subject: x\n\n.hidden\r\nbody\n..two\nlast";
        let want = b"Subject: x\r\n\r\n..hidden\r\nbody\r\n...two\r\nlast\r\n.\r\n".to_vec();
        for split in 1..msg.len() + 1 {
            assert_eq!(encode(msg, None, split), want, "split {split}");
        }
        assert_eq!(encode(b"", None, 1), b".\r\n");
        assert_eq!(encode(b"a\rb\n", None, 1), b"a\rb\r\n.\r\n");
        assert_eq!(encode(b"a\r", None, 1), b"a\r\r\n.\r\n");
    }

    #[test]
    fn top_sends_the_header_and_n_body_lines() {
        let msg = b"A: 1\nB: 2\n\nl1\n\nl3\n";
        assert_eq!(encode(msg, Some(0), 3), b"A: 1\r\nB: 2\r\n\r\n.\r\n");
        assert_eq!(
            encode(msg, Some(2), 1),
            b"A: 1\r\nB: 2\r\n\r\nl1\r\n\r\n.\r\n"
        );
        assert_eq!(encode(msg, Some(9), 4), encode(msg, None, 4));
        // No blank line: all of it is header.
        assert_eq!(encode(b"A: 1\nB", Some(0), 2), b"A: 1\r\nB\r\n.\r\n");
    }

    #[test]
    fn counted_size_is_what_retr_sends_without_stuffing() {
        for msg in [&b"a\n.b\nc"[..], b"", b"x\r\n\r\n..\n", b"\n\n\r"] {
            let mut c = Counter::default();
            msg.chunks(2).for_each(|p| c.push(p));
            let sent = encode(msg, None, 5);
            let unstuffed: Vec<u8> = {
                let body = &sent[..sent.len() - 3];
                let mut v = Vec::new();
                for line in body.split_inclusive(|&b| b == b'\n') {
                    v.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
                }
                v
            };
            assert_eq!(c.finish(), unstuffed.len() as u64, "{msg:?}");
        }
    }
}
