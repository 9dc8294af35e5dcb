//! Conformance dialogues for the netstring protocols, QMTP and QMQP (`fixtures/qmtp/`,
//! `fixtures/qmqp/`): a client writing netstrings and a server answering with one reply
//! netstring per recipient (QMTP) or per message (QMQP), played over a byte stream.
//!
//! One step per line (`#` starts a comment line):
//! - `N: text`: send a netstring holding `text` (`N:` alone: an empty one);
//! - `L: a b c`: send a netstring holding one netstring per word (a QMTP recipient list);
//! - `{` ... `}`: what the lines between send is sent as one netstring (a QMQP package);
//! - `R: text`: send `text` as it is (broken framing);
//! - `S: text`: expect a reply netstring whose contents start with `text` (`K`, `Z`, `D`);
//! - `CLOSE`: expect the server to close without saying more;
//! - `M: text`: the message delivered for this dialogue (the one holding `${token}`) holds
//!   `text` (needs a Maildir).
//!
//! In text, `\n`, `\r`, `\t` and `\\` are escapes, and `${domain}` and `${token}` are
//! replaced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// One step of a dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Send(Vec<u8>),
    Expect(String),
    Close,
    Mail(String),
}

/// A dialogue file: its name and steps.
#[derive(Debug, Clone)]
pub struct Dialogue {
    pub name: String,
    pub steps: Vec<Step>,
}

fn netstring(b: &[u8]) -> Vec<u8> {
    let mut v = format!("{}:", b.len()).into_bytes();
    v.extend_from_slice(b);
    v.push(b',');
    v
}

fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut it = s.bytes();
    while let Some(c) = it.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

/// The values put in place of `${domain}` and `${token}`.
#[derive(Debug, Clone)]
pub struct Vars {
    pub domain: String,
    pub token: String,
}

impl Vars {
    fn subst(&self, s: &str) -> String {
        s.replace("${domain}", &self.domain)
            .replace("${token}", &self.token)
    }
}

/// Read a dialogue; errors name the line.
pub fn parse(name: &str, text: &str, v: &Vars) -> Result<Dialogue, String> {
    let mut steps = Vec::new();
    // Bytes of the `{ ... }` blocks being built, innermost last.
    let mut open: Vec<Vec<u8>> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("{name}:{}: {why}", n + 1);
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sent = match line.split_once(": ").map(|(k, t)| (k, v.subst(t))) {
            _ if line == "{" => {
                open.push(Vec::new());
                continue;
            }
            _ if line == "}" => {
                let inner = open.pop().ok_or_else(|| bad("} without {"))?;
                netstring(&inner)
            }
            _ if line == "N:" => netstring(b""),
            _ if line == "CLOSE" => {
                steps.push(Step::Close);
                continue;
            }
            Some(("N", t)) => netstring(&unescape(&t)),
            Some(("L", t)) => netstring(
                &t.split_whitespace()
                    .flat_map(|w| netstring(w.as_bytes()))
                    .collect::<Vec<u8>>(),
            ),
            Some(("R", t)) => unescape(&t),
            Some(("S", t)) => {
                steps.push(Step::Expect(t));
                continue;
            }
            Some(("M", t)) => {
                steps.push(Step::Mail(t));
                continue;
            }
            _ => return Err(bad("not a step")),
        };
        match open.last_mut() {
            Some(block) => block.extend_from_slice(&sent),
            None => steps.push(Step::Send(sent)),
        }
    }
    if !open.is_empty() {
        return Err(format!("{name}: {{ without }}"));
    }
    Ok(Dialogue {
        name: name.to_string(),
        steps,
    })
}

/// Every `*.txt` dialogue file of `dir`, by name: its name and text.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, String)>, String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let name = p.file_stem().unwrap_or_default().to_string_lossy();
            Ok((name.into_owned(), text))
        })
        .collect()
}

/// Read one netstring's contents (at most 64 KiB); `None` when the server closed first.
async fn read_netstring<S: AsyncRead + Unpin>(s: &mut S) -> Result<Option<Vec<u8>>, String> {
    let mut len = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b).await {
            Ok(0) if len.is_empty() => return Ok(None),
            Ok(0) => return Err("closed inside a reply".into()),
            Ok(_) if b[0] == b':' => break,
            Ok(_) if b[0].is_ascii_digit() && len.len() < 5 => len.push(b[0]),
            Ok(_) => return Err(format!("not a netstring: byte {:?}", b[0] as char)),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let n: usize = String::from_utf8_lossy(&len)
        .parse()
        .map_err(|_| "bad length")?;
    let mut data = vec![0u8; n + 1];
    s.read_exact(&mut data)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if data.pop() != Some(b',') {
        return Err("reply netstring without its comma".into());
    }
    Ok(Some(data))
}

/// The delivered message holding `token` in `maildir`'s `new/` or `cur/`, polled until
/// `deadline`.
async fn delivered(maildir: &Path, token: &str, deadline: Instant) -> Option<String> {
    loop {
        for sub in ["new", "cur"] {
            for e in std::fs::read_dir(maildir.join(sub))
                .into_iter()
                .flatten()
                .flatten()
            {
                let text = String::from_utf8_lossy(&std::fs::read(e.path()).unwrap_or_default())
                    .into_owned();
                if text.contains(token) {
                    return Some(text);
                }
            }
        }
        if Instant::now() >= deadline {
            return None;
        }
        // Delivery is asynchronous: look again shortly, bounded by the deadline.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Play a dialogue; `Err` names the failing step and why.
pub async fn play<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    d: &Dialogue,
    (token, maildir): (&str, Option<&Path>),
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    for (i, st) in d.steps.iter().enumerate() {
        let fail = |why: String| format!("{} step {}: {why}", d.name, i + 1);
        let r = tokio::time::timeout_at(deadline, step(s, st, token, maildir, deadline)).await;
        r.map_err(|_| fail("timed out".into()))?.map_err(fail)?;
    }
    Ok(())
}

async fn step<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    st: &Step,
    token: &str,
    maildir: Option<&Path>,
    deadline: Instant,
) -> Result<(), String> {
    match st {
        Step::Send(b) => s.write_all(b).await.map_err(|e| format!("write: {e}")),
        Step::Expect(want) => match read_netstring(s).await? {
            Some(got) if got.starts_with(want.as_bytes()) => Ok(()),
            Some(got) => Err(format!(
                "expected {want:?}, got {:?}",
                String::from_utf8_lossy(&got)
            )),
            None => Err(format!("expected {want:?}, the server closed")),
        },
        Step::Close => match read_netstring(s).await {
            Ok(None) | Err(_) => Ok(()),
            Ok(Some(got)) => Err(format!(
                "expected a close, got {:?}",
                String::from_utf8_lossy(&got)
            )),
        },
        Step::Mail(want) => {
            let dir = maildir.ok_or("no Maildir to check delivered mail in")?;
            let m = delivered(dir, token, deadline)
                .await
                .ok_or("the message was not delivered in time")?;
            if m.contains(want.as_str()) {
                Ok(())
            } else {
                Err(format!("the delivered message lacks {want:?}: {m:?}"))
            }
        }
    }
}

/// Play every dialogue of `dir` against `server`, each on a connection of its own with a
/// token of its own: each dialogue's name and verdict.
pub async fn run_dir(
    server: std::net::SocketAddr,
    dir: &Path,
    domain: &str,
    maildir: Option<&Path>,
) -> Result<Vec<(String, Result<(), String>)>, String> {
    let base = crate::run_token();
    let mut verdicts = Vec::new();
    for (i, (name, text)) in load_dir(dir)?.into_iter().enumerate() {
        let v = Vars {
            domain: domain.into(),
            token: format!("{base}-{i}"),
        };
        let d = parse(&name, &text, &v)?;
        let r = match tokio::net::TcpStream::connect(server).await {
            Ok(mut s) => play(&mut s, &d, (&v.token, maildir), Duration::from_secs(30)).await,
            Err(e) => Err(format!("connect: {e}")),
        };
        verdicts.push((name, r));
    }
    Ok(verdicts)
}

/// `mta-conform netstrings`: the QMTP or QMQP dialogues of a directory against a server.
#[derive(clap::Args)]
pub struct Args {
    /// Server address (its QMTP or QMQP port), HOST:PORT.
    #[arg(long)]
    pub server: std::net::SocketAddr,
    /// Dialogue directory, e.g. fixtures/qmtp or fixtures/qmqp.
    #[arg(long)]
    pub dir: PathBuf,
    /// The server's domain (it must accept mail for postmaster and fred there).
    #[arg(long, default_value = "heaven.af.mil")]
    pub domain: String,
    /// The Maildir receiving fred's mail: enables the `M:` checks.
    #[arg(long)]
    pub maildir: Option<PathBuf>,
}

/// Run the subcommand: one line per dialogue; failure when any failed (2: could not run).
pub async fn cli(a: Args) -> std::process::ExitCode {
    let verdicts = match run_dir(a.server, &a.dir, &a.domain, a.maildir.as_deref()).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("mta-conform: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut failed = 0;
    for (name, r) in &verdicts {
        match r {
            Ok(()) => println!("PASS {name}"),
            Err(why) => {
                failed += 1;
                println!("FAIL {name}: {why}");
            }
        }
    }
    println!("{} dialogues, {failed} failed", verdicts.len());
    if failed == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_and_lists_build_nested_netstrings() {
        let v = Vars {
            domain: "d.example".into(),
            token: "T".into(),
        };
        let d = parse(
            "x",
            "# c\n{\nN: a\\n${token}\nL: b@${domain} c\n}\nS: K\nCLOSE\n",
            &v,
        )
        .unwrap();
        let list = [netstring(b"b@d.example"), netstring(b"c")].concat();
        let inner = [netstring(b"a\nT"), netstring(&list)].concat();
        assert_eq!(
            d.steps,
            [
                Step::Send(netstring(&inner)),
                Step::Expect("K".into()),
                Step::Close
            ]
        );
        assert!(parse("x", "{\nN: a\n", &v).is_err());
        assert!(parse("x", "Q: a\n", &v).is_err());
    }
}
