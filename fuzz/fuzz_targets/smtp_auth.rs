#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| mta::fuzz::smtp_auth(data));
