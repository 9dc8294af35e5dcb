//! qmail-send's retry schedule: per message, anchored at its birth time `b`. A delivery pass on
//! channel `c` that starts at `t` schedules the next one at `b + n*n` with
//! `n = isqrt(t - b) + skip[c]` (skip 10 local, 20 remote). A late pass (after downtime)
//! continues from `isqrt(elapsed)`: missed attempts are not replayed.

use crate::queue::Channel;

/// Integer square root (floor).
pub fn isqrt(x: u64) -> u64 {
    if x < 2 {
        return x;
    }
    let mut r = (x as f64).sqrt() as u64;
    // Correct the float estimate in both directions.
    while r * r > x {
        r -= 1;
    }
    while (r + 1) * (r + 1) <= x {
        r += 1;
    }
    r
}

pub fn skip(c: Channel) -> u64 {
    match c {
        Channel::Local => 10,
        Channel::Remote => 20,
    }
}

/// When the next pass is due after a pass that started at `now`.
pub fn next_pass(birth: u64, now: u64, c: Channel) -> u64 {
    if crate::planted::on(crate::planted::Bug::RetryFromLastAttempt) {
        let n = skip(c);
        return now + n * n;
    }
    let n = isqrt(now.saturating_sub(birth)) + skip(c);
    birth + n * n
}

/// A pass starting at `now` is the last one: its temporary failures become permanent.
pub fn dying(birth: u64, now: u64, lifetime: u64) -> bool {
    now > birth + lifetime
}

/// Every pass time of a message that is always deferred, passes starting exactly when due:
/// the schedule the simulator checks against.
pub fn attempts(birth: u64, lifetime: u64, c: Channel) -> Vec<u64> {
    let mut t = birth;
    let mut v = vec![t];
    while !dying(birth, t, lifetime) {
        t = next_pass(birth, t, c);
        v.push(t);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isqrt_is_exact() {
        for x in 0..100_000u64 {
            let r = isqrt(x);
            assert!(r * r <= x && (r + 1) * (r + 1) > x, "{x}");
        }
        assert_eq!(isqrt(u64::MAX >> 2), (1 << 31) - 1);
    }

    #[test]
    fn remote_schedule_is_forty_attempts_over_seven_days() {
        let a = attempts(0, 604_800, Channel::Remote);
        assert_eq!(a.len(), 40);
        assert_eq!(&a[..6], &[0, 400, 1600, 3600, 6400, 10_000]);
        assert_eq!(a[38], 577_600, "6d16h26m40s");
        assert_eq!(a[39], 608_400, "7d0h40m: the final attempt");
        for w in a.windows(2).take(38).enumerate() {
            let k = w.0 as u64;
            assert_eq!(w.1[1] - w.1[0], 400 * (2 * k + 1));
        }
    }

    #[test]
    fn local_schedule_is_seventy_nine_attempts() {
        let a = attempts(0, 604_800, Channel::Local);
        assert_eq!(a.len(), 79);
        assert_eq!(&a[..4], &[0, 100, 400, 900]);
        assert!(dying(0, *a.last().unwrap(), 604_800));
        assert!(!dying(0, a[a.len() - 2], 604_800));
    }

    #[test]
    fn late_pass_continues_from_elapsed_time() {
        // Down for a day: the pass at b+86400+17 schedules isqrt(86417)+20 = 313 → 313².
        assert_eq!(
            next_pass(1000, 1000 + 86_417, Channel::Remote),
            1000 + 313 * 313
        );
        // A pass slightly late inside a step keeps the grid.
        assert_eq!(next_pass(0, 401, Channel::Remote), 1600);
    }
}
