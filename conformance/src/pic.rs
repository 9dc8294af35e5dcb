//! qmail's PIC scenarios (and other delivery scenarios) as data: `fixtures/pic/<name>/scenario`
//! says how to set an installation up, what to inject and what must come of it; one runner
//! checks the outcome on any host that can show its files and its qmail-send log (the
//! simulator, or a real `mta run`).
//!
//! Scenario lines (`#` comments; the first comment line is the title):
//! - `control NAME TEXT`: a line of `control/NAME` (repeated lines make several);
//! - `file PATH TEXT`: a line of a file under the installation (`home/fred/.qmail-sos`);
//! - `inject SENDER RCPT...`: a message injected by `mta inject -f SENDER RCPT...` (qmail-inject:
//!   its header fixed up), its bytes from the scenario's `message` file, else
//!   `fixtures/pic/message`;
//! - `expect contains PATH TEXT` / `expect lacks PATH TEXT`: a file holds (or not) TEXT;
//! - `expect absent PATH`: no such file (or an empty one: nothing was delivered there);
//! - `expect count N PATH TEXT`: TEXT occurs exactly N times in the file;
//! - `expect equals PATH FILE`: the file is the scenario's FILE, dates, process and user
//!   numbers and message ids aside (they differ between hosts and runs);
//! - `expect log N TEXT`: N qmail-send log lines contain TEXT;
//! - `expect drained`: nothing is left in the queue.
//!
//! Users fred, joe and john exist; mail to postmaster goes to fred (`mta init`'s aliases).
//!
//! Remote delivery: a scenario whose control files or files say `${relay}` gets an SMTP peer
//! that accepts everything, and `${relay}` becomes its name in `control/smtproutes` syntax
//! (`bigbang.af.mil` in the simulator, `[127.0.0.1]:PORT` on a real host); the path `@relay`
//! in an expectation is every message the peer took, one after the other.

use std::path::{Path, PathBuf};

/// Files as (name or path, text).
pub type Files = Vec<(String, String)>;

/// One scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    pub name: String,
    pub title: String,
    pub controls: Files,
    pub files: Files,
    pub injects: Vec<Inject>,
    pub message: String,
    pub expects: Vec<Expect>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inject {
    pub sender: String,
    pub rcpts: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    Contains(String, String),
    Lacks(String, String),
    Absent(String),
    Count(usize, String, String),
    Equals(String, String),
    Log(usize, String),
    Drained,
}

/// The path of an expectation that means the messages the relay took.
pub const RELAYED: &str = "@relay";

impl Scenario {
    /// Whether the scenario needs the SMTP peer (`${relay}` in a control file or file).
    pub fn needs_relay(&self) -> bool {
        let mut all = self.controls.iter().chain(&self.files);
        all.any(|(_, t)| t.contains("${relay}"))
    }

    /// Control files and files with `${relay}` made the peer's route.
    pub fn with_relay(&self, relay: &str) -> (Files, Files) {
        let sub = |v: &[(String, String)]| -> Files {
            v.iter()
                .map(|(n, t)| (n.clone(), t.replace("${relay}", relay)))
                .collect()
        };
        (sub(&self.controls), sub(&self.files))
    }
}

/// What the runner needs of a host after the scenario ran.
pub trait Host {
    /// A file under the installation, if it exists; [`RELAYED`]: what the relay took.
    fn read(&self, path: &str) -> Option<String>;
    /// qmail-send's log lines.
    fn log(&self) -> Vec<String>;
    /// Messages (and injections) left in the queue.
    fn queued(&self) -> usize;
}

#[derive(Debug, thiserror::Error)]
pub enum PicError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} line {1}: {2}")]
    Syntax(PathBuf, usize, String),
}

/// Every scenario under `dir` (one directory each), by name.
pub fn load_all(dir: &Path) -> Result<Vec<Scenario>, PicError> {
    let io = |e| PicError::Io(dir.to_path_buf(), e);
    // Every directory is a scenario: one without its `scenario` file is an error, not skipped.
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    names.sort();
    let default = std::fs::read_to_string(dir.join("message")).map_err(io)?;
    names.iter().map(|d| load(d, &default)).collect()
}

/// The scenario in directory `dir`; `default` is the message when it has none of its own.
pub fn load(dir: &Path, default: &str) -> Result<Scenario, PicError> {
    let path = dir.join("scenario");
    let text = std::fs::read_to_string(&path).map_err(|e| PicError::Io(path.clone(), e))?;
    let message = match std::fs::read_to_string(dir.join("message")) {
        Ok(m) => m,
        Err(_) => default.to_string(),
    };
    let mut s = Scenario {
        name: dir
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
        title: String::new(),
        controls: Vec::new(),
        files: Vec::new(),
        injects: Vec::new(),
        message,
        expects: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| PicError::Syntax(path.clone(), i + 1, why.to_string());
        if let Some(c) = line.strip_prefix('#') {
            if s.title.is_empty() {
                s.title = c.trim().to_string();
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        parse_line(&mut s, dir, line).map_err(|e| bad(&e))?;
    }
    if s.injects.is_empty() || s.expects.is_empty() {
        return Err(PicError::Syntax(path, 0, "no inject or no expect".into()));
    }
    Ok(s)
}

/// Appended as a line to the file's text so far.
fn add_line(v: &mut Vec<(String, String)>, name: &str, text: &str) {
    match v.iter_mut().find(|(n, _)| n == name) {
        Some((_, t)) => t.push_str(&format!("{text}\n")),
        None => v.push((name.to_string(), format!("{text}\n"))),
    }
}

fn parse_line(s: &mut Scenario, dir: &Path, line: &str) -> Result<(), String> {
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let two = |r: &str| -> Result<(String, String), String> {
        let (a, b) = r.split_once(' ').ok_or("wants a name and a text")?;
        Ok((a.to_string(), b.to_string()))
    };
    match word {
        "control" => {
            let (n, t) = two(rest)?;
            add_line(&mut s.controls, &n, &t);
        }
        "file" => {
            let (n, t) = two(rest)?;
            add_line(&mut s.files, &n, &t);
        }
        "inject" => {
            let mut w = rest.split_whitespace().map(String::from);
            let sender = w.next().ok_or("inject wants a sender")?;
            let rcpts: Vec<String> = w.collect();
            if rcpts.is_empty() {
                return Err("inject wants recipients".into());
            }
            s.injects.push(Inject { sender, rcpts });
        }
        "expect" => s.expects.push(parse_expect(dir, rest)?),
        other => return Err(format!("unknown keyword {other:?}")),
    }
    Ok(())
}

fn parse_expect(dir: &Path, rest: &str) -> Result<Expect, String> {
    let (kind, args) = rest.split_once(' ').unwrap_or((rest, ""));
    let two = |r: &str| -> Result<(String, String), String> {
        let (a, b) = r
            .split_once(' ')
            .ok_or(format!("expect {kind} wants two arguments"))?;
        Ok((a.to_string(), b.to_string()))
    };
    let number = |n: &str| {
        n.parse::<usize>()
            .map_err(|_| format!("not a count: {n:?}"))
    };
    Ok(match kind {
        "contains" => two(args).map(|(p, t)| Expect::Contains(p, t))?,
        "lacks" => two(args).map(|(p, t)| Expect::Lacks(p, t))?,
        "absent" if !args.is_empty() => Expect::Absent(args.to_string()),
        "count" => {
            let (n, r) = two(args)?;
            let (p, t) = two(&r)?;
            Expect::Count(number(&n)?, p, t)
        }
        "equals" => {
            let (p, f) = two(args)?;
            let text = std::fs::read_to_string(dir.join(&f)).map_err(|e| format!("{f}: {e}"))?;
            Expect::Equals(p, text)
        }
        "log" => {
            let (n, t) = two(args)?;
            Expect::Log(number(&n)?, t)
        }
        "drained" => Expect::Drained,
        _ => return Err(format!("unknown expectation {kind:?}")),
    })
}

/// What differs between hosts and runs in delivered mail: dates, process numbers, message ids.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Only an mbox From_ line (first, or after a blank line) has a date to set aside.
    let mut after_blank = true;
    for line in text.split_inclusive('\n') {
        let end = if line.ends_with('\n') { "\n" } else { "" };
        let from_line = after_blank && line.starts_with("From ");
        after_blank = line == "\n";
        if let Some(r) = line.strip_prefix("From ").filter(|_| from_line) {
            let who = r.split(' ').next().unwrap_or("");
            out.push_str(&format!("From {who} DATE{end}"));
        } else if line.starts_with("Date: ") {
            out.push_str(&format!("Date: DATE{end}"));
        } else if line.starts_with("Message-ID: ") {
            out.push_str(&format!("Message-ID: ID{end}"));
        } else if let Some(r) = line.strip_prefix("Received: (qmail ") {
            let what = r.split_once(' ').map_or("", |(_, w)| w);
            let what = what.split_once(';').map_or(what, |(w, _)| w);
            let what = if what.starts_with("invoked by uid ") {
                "invoked by uid UID)"
            } else {
                what
            };
            out.push_str(&format!("Received: (qmail QP {what}; DATE{end}"));
        } else {
            out.push_str(line);
        }
    }
    out
}

/// Every expectation the host does not meet, described. A file an expectation reads must
/// exist (only `absent` is met by no file), so nothing passes for want of the file.
pub fn check(s: &Scenario, host: &dyn Host) -> Vec<String> {
    let file = |p: &str| host.read(p);
    let has = |p: &str, f: &dyn Fn(&str) -> bool| file(p).is_some_and(|t| f(&t));
    let mut bad = Vec::new();
    for e in &s.expects {
        let ok = match e {
            Expect::Contains(p, t) => has(p, &|x| x.contains(t.as_str())),
            Expect::Lacks(p, t) => has(p, &|x| !x.contains(t.as_str())),
            Expect::Absent(p) => file(p).is_none_or(|t| t.is_empty()),
            Expect::Count(n, p, t) => has(p, &|x| x.matches(t.as_str()).count() == *n),
            Expect::Equals(p, want) => has(p, &|x| normalise(x) == normalise(want)),
            Expect::Log(n, t) => host.log().iter().filter(|l| l.contains(t.as_str())).count() == *n,
            Expect::Drained => host.queued() == 0,
        };
        if !ok {
            bad.push(describe(e, host));
        }
    }
    bad
}

fn describe(e: &Expect, host: &dyn Host) -> String {
    let file = |p: &str| {
        host.read(p)
            .map_or("(no such file)".into(), |t| format!("{t:?}"))
    };
    match e {
        Expect::Log(n, t) => {
            let got = host.log().iter().filter(|l| l.contains(t.as_str())).count();
            format!("{n} log lines with {t:?} wanted, {got} found")
        }
        Expect::Drained => format!("{} left in the queue", host.queued()),
        Expect::Contains(p, _)
        | Expect::Lacks(p, _)
        | Expect::Absent(p)
        | Expect::Count(_, p, _)
        | Expect::Equals(p, _) => format!("{e:?} not met; {p} is {}", file(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_process_numbers_are_set_aside() {
        let a = "From joe@x Thu Jan  1 00:00:00 2026\nReceived: (qmail 37512 invoked for bounce); 1 Jan 2026 00:00:00 -0000\nReceived: (qmail 1 invoked by uid 1000); 1 Jan 2026 00:00:00 -0000\nDate: 1 Jan 2026\nMessage-ID: <1.2@x>\nbody\n";
        let b = "From joe@x Mon Nov 23 12:00:01 2026\nReceived: (qmail 9 invoked for bounce); 23 Nov 2026 12:00:01 -0000\nReceived: (qmail 25355 invoked by uid 0); 23 Nov 2026 11:41:59 -0000\nDate: 23 Nov 2026\nMessage-ID: <3.4@x>\nbody\n";
        assert_eq!(normalise(a), normalise(b));
        assert_ne!(normalise(a), normalise(&b.replace("body", "other")));
        assert_ne!(
            normalise(a),
            normalise(&b.replace("From joe@x", "From bob@x"))
        );
    }
}
