//! Planted bugs, for verification only: the simulator switches one on and shows that its
//! campaign catches it. Production never sets any (the flags start at zero and only the
//! simulator's mutation runs write them, one process at a time).

use std::sync::atomic::{AtomicU32, Ordering};

/// A realistic bug the simulator must catch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bug {
    /// The retry time is computed from the last attempt instead of the message's birth.
    RetryFromLastAttempt,
    /// After a restart, failed recipients are taken as delivered: the bounce is lost.
    LoseBounceStateOnRestart,
    /// SERVFAIL is treated as "no such domain" (permanent) instead of temporary.
    ServfailPermanent,
    /// A truncated UDP answer is used as it is, without the TCP retry.
    IgnoreTruncation,
    /// The canary: the receiver answers 250 for the second message it takes in a process
    /// without queueing it.
    CanaryLoseSecondMessage,
}

impl Bug {
    pub const ALL: [Bug; 5] = [
        Bug::RetryFromLastAttempt,
        Bug::LoseBounceStateOnRestart,
        Bug::ServfailPermanent,
        Bug::IgnoreTruncation,
        Bug::CanaryLoseSecondMessage,
    ];
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

static PLANTED: AtomicU32 = AtomicU32::new(0);
static CANARY_COUNT: AtomicU32 = AtomicU32::new(0);

/// The canary's trigger: true for the second message taken while it is planted.
pub fn canary_fires() -> bool {
    on(Bug::CanaryLoseSecondMessage) && CANARY_COUNT.fetch_add(1, Ordering::Relaxed) == 1
}

/// Is this bug planted right now?
pub fn on(b: Bug) -> bool {
    PLANTED.load(Ordering::Relaxed) & b.bit() != 0
}

/// Plant exactly these bugs (an empty slice removes them all).
pub fn plant(bugs: &[Bug]) {
    CANARY_COUNT.store(0, Ordering::Relaxed);
    PLANTED.store(bugs.iter().fold(0, |a, b| a | b.bit()), Ordering::Relaxed);
}
