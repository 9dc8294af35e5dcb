//! Planted bugs, for verification only: the simulator switches one on and shows that its
//! campaign catches it. They exist only with the `planted` cargo feature, which the simulator
//! turns on; without it (`cargo build -p mta`, the production binary) [`on`] is the constant
//! `false` and every hook compiles away.

#[cfg(feature = "planted")]
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
    /// After a failed fsync the queue log trusts its cached file and keeps appending behind
    /// the batch Linux may have dropped.
    AppendAfterFailedFsync,
    /// A Maildir delivery trusts a name it finds in new/, though a failed fsync may have
    /// dropped it from the disk while it still shows.
    TrustMaildirNameInCache,
    /// Recovery takes any damaged record for a torn tail and drops everything after it.
    CutAtFirstDamage,
    /// Every local delivery is taken for a first attempt, so Maildir never looks in cur/ for
    /// a copy a reader took before a repeat.
    EveryAttemptFirst,
    /// A restart forgets when each message was last tried: everything is due at once.
    ForgetLastAttempt,
    /// A wasted second fsync of every injected message: correct, only slower (the
    /// deterministic cost gate must catch it).
    ExtraFsync,
    /// Compaction moves a message without its recipients' outcomes: once the old segments
    /// are gone, recipients already delivered are delivered again.
    CompactWithoutOutcomes,
}

impl Bug {
    pub const ALL: [Bug; 12] = [
        Bug::RetryFromLastAttempt,
        Bug::LoseBounceStateOnRestart,
        Bug::ServfailPermanent,
        Bug::IgnoreTruncation,
        Bug::CanaryLoseSecondMessage,
        Bug::AppendAfterFailedFsync,
        Bug::TrustMaildirNameInCache,
        Bug::CutAtFirstDamage,
        Bug::EveryAttemptFirst,
        Bug::ForgetLastAttempt,
        Bug::ExtraFsync,
        Bug::CompactWithoutOutcomes,
    ];
    #[cfg(feature = "planted")]
    fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

#[cfg(feature = "planted")]
static PLANTED: AtomicU32 = AtomicU32::new(0);
#[cfg(feature = "planted")]
static CANARY_COUNT: AtomicU32 = AtomicU32::new(0);

/// The canary's trigger: true for the second message taken while it is planted.
#[cfg(feature = "planted")]
pub fn canary_fires() -> bool {
    on(Bug::CanaryLoseSecondMessage) && CANARY_COUNT.fetch_add(1, Ordering::Relaxed) == 1
}

#[cfg(not(feature = "planted"))]
pub fn canary_fires() -> bool {
    false
}

/// Is this bug planted right now?
#[cfg(feature = "planted")]
pub fn on(b: Bug) -> bool {
    PLANTED.load(Ordering::Relaxed) & b.bit() != 0
}

/// Never, in a build without the `planted` feature.
#[cfg(not(feature = "planted"))]
pub fn on(_: Bug) -> bool {
    false
}

/// Plant exactly these bugs (an empty slice removes them all).
#[cfg(feature = "planted")]
pub fn plant(bugs: &[Bug]) {
    CANARY_COUNT.store(0, Ordering::Relaxed);
    PLANTED.store(bugs.iter().fold(0, |a, b| a | b.bit()), Ordering::Relaxed);
}
