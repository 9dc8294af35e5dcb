//! The swarm's oracle. Every transmission (an SMTP attempt or a local injection) carries a
//! unique token, so copies are counted per transmission, wherever they end up (a mailbox, a
//! peer, inside a bounce). An acknowledged transmission appears exactly once, an
//! unacknowledged one at most once; a second copy is allowed only where the sender could not
//! know the first one arrived: the peer's 250 never reached the MTA in time, or the MTA went
//! down (or could not record the outcome) between the peer's 250 and the next attempt.

use crate::remote_world::PeerCopy;

/// One transmission of the world's workload.
#[derive(Debug, Clone)]
pub struct Sent {
    pub token: String,
    /// The sender saw it accepted (250 after the dot, or `inject` returned Ok).
    pub acked: bool,
    /// When it was sent (simulated ms).
    pub at_ms: u64,
}

/// Where copies can end up.
#[derive(Debug, Default)]
pub struct Found {
    /// Messages in every mailbox of every MTA host.
    pub mailboxes: Vec<String>,
    /// Messages a mail reader took out of a mailbox (deleted), with when (simulated ms).
    pub read: Vec<(String, u64)>,
    /// Messages the scripted peer took, with when and whether its 250 left in time.
    pub peer: Vec<(String, PeerCopy)>,
    /// Messages other scripted peers took.
    pub others: Vec<String>,
}

/// Moments (simulated ms) at which the sending MTA could lose track of a delivery it made:
/// machine crashes, outcomes it failed to record, and partition windows.
#[derive(Debug, Default, Clone)]
pub struct Excuses {
    pub points: Vec<u64>,
    pub windows: Vec<(u64, u64)>,
    /// Transmissions whose message record latent corruption destroyed: they may be lost.
    pub damaged: Vec<String>,
    /// Transmissions whose outcome or retirement it destroyed: they may arrive again.
    pub again: Vec<String>,
}

impl Excuses {
    fn between(&self, a: u64, b: u64) -> bool {
        self.points.iter().any(|&t| t >= a && t <= b)
            || self.windows.iter().any(|&(s, e)| s <= b && e >= a)
    }
}

/// The token line every transmission's body carries.
pub fn token_line(token: &str) -> String {
    format!("swarm message {token}")
}

fn holds(m: &str, token: &str) -> bool {
    m.lines().any(|l| l.trim_end() == token_line(token))
}

/// Violations, and the number of allowed duplicates.
pub fn check(sent: &[Sent], found: &Found, ex: &Excuses) -> (Vec<String>, usize) {
    let mut bad = Vec::new();
    let mut dups = 0;
    for s in sent.iter().filter(|s| !ex.damaged.contains(&s.token)) {
        let kept = found
            .mailboxes
            .iter()
            .filter(|m| holds(m, &s.token))
            .count();
        let read: Vec<u64> = found
            .read
            .iter()
            .filter(|(m, _)| holds(m, &s.token))
            .map(|r| r.1)
            .collect();
        let local = kept + read.len();
        // Once the reader deleted a copy, a delivery repeated because its outcome was not
        // recorded (a crash, a failed write, after the message was sent) finds no copy left
        // to recognise.
        let lost_track = ex.points.iter().any(|&p| p >= s.at_ms);
        let reread = read.iter().filter(|_| lost_track);
        let others = found.others.iter().filter(|m| holds(m, &s.token)).count();
        let mut peer: Vec<&PeerCopy> = found
            .peer
            .iter()
            .filter(|(m, _)| holds(&m.replace("\r\n", "\n"), &s.token))
            .map(|(_, c)| c)
            .collect();
        peer.sort_by_key(|c| c.at_ms);
        let excused = peer
            .windows(2)
            .filter(|w| !w[0].told || ex.between(w[0].at_ms, w[1].at_ms))
            .count();
        let n = local + others + peer.len();
        let mut allowed =
            excused + others.saturating_sub(1).min(ex.points.len()) + reread.count().min(local);
        if ex.again.contains(&s.token) {
            allowed = usize::MAX - 1;
        }
        dups += n.saturating_sub(1).min(allowed);
        if s.acked && n == 0 {
            bad.push(format!("{}: acknowledged, never arrived", s.token));
        } else if n > 1 + allowed {
            bad.push(format!(
                "{}: {n} copies (mailboxes {local}, peer {}, relay {others}), {allowed} excused",
                s.token,
                peer.len()
            ));
        }
    }
    (bad, dups)
}

/// Copies of no transmission at all (invented mail), apart from mail about nothing sent.
pub fn invented(sent: &[Sent], found: &Found) -> Vec<String> {
    let known = |m: &str| sent.iter().any(|s| holds(m, &s.token));
    let peer = found.peer.iter().map(|(m, _)| m.replace("\r\n", "\n"));
    let read = found.read.iter().map(|(m, _)| m.clone());
    let all = found
        .mailboxes
        .iter()
        .cloned()
        .chain(read)
        .chain(found.others.iter().cloned());
    all.chain(peer)
        .filter(|m| !known(m))
        .map(|m| format!("invented message: {:?}", m.lines().next().unwrap_or("")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(at_ms: u64, told: bool) -> (String, PeerCopy) {
        (
            format!("x\n{}\n", token_line("t1")),
            PeerCopy { at_ms, told },
        )
    }

    fn sent(acked: bool) -> Vec<Sent> {
        vec![Sent {
            token: "t1".into(),
            acked,
            at_ms: 0,
        }]
    }

    #[test]
    fn duplicates_need_an_excuse() {
        let found = Found {
            peer: vec![copy(1000, true), copy(5000, true)],
            ..Found::default()
        };
        let (bad, _) = check(&sent(true), &found, &Excuses::default());
        assert_eq!(bad.len(), 1, "a told copy then another: no excuse");
        let ex = Excuses {
            points: vec![3000],
            ..Excuses::default()
        };
        assert_eq!(
            check(&sent(true), &found, &ex),
            (vec![], 1),
            "a crash between"
        );
        let untold = Found {
            peer: vec![copy(1000, false), copy(5000, true)],
            ..Found::default()
        };
        assert_eq!(check(&sent(true), &untold, &Excuses::default()).0.len(), 0);
    }

    #[test]
    fn acked_must_arrive_unacked_may_not() {
        let none = Found::default();
        assert_eq!(check(&sent(true), &none, &Excuses::default()).0.len(), 1);
        assert!(check(&sent(false), &none, &Excuses::default()).0.is_empty());
        let twice = Found {
            mailboxes: vec![token_line("t1"), format!("bounce\n{}\n", token_line("t1"))],
            ..Found::default()
        };
        assert_eq!(check(&sent(false), &twice, &Excuses::default()).0.len(), 1);
    }

    #[test]
    fn unknown_mail_is_invented() {
        let found = Found {
            mailboxes: vec![token_line("t9")],
            ..Found::default()
        };
        assert_eq!(invented(&sent(true), &found).len(), 1);
    }
}
