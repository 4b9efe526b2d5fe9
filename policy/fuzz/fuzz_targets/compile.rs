//! Fuzzes the policy compiler: any input must yield a policy or diagnostics, never a panic,
//! hang or unbounded allocation. Run: `cd policy/fuzz && cargo +nightly fuzz run compile`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(src) = std::str::from_utf8(data) {
        let _ = mecgw_policy::compile(src);
    }
});
