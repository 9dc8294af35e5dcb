//! The hostile-input table of issue 9: every row runs against the real `mta` binary on
//! loopback and records the reply, whether the server still greets, its memory and open
//! descriptors, and whether every acknowledged message arrived exactly once.

mod client;
mod fixture;
mod recorder;
mod render;
mod rows_local;
mod rows_ops;
mod rows_protocol;
mod rows_relay;
mod rows_slow;
mod setup;

use std::path::PathBuf;

pub use fixture::Ctx;
pub use render::{markdown, Meta};

/// Why the table could not be produced at all (a row's failure is a verdict, not an error).
#[derive(Debug, thiserror::Error)]
pub enum SecError {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("mta {what}: {detail}")]
    Mta { what: String, detail: String },
}

/// Sizes of the run: `quick` for CI, `full` for the committed report.
#[derive(Clone, Debug)]
pub struct Sizes {
    pub name: &'static str,
    /// Commands in one pipelined write.
    pub flood: usize,
    /// Simultaneous connections in the connection-flood rows.
    pub connections: usize,
    /// Recipients of the many-recipients row.
    pub rcpts: usize,
    /// Pipelined messages in one write.
    pub messages: usize,
    /// Bytes of the DATA over databytes.
    pub huge: usize,
    /// Bytes of the longest command and text line.
    pub long_line: usize,
}

impl Sizes {
    pub fn quick() -> Sizes {
        Sizes {
            name: "quick",
            flood: 2_000,
            connections: 300,
            rcpts: 120,
            messages: 50,
            huge: 3 << 20,
            long_line: 1 << 20,
        }
    }

    pub fn full() -> Sizes {
        Sizes {
            name: "full",
            flood: 20_000,
            connections: 2_000,
            rcpts: 400,
            messages: 500,
            huge: 50 << 20,
            long_line: 1 << 20,
        }
    }
}

/// Main server settings the rows rely on (also printed in the report header).
pub const DATABYTES: usize = 2_000_000;
pub const TIMEOUT: u64 = 3;
pub const CONCURRENCY: usize = 100;
pub const PER_IP: usize = 10;

/// What a row expects: a reply class, a closed connection, or an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    Class(u8),
    Closed,
    Exit(i32),
}

impl Expect {
    /// Does the observed reply (`"553 ..."`, `"closed"`, `"exit 111 ..."`) match?
    pub fn matches(self, reply: &str) -> bool {
        match self {
            Expect::Class(c) => reply.as_bytes().first() == Some(&(b'0' + c)),
            Expect::Closed => reply.starts_with("closed") || reply.starts_with("reset"),
            Expect::Exit(n) => reply.starts_with(&format!("exit {n}")),
        }
    }
}

/// "Nothing lost": every acknowledged message for a mailbox arrived exactly as often as it
/// should, and nothing unacknowledged appeared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lost {
    /// The row acknowledged no message for a mailbox and refused none.
    None,
    Ok {
        acked: usize,
        refused: usize,
    },
    Bad(String),
}

/// A row-specific property beyond reply and delivery (a file not written, a log line).
#[derive(Clone, Debug)]
pub struct Check {
    pub ok: bool,
    pub note: String,
}

/// Server state after a row.
#[derive(Clone, Copy, Debug)]
pub struct Mem {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub fds: usize,
}

/// One measured row.
#[derive(Clone, Debug)]
pub struct Row {
    pub category: &'static str,
    pub input: String,
    pub expect: Expect,
    pub reply: String,
    /// `None` where no server is meant to be running (a start that must fail).
    pub alive: Option<bool>,
    pub mem: Option<Mem>,
    pub lost: Lost,
    pub check: Option<Check>,
    pub instance: &'static str,
}

impl Row {
    /// "ok", or every reason the row failed.
    pub fn verdict(&self) -> String {
        let mut bad = Vec::new();
        if self.alive == Some(false) {
            bad.push("server died".to_string());
        }
        if let Lost::Bad(_) = self.lost {
            bad.push("lost".to_string());
        }
        if !self.expect.matches(&self.reply) {
            bad.push("wrong reply".to_string());
        }
        if let Some(c) = &self.check {
            if !c.ok {
                bad.push("check failed".to_string());
            }
        }
        if bad.is_empty() {
            "ok".into()
        } else {
            bad.join(", ")
        }
    }
}

/// Where the run happens and how big it is.
pub struct Config {
    pub mta: PathBuf,
    pub sizes: Sizes,
    /// Scratch directory for installations (tmpfs mounts go under it too).
    pub scratch: PathBuf,
}

/// Run every row; returns them in table order.
pub fn run(cfg: &Config) -> Result<Vec<Row>, SecError> {
    let mut ctx = Ctx::start(cfg)?;
    rows_relay::run(&mut ctx)?;
    rows_relay::paths(&mut ctx)?;
    rows_protocol::injection(&mut ctx)?;
    rows_protocol::long_lines(&mut ctx)?;
    rows_protocol::floods(&mut ctx)?;
    rows_protocol::slow(&mut ctx)?;
    rows_protocol::smuggling(&mut ctx)?;
    rows_local::run(&mut ctx)?;
    rows_ops::run(&mut ctx)?;
    Ok(ctx.finish())
}
