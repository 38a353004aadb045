//! Fuzz the TDX quote parser and run the verifier on whatever parses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_launch::attest::tdx::{Quote, TdxExpectations, verify_quote};

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = Quote::parse(data) {
        let _ = verify_quote(&q, &TdxExpectations::default());
    }
    let _ = Quote::parse_file_contents(data);
});
