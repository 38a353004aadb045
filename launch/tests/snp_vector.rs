//! The public Milan report (shared/testdata/snp) against the verifier: it passes with the built-in
//! chain and the file chain, and every single change to signed bytes, signature, key or
//! expectation is rejected with the failing check named.

use std::path::PathBuf;

use veil_launch::attest::{
    CaChain, Cert, Product, SnpExpectations, SnpReport, Status, Tcb, TcbLayout, Verdict,
    verify_snp_report,
};

const MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";

fn testdata() -> PathBuf {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    repo.ancestors()
        .map(|a| a.join("../shared/testdata/snp"))
        .find(|p| p.join("report_milan.hex").is_file())
        .expect("shared/testdata/snp beside the repository")
}

fn report_bytes() -> Vec<u8> {
    let text = std::fs::read_to_string(testdata().join("report_milan.hex")).unwrap();
    hex::decode(text.trim()).unwrap()
}

fn vcek() -> Cert {
    Cert::from_bytes(
        "VCEK",
        &std::fs::read(testdata().join("vcek_milan.der")).unwrap(),
    )
    .unwrap()
}

fn expectations() -> SnpExpectations {
    let mut m = [0u8; 48];
    m.copy_from_slice(&hex::decode(MEASUREMENT).unwrap());
    SnpExpectations {
        measurement: Some(m),
        host_data: Some([0u8; 32]),
        min_tcb: Some(Tcb::parse("bl=3,tee=0,snp=8,ucode=115", TcbLayout::MilanGenoa).unwrap()),
        vmpl: Some(0),
        ..SnpExpectations::default()
    }
}

fn verify(bytes: &[u8], vcek: &Cert, chain: &CaChain, exp: &SnpExpectations) -> Verdict {
    let report = SnpReport::parse(bytes).unwrap();
    verify_snp_report(&report, vcek, chain, exp)
}

fn milan() -> CaChain {
    CaChain::builtin(Product::Milan).unwrap()
}

fn assert_fails(v: &Verdict, check: &str) {
    assert!(!v.passed, "verdict passed, expected {check} to fail:\n{v}");
    let c = v.get(check).unwrap_or_else(|| panic!("no check {check}"));
    assert_eq!(c.status, Status::Fail, "{check} did not fail:\n{v}");
}

#[test]
fn public_report_verifies_with_builtin_milan_chain() {
    let v = verify(&report_bytes(), &vcek(), &milan(), &expectations());
    assert!(v.passed, "{v}");
    for name in [
        "report_signature",
        "cert_chain",
        "vek_tcb",
        "chip_id",
        "measurement",
        "host_data",
        "min_tcb",
    ] {
        assert_eq!(v.get(name).unwrap().status, Status::Pass, "{name}\n{v}");
    }
}

#[test]
fn public_report_verifies_with_chain_file() {
    let pem = std::fs::read(testdata().join("ask_ark_milan.pem")).unwrap();
    let chain = CaChain::from_pem(&pem, "ask_ark_milan.pem").unwrap();
    let v = verify(&report_bytes(), &vcek(), &chain, &expectations());
    assert!(v.passed, "{v}");
}

/// Every field of the signed area, reserved ones included, by (name, offset, length).
const FIELDS: &[(&str, usize, usize)] = &[
    ("version", 0x00, 4),
    ("guest_svn", 0x04, 4),
    ("policy", 0x08, 8),
    ("family_id", 0x10, 16),
    ("image_id", 0x20, 16),
    ("vmpl", 0x30, 4),
    ("sig_algo", 0x34, 4),
    ("current_tcb", 0x38, 8),
    ("platform_info", 0x40, 8),
    ("signer_info", 0x48, 4),
    ("reserved_4c", 0x4C, 4),
    ("report_data", 0x50, 64),
    ("measurement", 0x90, 48),
    ("host_data", 0xC0, 32),
    ("id_key_digest", 0xE0, 48),
    ("author_key_digest", 0x110, 48),
    ("report_id", 0x140, 32),
    ("report_id_ma", 0x160, 32),
    ("reported_tcb", 0x180, 8),
    ("cpuid_and_reserved", 0x188, 24),
    ("chip_id", 0x1A0, 64),
    ("committed_tcb", 0x1E0, 8),
    ("versions", 0x1E8, 8),
    ("launch_tcb", 0x1F0, 8),
    ("reserved_tail", 0x1F8, 0xA8),
];

#[test]
fn any_changed_signed_byte_is_rejected() {
    let good = report_bytes();
    let (vcek, chain, exp) = (vcek(), milan(), expectations());
    let mut tried = 0;
    for &(field, at, len) in FIELDS {
        let mut offsets = vec![at, at + len / 2, at + len - 1];
        offsets.dedup();
        for off in offsets {
            for flip in [0x01u8, 0x80] {
                let mut bad = good.clone();
                bad[off] ^= flip;
                tried += 1;
                match SnpReport::parse(&bad) {
                    // An unknown version is refused before any check.
                    Err(_) => assert_eq!(field, "version", "{field}@{off:#x} unparseable"),
                    Ok(r) => {
                        let v = verify_snp_report(&r, &vcek, &chain, &exp);
                        assert_fails(&v, "report_signature");
                    }
                }
            }
        }
    }
    assert_eq!(FIELDS.iter().map(|f| f.2).sum::<usize>(), 0x2A0);
    assert!(tried > 100);
}

#[test]
fn changed_signature_is_rejected() {
    let good = report_bytes();
    for off in [
        0x2A0,
        0x2A0 + 20,
        0x2A0 + 47,
        0x2A0 + 60,
        0x2E8,
        0x2E8 + 47,
        0x2E8 + 71,
    ] {
        let mut bad = good.clone();
        bad[off] ^= 0x04;
        let v = verify(&bad, &vcek(), &milan(), &expectations());
        assert_fails(&v, "report_signature");
    }
}

#[test]
fn other_chain_or_key_is_rejected() {
    let good = report_bytes();
    // Genoa's chain does not certify a Milan VCEK.
    let v = verify(
        &good,
        &vcek(),
        &CaChain::builtin(Product::Genoa).unwrap(),
        &expectations(),
    );
    assert_fails(&v, "cert_chain");
    // The ASK in place of the VCEK: not a P-384 key and not what the ASK signs.
    let mut wrong = milan().ask.clone();
    wrong.label = "VCEK".into();
    let v = verify(&good, &wrong, &milan(), &expectations());
    assert_fails(&v, "report_signature");
    assert_fails(&v, "cert_chain");
    // A chain whose ASK and ARK are swapped.
    let mut swapped = milan();
    std::mem::swap(&mut swapped.ark, &mut swapped.ask);
    let v = verify(&good, &vcek(), &swapped, &expectations());
    assert_fails(&v, "cert_chain");
}

#[test]
fn expectation_mismatches_are_named() {
    let good = report_bytes();
    let mut exp = expectations();
    exp.measurement.as_mut().unwrap()[5] ^= 1;
    assert_fails(&verify(&good, &vcek(), &milan(), &exp), "measurement");

    let mut exp = expectations();
    exp.host_data = Some([1u8; 32]);
    assert_fails(&verify(&good, &vcek(), &milan(), &exp), "host_data");

    let mut exp = expectations();
    exp.report_data = Some([0x55u8; 64]);
    assert_fails(&verify(&good, &vcek(), &milan(), &exp), "report_data");

    let mut exp = expectations();
    exp.min_tcb = Some(Tcb::parse("bl=3,tee=0,snp=9,ucode=115", TcbLayout::MilanGenoa).unwrap());
    let v = verify(&good, &vcek(), &milan(), &exp);
    assert_fails(&v, "min_tcb");
    assert!(v.get("min_tcb").unwrap().detail.contains("snp"));

    let mut exp = expectations();
    exp.vmpl = Some(1);
    assert_fails(&verify(&good, &vcek(), &milan(), &exp), "vmpl");

    let mut exp = expectations();
    exp.allow_smt = false;
    assert_fails(&verify(&good, &vcek(), &milan(), &exp), "smt");

    let mut exp = expectations();
    exp.id_key_digest = Some([7u8; 48]);
    assert_fails(&verify(&good, &vcek(), &milan(), &exp), "id_key_digest");
}

#[test]
fn vcek_extensions_name_the_chip_and_tcb() {
    let e = vcek().vek_extensions().unwrap();
    assert_eq!(e.product_name.as_deref(), Some("Milan-B0"));
    assert_eq!(
        (e.bootloader, e.tee, e.snp, e.microcode),
        (Some(3), Some(0), Some(8), Some(0x73))
    );
    let report = SnpReport::parse(&report_bytes()).unwrap();
    assert_eq!(e.hw_id.as_deref(), Some(&report.chip_id[..]));
}
