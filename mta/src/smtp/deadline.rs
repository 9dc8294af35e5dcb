//! Whole-command and whole-DATA deadlines, sans IO.
//!
//! qmail-smtpd's `timeoutsmtpd` bounds a single read, so a client sending one byte just inside
//! each timeout holds its session (and a `concurrencyincoming` slot) forever. These deadlines
//! bound the whole unit instead: a command line must arrive complete within
//! [`Limits::command`] of its first byte, and a message within
//! max([`Limits::data_base`], bytes / [`Limits::data_rate`]) of its first byte. Before the
//! first byte only the per-read timeout applies, so an idle client still gets qmail's `451
//! timeout`. The driver tells the [`Watch`] what the session has reached and the time (its
//! environment's clock); the watch says how long the client has left.

use std::time::{Duration, SystemTime};

/// Default minimum average DATA rate, bytes per second. 1 KiB/s is below a 9600-baud modem,
/// so no real sender is ever cut, yet a 10 MB message may take at most ~3 hours; below the
/// base time (`timeoutsmtpd`, 20 minutes by default) the rate does not matter at all.
pub const DEFAULT_DATA_RATE: u64 = 1024;

/// How long a client may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A whole command line, from when the server awaits it.
    pub command: Duration,
    /// A whole message may always take this long...
    pub data_base: Duration,
    /// ...and longer only at this many bytes per second on average; 0: no whole-DATA limit.
    pub data_rate: u64,
}

/// What the session has reached: completed command lines, the message bytes received so far
/// while a message is being received, and whether any byte of the current command line or
/// message has arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub lines: u64,
    pub data: Option<u64>,
    pub started: bool,
}

impl Progress {
    /// Which unit this is, and whether it has begun: a change is a new clock.
    fn key(&self) -> (u64, bool, bool) {
        (self.lines, self.data.is_some(), self.started)
    }
}

/// Which deadline ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    Command,
    Data,
}

impl Overdue {
    /// RFC 5321 4.5.3.2: the server may close with a 421 after its own timeout.
    pub fn reply(self) -> &'static str {
        match self {
            Overdue::Command => "421 command not received in time, closing connection (#4.4.2)",
            Overdue::Data => "421 message arriving too slowly, closing connection (#4.4.2)",
        }
    }
}

/// Times the unit (command line or message) the session is receiving.
#[derive(Debug, Clone)]
pub struct Watch {
    limits: Limits,
    /// Progress when the clock last started.
    mark: Progress,
    since: SystemTime,
}

impl Watch {
    pub fn new(limits: Limits, p: Progress, now: SystemTime) -> Self {
        Watch {
            limits,
            mark: p,
            since: now,
        }
    }

    /// The server starts waiting for the client now (after a commit, whose time the client
    /// is not charged for).
    pub fn restart(&mut self, p: Progress, now: SystemTime) {
        self.mark = p;
        self.since = now;
    }

    /// Note the session's progress after input: a new unit, or the first byte of one, starts
    /// the clock now.
    pub fn observe(&mut self, p: Progress, now: SystemTime) {
        if p.key() != self.mark.key() {
            self.restart(p, now);
        }
    }

    /// Time the client has left for the current unit, and which deadline that is; `None` when
    /// nothing bounds it (yet). A clock that went backwards counts as no time passed.
    pub fn left(&self, p: Progress, now: SystemTime) -> Option<(Duration, Overdue)> {
        if !p.started {
            return None;
        }
        let elapsed = now.duration_since(self.since).unwrap_or_default();
        let (allowed, what) = match p.data {
            None => (self.limits.command, Overdue::Command),
            Some(_) if self.limits.data_rate == 0 => return None,
            Some(bytes) => {
                let by_rate =
                    Duration::from_millis(bytes.saturating_mul(1000) / self.limits.data_rate);
                (self.limits.data_base.max(by_rate), Overdue::Data)
            }
        };
        Some((allowed.saturating_sub(elapsed), what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        command: Duration::from_secs(10),
        data_base: Duration::from_secs(60),
        data_rate: 1000,
    };

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    fn idle(lines: u64) -> Progress {
        Progress {
            lines,
            data: None,
            started: false,
        }
    }

    fn cmd(lines: u64) -> Progress {
        Progress {
            started: true,
            ..idle(lines)
        }
    }

    fn data(lines: u64, bytes: u64) -> Progress {
        Progress {
            lines,
            data: Some(bytes),
            started: bytes > 0,
        }
    }

    #[test]
    fn a_trickled_command_runs_out_whatever_arrives() {
        let mut w = Watch::new(LIMITS, idle(0), at(0));
        // Idle: only the per-read timeout applies (qmail's 451).
        assert_eq!(w.left(idle(0), at(500)), None);
        // The first byte starts the clock; bytes keep coming but no line ends.
        w.observe(cmd(0), at(0));
        for s in 1..10 {
            w.observe(cmd(0), at(s));
        }
        assert_eq!(
            w.left(cmd(0), at(9)),
            Some((Duration::from_secs(1), Overdue::Command))
        );
        assert_eq!(
            w.left(cmd(0), at(11)),
            Some((Duration::ZERO, Overdue::Command))
        );
        // A completed line with the start of the next: that command's clock starts.
        w.observe(cmd(1), at(9));
        assert_eq!(w.left(cmd(1), at(11)).unwrap().0, Duration::from_secs(8));
        // A completed line alone: idle again until the next byte.
        w.observe(idle(2), at(12));
        assert_eq!(w.left(idle(2), at(100)), None);
        w.observe(cmd(2), at(100));
        assert_eq!(w.left(cmd(2), at(101)).unwrap().0, Duration::from_secs(9));
    }

    #[test]
    fn data_gets_the_base_time_then_needs_the_minimum_rate() {
        let mut w = Watch::new(LIMITS, cmd(3), at(0));
        w.observe(data(4, 0), at(1));
        assert_eq!(w.left(data(4, 0), at(500)), None, "no byte yet");
        w.observe(data(4, 1), at(5));
        let left = |bytes, t| w.left(data(4, bytes), at(t)).unwrap();
        assert_eq!(left(10, 64), (Duration::from_secs(1), Overdue::Data));
        assert_eq!(left(10, 70).0, Duration::ZERO);
        // 100 kB at 1000 B/s may take 100 s.
        assert_eq!(left(100_000, 70).0, Duration::from_secs(35));
        assert_eq!(left(100_000, 106).0, Duration::ZERO);
        // The end of the message starts a command clock.
        w.observe(cmd(4), at(80));
        assert_eq!(
            w.left(cmd(4), at(81)),
            Some((Duration::from_secs(9), Overdue::Command))
        );
    }

    #[test]
    fn rate_zero_means_no_whole_data_limit() {
        let limits = Limits {
            data_rate: 0,
            ..LIMITS
        };
        let w = Watch::new(limits, data(1, 5), at(0));
        assert_eq!(w.left(data(1, 5), at(1_000_000)), None);
    }

    #[test]
    fn a_clock_going_backwards_is_no_time_passed() {
        let w = Watch::new(LIMITS, cmd(0), at(100));
        assert!(w.left(cmd(0), at(50)).is_some());
        assert_eq!(w.left(cmd(0), at(50)).unwrap().0, LIMITS.command);
    }
}
