#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mta::fuzz::netstrings(data));
