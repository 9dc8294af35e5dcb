//! Netstrings (`12:hello world!,`), the framing of QMTP and QMQP: a decimal length, a colon,
//! that many bytes, a comma. The [`Reader`] takes its bytes piece by piece and keeps at most
//! its limit of them, so a peer announcing a huge length cannot make us hold it.

/// Longest length prefix accepted (enough for any length a `u64` holds).
const MAX_DIGITS: usize = 19;

/// A peer broke the framing: the connection cannot continue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetstringError {
    #[error("a netstring length must be decimal digits followed by a colon")]
    BadLength,
    #[error("a netstring must end with a comma")]
    NoComma,
    #[error("a netstring must be no longer than {0} bytes here")]
    TooLong(u64),
}

/// One netstring's bytes.
pub fn encode(data: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", data.len()).into_bytes();
    v.extend_from_slice(data);
    v.push(b',');
    v
}

/// Split a buffer made of whole netstrings into their contents.
pub fn parse_all(mut buf: &[u8]) -> Result<Vec<&[u8]>, NetstringError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let colon = buf
            .iter()
            .take(MAX_DIGITS + 1)
            .position(|&b| b == b':')
            .ok_or(NetstringError::BadLength)?;
        let len = length(&buf[..colon])?;
        let rest = &buf[colon + 1..];
        let len = usize::try_from(len).map_err(|_| NetstringError::BadLength)?;
        if rest.len() <= len {
            return Err(NetstringError::NoComma);
        }
        if rest[len] != b',' {
            return Err(NetstringError::NoComma);
        }
        out.push(&rest[..len]);
        buf = &rest[len + 1..];
    }
    Ok(out)
}

fn length(digits: &[u8]) -> Result<u64, NetstringError> {
    if digits.is_empty() || digits.len() > MAX_DIGITS || !digits.iter().all(u8::is_ascii_digit) {
        return Err(NetstringError::BadLength);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(NetstringError::BadLength)
}

/// A whole netstring read by a [`Reader`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netstring {
    /// The contents; empty when they were over the limit.
    pub data: Vec<u8>,
    /// The announced length was over the limit and the contents were skipped.
    pub skipped: bool,
}

#[derive(Debug, Clone)]
enum Part {
    Length(Vec<u8>),
    Body(u64),
    Comma,
}

/// Reads one netstring incrementally.
#[derive(Debug, Clone)]
pub struct Reader {
    part: Part,
    /// Contents longer than this are skipped (`skip`) or refused.
    limit: u64,
    skip: bool,
    skipping: bool,
    data: Vec<u8>,
}

impl Reader {
    /// `skip`: over `limit`, read past the contents (reported as [`Netstring::skipped`]);
    /// otherwise an error.
    pub fn new(limit: u64, skip: bool) -> Reader {
        Reader {
            part: Part::Length(Vec::new()),
            limit,
            skip,
            skipping: false,
            data: Vec::new(),
        }
    }

    /// Take bytes from `input`: how many were used, and the netstring if it is complete.
    pub fn feed(&mut self, input: &[u8]) -> Result<(usize, Option<Netstring>), NetstringError> {
        let mut used = 0;
        while used < input.len() {
            let rest = &input[used..];
            match &mut self.part {
                Part::Length(digits) => {
                    used += 1;
                    if rest[0] != b':' {
                        digits.push(rest[0]);
                        if digits.len() > MAX_DIGITS || !rest[0].is_ascii_digit() {
                            return Err(NetstringError::BadLength);
                        }
                        continue;
                    }
                    let len = length(digits)?;
                    if len > self.limit {
                        if !self.skip {
                            return Err(NetstringError::TooLong(self.limit));
                        }
                        self.skipping = true;
                    }
                    self.part = if len == 0 {
                        Part::Comma
                    } else {
                        Part::Body(len)
                    };
                }
                Part::Body(left) => {
                    let n = rest.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                    if !self.skipping {
                        self.data.extend_from_slice(&rest[..n]);
                    }
                    used += n;
                    *left -= n as u64;
                    if *left == 0 {
                        self.part = Part::Comma;
                    }
                }
                Part::Comma => {
                    if rest[0] != b',' {
                        return Err(NetstringError::NoComma);
                    }
                    used += 1;
                    let done = Netstring {
                        data: std::mem::take(&mut self.data),
                        skipped: std::mem::take(&mut self.skipping),
                    };
                    self.part = Part::Length(Vec::new());
                    return Ok((used, Some(done)));
                }
            }
        }
        Ok((used, None))
    }

    /// True when nothing of a netstring has been read yet.
    pub fn at_start(&self) -> bool {
        matches!(&self.part, Part::Length(d) if d.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_any_pieces_and_bounds_memory() {
        let wire = [encode(b"hello world!"), encode(b""), encode(b"x")].concat();
        for split in 1..wire.len() {
            let mut r = Reader::new(100, false);
            let mut got = Vec::new();
            for piece in wire.chunks(split) {
                let mut off = 0;
                while off < piece.len() {
                    let (n, done) = r.feed(&piece[off..]).unwrap();
                    off += n;
                    got.extend(done.map(|d| d.data));
                }
            }
            assert_eq!(got, vec![b"hello world!".to_vec(), vec![], b"x".to_vec()]);
        }
        let mut r = Reader::new(3, true);
        let (n, d) = r.feed(b"5:abcde,").unwrap();
        assert_eq!((n, d.unwrap().skipped), (8, true));
        assert_eq!(
            Reader::new(3, false).feed(b"5:").unwrap_err(),
            NetstringError::TooLong(3)
        );
        assert!(Reader::new(3, false).feed(b"x:").is_err());
        assert!(Reader::new(3, false).feed(b"1:ab").is_err());
        assert!(Reader::new(9, false)
            .feed(b"99999999999999999999:")
            .is_err());
    }

    #[test]
    fn parse_all_splits_whole_netstrings() {
        let v = [encode(b"a@b"), encode(b"c@d")].concat();
        assert_eq!(parse_all(&v).unwrap(), vec![&b"a@b"[..], b"c@d"]);
        assert!(parse_all(b"3:ab,").is_err());
        assert!(parse_all(b"2:ab").is_err());
        assert!(parse_all(b":,").is_err());
        assert_eq!(parse_all(b"").unwrap(), Vec::<&[u8]>::new());
    }
}
