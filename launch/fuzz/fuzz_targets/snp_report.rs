//! Fuzz the SEV-SNP report parsers (binary and file forms), certificate loading, and the TCB and
//! report-data binding text parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veil_launch::attest::{CaChain, Cert, SnpReport, Tcb, TcbLayout};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = SnpReport::parse(data) {
        let _ = r.reported_tcb(r.tcb_layout(None));
        let _ = r.signing_key();
    }
    let _ = SnpReport::parse_file_contents(data);
    if let Ok(c) = Cert::from_bytes("VCEK", data) {
        let _ = c.vek_extensions();
        let _ = c.p384_key();
    }
    let _ = CaChain::from_pem(data, "fuzz");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Tcb::parse(text, TcbLayout::Turin);
        let _ = veil_launch::attest::report_data_from_spec(text);
    }
});
