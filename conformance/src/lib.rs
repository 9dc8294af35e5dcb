//! SMTP conformance dialogues (`fixtures/smtp/*.txt`) and a runner that plays them over any
//! byte stream: real TCP against a live server, or the simulator's network.
//!
//! Fixture lines:
//! - `C: text`: send `text` and CRLF;
//! - `R: text` / `R*N: text`: send raw bytes (escapes `\r \n \t \\ \0 \xNN`), N times;
//! - `S: prefix`: the next reply line must start with `prefix`;
//! - `CLOSE`: the server must close the connection (without a reply line before it);
//! - `TLS`: a TLS handshake as the client (after the server's `220` to STARTTLS); every step
//!   after it runs inside TLS;
//! - `#` comments and blank lines are ignored.

pub mod catalogue;
pub mod client;
pub mod matrix;
pub mod netstrings;
pub mod pic;
pub mod play;
pub mod profile;
pub mod report;
pub mod runner;
pub mod tls;

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Send(Vec<u8>),
    Expect(String),
    Close,
    Tls,
}

#[derive(Debug, Clone)]
pub struct Dialogue {
    pub name: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{file} line {line}: {why}")]
    Parse {
        file: String,
        line: usize,
        why: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let c = *b.get(i + 1).ok_or("trailing backslash")?;
        i += 2;
        out.push(match c {
            b'r' => b'\r',
            b'n' => b'\n',
            b't' => b'\t',
            b'0' => 0,
            b'\\' => b'\\',
            b'x' => {
                let h = s.get(i..i + 2).ok_or("short \\x escape")?;
                i += 2;
                u8::from_str_radix(h, 16).map_err(|_| "bad \\x escape")?
            }
            _ => return Err(format!("unknown escape \\{}", c as char)),
        });
    }
    Ok(out)
}

impl Dialogue {
    pub fn parse(name: &str, text: &str) -> Result<Dialogue, Error> {
        let mut steps = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let err = |why: String| Error::Parse {
                file: name.to_string(),
                line: n + 1,
                why,
            };
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "CLOSE" {
                steps.push(Step::Close);
            } else if line == "TLS" {
                steps.push(Step::Tls);
            } else if let Some(t) = line.strip_prefix("C:") {
                let t = t.strip_prefix(' ').unwrap_or(t);
                steps.push(Step::Send(format!("{t}\r\n").into_bytes()));
            } else if let Some(t) = line.strip_prefix("S:") {
                steps.push(Step::Expect(t.strip_prefix(' ').unwrap_or(t).to_string()));
            } else if let Some(rest) = line.strip_prefix('R') {
                let (count, t) = rest
                    .split_once(':')
                    .ok_or_else(|| err("R needs ':'".into()))?;
                let count = match count.strip_prefix('*') {
                    Some(c) => c
                        .parse::<usize>()
                        .map_err(|_| err("bad repeat count".into()))?,
                    None if count.is_empty() => 1,
                    None => return Err(err("bad R directive".into())),
                };
                let bytes = unescape(t.strip_prefix(' ').unwrap_or(t)).map_err(err)?;
                steps.push(Step::Send(bytes.repeat(count)));
            } else {
                return Err(err(format!("unknown directive {line:?}")));
            }
        }
        Ok(Dialogue {
            name: name.to_string(),
            steps,
        })
    }

    /// Every `*.txt` dialogue in a directory, sorted by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Dialogue>, Error> {
        let mut names: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p)?;
                let name = p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                Dialogue::parse(&name, &text)
            })
            .collect()
    }
}

/// The fixtures directory of this repository.
pub fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

/// A string unique to this run, part of every dialogue's `${token}`.
pub fn run_token() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{}", t.as_secs(), std::process::id())
}

/// `YYYY-MM-DD HH:MM UTC` for a Unix time (civil-from-days, proleptic Gregorian).
pub fn utc(unix: u64) -> String {
    let (days, secs) = ((unix / 86400) as i64, unix % 86400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// The lines a report starts with: what ran, against what, where and when.
pub fn report_header(server: &str, p: &profile::Profile, o: &runner::Options) -> Vec<String> {
    let mut h = vec![
        format!("Server: {server}, profile `{}`", p.name),
        format!(
            "Delivery checks: {}; slow entries: {}",
            if o.mailbox.is_some() { "on" } else { "off" },
            if o.slow { "on" } else { "off (n/a)" }
        ),
    ];
    h.extend(machine_and_date());
    h
}

/// "Machine: host, N cores, os" and "Date: ..." (UTC).
pub fn machine_and_date() -> Vec<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    vec![
        format!("Machine: {host}, {cores} cores, {}", std::env::consts::OS),
        format!("Date: {}", utc(now)),
    ]
}

/// How strictly replies are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// The reply line starts with the whole expected text (our qmail-compatible server).
    Text,
    /// Only the three-digit code and the continuation mark (any RFC 2821 server).
    Code,
}

type Conn = BufReader<Box<dyn tls::Io>>;

/// Play a dialogue; returns the transcript, or what went wrong with the transcript so far.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    d: &Dialogue,
    m: Match,
    timeout: Duration,
) -> Result<String, String> {
    let mut s: Conn = BufReader::new(Box::new(stream));
    let mut transcript = String::new();
    for (i, step) in d.steps.iter().enumerate() {
        let done = match step {
            Step::Send(b) => match s.get_mut().write_all(b).await {
                Ok(()) => Ok(format!(
                    "C: {}\n",
                    String::from_utf8_lossy(&b[..b.len().min(80)]).trim_end()
                )),
                Err(e) => Err(format!("write: {e}")),
            },
            Step::Expect(want) => expect_line(&mut s, want, m, timeout).await,
            Step::Tls => match start_tls(s, timeout).await {
                Ok(t) => {
                    s = t;
                    Ok("TLS\n".into())
                }
                // The connection went with the handshake: nothing more to play.
                Err(why) => return Err(format!("{}: step {}: {why}\n{transcript}", d.name, i + 1)),
            },
            Step::Close => expect_close(&mut s, timeout).await,
        };
        match done {
            Ok(t) => transcript.push_str(&t),
            Err(why) => return Err(format!("{}: step {}: {why}\n{transcript}", d.name, i + 1)),
        }
    }
    Ok(transcript)
}

/// The next reply line must match `want`; its transcript line, or why not (with the line).
async fn expect_line(
    s: &mut Conn,
    want: &str,
    m: Match,
    timeout: Duration,
) -> Result<String, String> {
    let mut line = Vec::new();
    let r = tokio::time::timeout(timeout, s.read_until(b'\n', &mut line)).await;
    let got = String::from_utf8_lossy(&line).trim_end().to_string();
    match r {
        Err(_) => return Err(format!("timed out waiting for {want:?}")),
        Ok(Err(e)) => return Err(format!("read: {e}")),
        Ok(Ok(0)) => return Err(format!("closed, expected {want:?}")),
        Ok(Ok(_)) => {}
    }
    let ok = match m {
        Match::Text => got.starts_with(want),
        Match::Code => {
            got.get(..3) == want.get(..3)
                && got.get(3..4).unwrap_or(" ") == want.get(3..4).unwrap_or(" ")
        }
    };
    if !ok {
        return Err(format!("expected {want:?}, got {got:?}\nS: {got}"));
    }
    if !line.ends_with(b"\r\n") {
        return Err(format!("reply line not ended by CRLF\nS: {got}"));
    }
    Ok(format!("S: {got}\n"))
}

/// The client's handshake, right after the server's 220 to STARTTLS.
async fn start_tls(s: Conn, timeout: Duration) -> Result<Conn, String> {
    // Nothing may be buffered: the server's first TLS bytes follow its 220.
    if !s.buffer().is_empty() {
        return Err("bytes after the 220, before the handshake".into());
    }
    let handshake = tls::handshake(s.into_inner(), "heaven.af.mil");
    match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(t)) => Ok(BufReader::new(t)),
        Ok(Err(e)) => Err(format!("TLS handshake: {e}")),
        Err(_) => Err("TLS handshake timed out".into()),
    }
}

/// The server must close the connection without another reply line.
async fn expect_close(s: &mut Conn, timeout: Duration) -> Result<String, String> {
    let mut rest = Vec::new();
    match tokio::time::timeout(timeout, s.read_until(b'\n', &mut rest)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Ok("closed\n".into()),
        // Bytes that end at the close without a line end are no reply (a TLS alert to a
        // client that did not handshake).
        Ok(Ok(n)) if !rest.ends_with(b"\n") => {
            Ok(format!("closed after {n} bytes that are no reply\n"))
        }
        Ok(Ok(_)) => Err(format!(
            "expected close, got {:?}",
            String::from_utf8_lossy(&rest)
        )),
        Err(_) => Err("connection still open".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fixture_parses() {
        let d = Dialogue::load_dir(&fixtures().join("smtp")).unwrap();
        assert!(d.len() >= 15);
        assert!(d.iter().all(|d| !d.steps.is_empty()));
    }

    #[test]
    fn directives() {
        let d = Dialogue::parse("t", "# c\nS: 220\nC: HELO x\nR*2: a\\r\\n\\x41\nCLOSE\n").unwrap();
        assert_eq!(
            d.steps,
            vec![
                Step::Expect("220".into()),
                Step::Send(b"HELO x\r\n".to_vec()),
                Step::Send(b"a\r\nAa\r\nA".to_vec()),
                Step::Close
            ]
        );
        assert!(Dialogue::parse("t", "Q: what\n").is_err());
        assert!(Dialogue::parse("t", "R: \\q\n").is_err());
    }
}
