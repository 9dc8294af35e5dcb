#![no_main]
// Structure-aware: the bytes are a swarm seed's fault profile and workload (sim::fuzz).
libfuzzer_sys::fuzz_target!(|data: &[u8]| sim::fuzz::swarm(data));
