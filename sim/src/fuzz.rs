//! Structure-aware simulation fuzzing: a fuzzer's bytes are the choices a swarm seed's fault
//! profile and workload are drawn from (the same drawing code as the random swarm), and the
//! oracle is the assertion. Coverage then steers the search for fault schedules, where the
//! swarm samples them blindly. `fuzz/fuzz_targets/sim_swarm.rs` runs it under libFuzzer;
//! `tests/fuzz_corpus.rs` replays the committed corpus.

use rand::RngCore;

use crate::profile::Profile;
use crate::swarm;

/// Choices read from the fuzzer's bytes in order; all ones once they run out (so every input,
/// even an empty one, is a valid run, and every fault not yet decided is off: a yes/no draw
/// says yes only below its probability).
pub struct Choices<'a> {
    bytes: &'a [u8],
}

impl<'a> Choices<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Choices { bytes }
    }
}

impl RngCore for Choices<'_> {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        let n = dst.len().min(self.bytes.len());
        dst[..n].copy_from_slice(&self.bytes[..n]);
        dst[n..].fill(0xff);
        self.bytes = &self.bytes[n..];
    }
}

/// The run an input stands for: the workload seed (first 8 bytes) and the fault profile.
pub fn decode(data: &[u8]) -> (u64, Profile) {
    let mut c = Choices::new(data);
    let seed = c.next_u64();
    (seed, Profile::draw_from(&mut c))
}

/// Run one input through the swarm; any oracle violation panics with the replay line.
pub fn swarm(data: &[u8]) {
    let (seed, p) = decode(data);
    let o = swarm::run_profile(seed, &p);
    assert!(
        o.violations.is_empty(),
        "replay: mta-sim run swarm --seed {seed} --profile '{p}': {:?}",
        o.violations
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_decide_the_profile_and_short_inputs_are_quiet() {
        let (seed, p) = decode(&[]);
        assert_eq!(seed, u64::MAX);
        assert!(p.crashes.is_empty() && p.partition.is_none() && p.eio_at.is_none());
        let a = decode(&[7; 64]);
        assert_eq!(a, decode(&[7; 64]), "the same bytes, the same run");
        assert_ne!(a, decode(&[9; 64]));
    }
}
