//! Public TDX quotes (launch/tests/data/tdx) verify through the PCK chain to Intel's root, and any
//! change to the signed body, the QE report, the chain or an expectation is rejected by name.

use std::path::PathBuf;

use veil_launch::attest::Status;
use veil_launch::attest::tdx::{Quote, QuoteError, TdxExpectations, verify_quote};

fn data(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tdx")
        .join(name);
    std::fs::read(p).unwrap()
}

const SAMPLES: [&str; 3] = [
    "quote_v4_td10.bin",
    "quote_v5_td15.bin",
    "quote_v5_td15ex.bin",
];

fn failed(bytes: &[u8], exp: &TdxExpectations) -> Vec<&'static str> {
    verify_quote(&Quote::parse(bytes).unwrap(), exp).failed()
}

#[test]
fn public_quotes_verify() {
    for (name, version, body) in [(SAMPLES[0], 4, 2), (SAMPLES[1], 5, 3), (SAMPLES[2], 5, 4)] {
        let q = Quote::parse(&data(name)).unwrap();
        assert_eq!((q.version, q.body_type), (version, body), "{name}");
        let exp = TdxExpectations {
            mrtd: Some(q.td.mrtd),
            rtmrs: q.td.rtmr.map(Some),
            mr_config_id: Some(q.td.mr_config_id),
            mr_owner: Some(q.td.mr_owner),
            report_data: Some(q.td.report_data),
            ..TdxExpectations::default()
        };
        let v = verify_quote(&q, &exp);
        assert!(v.passed, "{name}:\n{v}");
        for check in [
            "quote_signature",
            "qe_binding",
            "qe_report_signature",
            "pck_chain",
            "measurement",
            "rtmr3",
        ] {
            assert_eq!(v.get(check).unwrap().status, Status::Pass, "{name} {check}");
        }
        assert_eq!(v.get("tcb_status").unwrap().status, Status::Skip);
        assert_eq!(q.td.mr_service_td.is_some(), body >= 3);
    }
}

#[test]
fn changed_body_qe_report_or_chain_is_rejected() {
    let good = data(SAMPLES[0]);
    let exp = TdxExpectations::default();
    // Header and every field of the TD report (offsets 48 + field start).
    for off in [
        0x0C,
        0x20,
        48,
        48 + 16,
        48 + 120,
        48 + 128,
        48 + 136,
        48 + 183,
        48 + 184,
        48 + 232,
        48 + 328,
        48 + 472,
        48 + 520,
        48 + 583,
    ] {
        let mut bad = good.clone();
        bad[off] ^= 0x10;
        match Quote::parse(&bad) {
            Ok(q) => assert!(
                verify_quote(&q, &exp).failed().contains(&"quote_signature"),
                "offset {off}"
            ),
            Err(e) => panic!("offset {off}: {e}"),
        }
    }
    // Signature, attestation key, QE report, QE report signature.
    let sig = 48 + 584 + 4;
    let cases = [
        (sig + 3, "quote_signature"),
        (sig + 64 + 5, "quote_signature"),
        (sig + 128 + 6 + 10, "qe_report_signature"),
        (sig + 128 + 6 + 384 + 7, "qe_report_signature"),
        (sig + 128 + 6 + 384 + 64 + 2 + 1, "qe_binding"),
    ];
    for (off, check) in cases {
        let mut bad = good.clone();
        bad[off] ^= 0x01;
        let f = failed(&bad, &exp);
        assert!(
            f.contains(&check),
            "offset {off}: expected {check}, got {f:?}"
        );
    }
    // The QE report's REPORTDATA is what binds the key: changing it breaks the PCK signature too.
    let mut bad = good.clone();
    bad[sig + 128 + 6 + 320] ^= 1;
    let f = failed(&bad, &exp);
    assert!(
        f.contains(&"qe_binding") && f.contains(&"qe_report_signature"),
        "{f:?}"
    );
}

#[test]
fn foreign_chain_is_rejected() {
    // Swap the PCK chain of the v4 quote for the v5 quote's: the PCK key no longer signs the QE report.
    let q4 = Quote::parse(&data(SAMPLES[0])).unwrap();
    let mut q = q4.clone();
    q.pck_chain_pem = Quote::parse(&data(SAMPLES[2])).unwrap().pck_chain_pem;
    let v = verify_quote(&q, &TdxExpectations::default());
    assert!(v.failed().contains(&"qe_report_signature"), "{v}");
    // A chain whose root is not Intel's: drop the root certificate.
    let mut q = q4.clone();
    let text = String::from_utf8(q.pck_chain_pem.clone()).unwrap();
    let cut = text.rfind("-----BEGIN CERTIFICATE-----").unwrap();
    q.pck_chain_pem = text.as_bytes()[..cut].to_vec();
    let v = verify_quote(&q, &TdxExpectations::default());
    assert_eq!(v.failed(), vec!["pck_chain"], "{v}");
}

#[test]
fn expectation_mismatches_are_named() {
    let bytes = data(SAMPLES[0]);
    let q = Quote::parse(&bytes).unwrap();
    let mut mrtd = q.td.mrtd;
    mrtd[0] ^= 1;
    let exp = TdxExpectations {
        mrtd: Some(mrtd),
        ..TdxExpectations::default()
    };
    assert_eq!(failed(&bytes, &exp), vec!["measurement"]);
    let mut rtmrs = [None; 4];
    rtmrs[2] = Some([0u8; 48]);
    let exp = TdxExpectations {
        rtmrs,
        ..TdxExpectations::default()
    };
    assert_eq!(failed(&bytes, &exp), vec!["rtmr2"]);
    let exp = TdxExpectations {
        report_data: Some([0u8; 64]),
        ..TdxExpectations::default()
    };
    assert_eq!(failed(&bytes, &exp), vec!["report_data"]);
}

#[test]
fn malformed_quotes_are_errors() {
    let good = data(SAMPLES[0]);
    assert!(matches!(
        Quote::parse(&good[..100]),
        Err(QuoteError::Truncated { .. })
    ));
    assert!(matches!(
        Quote::parse(&good[..48 + 584 + 10]),
        Err(QuoteError::Truncated { .. })
    ));
    let mut v3 = good.clone();
    v3[0] = 3;
    assert!(matches!(Quote::parse(&v3), Err(QuoteError::Version(3))));
    let mut sgx = good.clone();
    sgx[4] = 0;
    assert!(matches!(Quote::parse(&sgx), Err(QuoteError::TeeType(0))));
    let mut tail = good.clone();
    tail.push(7);
    assert!(matches!(Quote::parse(&tail), Err(QuoteError::Trailing(1))));
    let mut body = data(SAMPLES[1]);
    body[50] = 9;
    assert!(matches!(
        Quote::parse(&body),
        Err(QuoteError::BodySize { .. })
    ));
    // Hex text is accepted.
    let text = hex::encode(&good);
    assert_eq!(
        Quote::parse_file_contents(text.as_bytes()).unwrap(),
        Quote::parse(&good).unwrap()
    );
}

#[test]
fn synthetic_quote_verifies_but_not_as_intel() {
    use veil_launch::attest::tdx::test_quote::{TestQuoteSigner, blank_td};
    let signer = TestQuoteSigner::generate().unwrap();
    let mut td = blank_td();
    td.mrtd = [0x3c; 48];
    td.rtmr[1] = [0x01; 48];
    td.report_data = [0x99; 64];
    let bytes = signer.quote_v4(&td);
    let q = Quote::parse(&bytes).unwrap();
    assert_eq!(q.td, td);
    let exp = TdxExpectations {
        mrtd: Some([0x3c; 48]),
        report_data: Some([0x99; 64]),
        check_pck_chain: false,
        ..TdxExpectations::default()
    };
    let v = verify_quote(&q, &exp);
    assert!(v.passed, "{v}");
    assert_eq!(v.get("pck_chain").unwrap().status, Status::Skip);
    // With the chain check on, the self-made root is not Intel's.
    let v = verify_quote(&q, &TdxExpectations::default());
    assert_eq!(v.failed(), vec!["pck_chain"], "{v}");
    assert!(v.get("pck_chain").unwrap().detail.contains("not Intel"));
    // A debug TD is refused unless allowed.
    td.td_attributes = 1;
    let q = Quote::parse(&signer.quote_v4(&td)).unwrap();
    let no_chain = TdxExpectations {
        check_pck_chain: false,
        ..TdxExpectations::default()
    };
    assert_eq!(verify_quote(&q, &no_chain).failed(), vec!["debug"]);
    let allow = TdxExpectations {
        allow_debug: true,
        ..no_chain
    };
    assert!(verify_quote(&q, &allow).passed);
}
