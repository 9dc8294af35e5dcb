//! The swarm's POP3 mail reader: every 30 s it logs in to `mta run --listen-pop3` as fred,
//! retrieves and deletes everything, and quits. What it deleted counts as read (where the
//! oracle looks for copies), and the oracle's POP3 rule is checked right when QUIT is answered
//! `+OK`: each deleted message must already be gone from what the disk holds durably.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mta::env::{Exit, Net};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::env::{SimEnv, TURMOIL};
use crate::fixture::root;
use crate::fs::Persist;
use crate::host::Setup;
use crate::world::Disk;

/// Where the MTA serves POP3.
pub const PORT: u16 = 110;
/// `control/checkpassword` of a world with the reader.
pub const CHECKER: &str = "check";
/// The reader stops after this many simulated seconds (past the faults and the first flush).
pub const UNTIL_SECS: u64 = 400;

/// What the reader did: unique name → (message, when deleted in ms), and rule violations.
#[derive(Debug, Default)]
pub struct Reads {
    pub got: BTreeMap<String, (String, u64)>,
    pub violations: Vec<String>,
}

pub type Shared = Arc<Mutex<Reads>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The scripted checkpassword: fred's password is `secret`.
pub fn setup() -> Setup {
    Arc::new(|env: &SimEnv| {
        let cmd = CHECKER.to_string();
        env.set_program(&cmd, |p| Exit {
            code: Some(if fred_secret(p) { 0 } else { 1 }),
            output: Vec::new(),
        });
    })
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64)
}

/// The reader task.
pub async fn reader(disk: Disk, reads: Shared) -> turmoil::Result {
    while now_ms() < UNTIL_SECS * 1000 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let _ = tokio::time::timeout(Duration::from_secs(60), session(&disk, &reads)).await;
    }
    Ok(())
}

type Conn = tokio::io::Lines<BufReader<<crate::env::SimNet as Net>::Stream>>;

/// The next line; the connection closing is an error (a crash mid-answer).
async fn line(c: &mut Conn) -> std::io::Result<String> {
    c.next_line()
        .await?
        .ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
}

/// Send `cmd`; true if the answer is `+OK`.
async fn ok(c: &mut Conn, cmd: &str) -> std::io::Result<bool> {
    let s = c.get_mut().get_mut();
    s.write_all(format!("{cmd}\r\n").as_bytes()).await?;
    Ok(line(c).await?.starts_with("+OK"))
}

/// The lines of a multi-line answer, unstuffed.
async fn body(c: &mut Conn) -> std::io::Result<Vec<String>> {
    let mut v = Vec::new();
    loop {
        let l = line(c).await?;
        if l == "." {
            return Ok(v);
        }
        v.push(l.strip_prefix('.').map_or(l.clone(), str::to_string));
    }
}

/// One session: everything retrieved and deleted; recorded once QUIT was sent.
async fn session(disk: &Disk, reads: &Shared) -> std::io::Result<()> {
    let to = SocketAddr::new(turmoil::lookup("mta"), PORT);
    let mut c = BufReader::new(TURMOIL.connect(to).await?).lines();
    if !line(&mut c).await?.starts_with("+OK") || !ok(&mut c, "USER fred").await? {
        return Ok(());
    }
    if !ok(&mut c, "PASS secret").await? || !ok(&mut c, "UIDL").await? {
        return Ok(());
    }
    let list: Vec<(String, String)> = body(&mut c)
        .await?
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, u)| (n.to_string(), u.to_string()))
        .collect();
    let mut deleted = Vec::new();
    for (n, uid) in list {
        if !ok(&mut c, &format!("RETR {n}")).await? {
            continue;
        }
        let text = body(&mut c).await?.join("\n") + "\n";
        if ok(&mut c, &format!("DELE {n}")).await? {
            deleted.push((uid, text));
        }
    }
    let s = c.get_mut().get_mut();
    s.write_all(b"QUIT\r\n").await?;
    let at = now_ms();
    {
        // Sent: the deletions may have happened, answered or not.
        let mut r = lock(reads);
        for (uid, text) in &deleted {
            r.got.insert(uid.clone(), (text.clone(), at));
        }
    }
    if line(&mut c).await?.starts_with("+OK") {
        durably_gone(disk, reads, &deleted);
    }
    Ok(())
}

/// QUIT was answered `+OK`: the deleted messages are gone from the durable disk.
fn durably_gone(disk: &Disk, reads: &Shared, deleted: &[(String, String)]) {
    let img = disk
        .live()
        .map_or_else(|| disk.image(), |f| f.crash_image(&Persist::Synced));
    let cur = root().join("home/fred/Maildir/cur");
    let files: Vec<String> = img.files().into_iter().map(|(p, _)| p).collect();
    for (uid, _) in deleted {
        let p = cur.join(format!("{uid}:2,")).display().to_string();
        if files.contains(&p) {
            lock(reads).violations.push(format!(
                "POP3 QUIT answered +OK at {} ms but {p} is still on the disk",
                now_ms()
            ));
        }
    }
}

/// What the scripted checkpassword accepts on descriptor 3: fred's password `secret`.
fn fred_secret(p: &mta::env::Program) -> bool {
    p.fd3
        .as_ref()
        .is_some_and(|s| s.0.starts_with(b"fred\0secret\0"))
}
