//! CheckRequest bytes -> the ext_authz service -> CheckResponse, checked
//! against the invariants in `countersign_fuzz::check`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| countersign_fuzz::check(data));
