//! The test signer's chain looks like AMD's to the verifier: reports it signs verify, and the
//! verifier still catches a wrong TCB, a foreign chain and a re-signed altered report.

use veil_launch::attest::test_signer::{ReportTemplate, TestChain};
use veil_launch::attest::{
    CaChain, SnpExpectations, SnpReport, Status, Tcb, TcbLayout, Verdict, verify_snp_report,
};

fn tcb() -> Tcb {
    Tcb::parse("bl=4,tee=0,snp=22,ucode=213", TcbLayout::MilanGenoa).unwrap()
}

fn verify(raw: &[u8], chain: &TestChain, exp: &SnpExpectations) -> Verdict {
    verify_snp_report(
        &SnpReport::parse(raw).unwrap(),
        &chain.vcek,
        &chain.chain,
        exp,
    )
}

#[test]
fn signed_reports_verify_and_mismatches_are_caught() {
    let chain = TestChain::generate(tcb(), [0x5a; 64]).unwrap();
    for version in [2, 3, 5] {
        let t = ReportTemplate {
            version,
            measurement: [0x11; 48],
            host_data: [0x22; 32],
            report_data: [0x33; 64],
            ..ReportTemplate::default()
        };
        let raw = chain.sign_template(&t);
        let exp = SnpExpectations {
            measurement: Some([0x11; 48]),
            host_data: Some([0x22; 32]),
            report_data: Some([0x33; 64]),
            min_tcb: Some(tcb()),
            vmpl: Some(0),
            ..SnpExpectations::default()
        };
        let v = verify(&raw, &chain, &exp);
        assert!(v.passed, "v{version}:\n{v}");
        assert_eq!(v.get("chip_id").unwrap().status, Status::Pass);
    }

    let raw = chain.sign_template(&ReportTemplate::default());
    // The chain PEM round-trips through the file form.
    let from_file = CaChain::from_pem(chain.chain_pem().unwrap().as_bytes(), "test").unwrap();
    let v = verify_snp_report(
        &SnpReport::parse(&raw).unwrap(),
        &chain.vcek,
        &from_file,
        &SnpExpectations::default(),
    );
    assert!(v.passed, "{v}");

    // A VCEK for another TCB, properly certified, does not match the report's TCB.
    let other_tcb = Tcb { snp: 21, ..tcb() };
    let stale = chain.vcek_for_tcb(other_tcb).unwrap();
    let v = verify_snp_report(
        &SnpReport::parse(&raw).unwrap(),
        &stale,
        &chain.chain,
        &SnpExpectations::default(),
    );
    assert_eq!(v.get("vek_tcb").unwrap().status, Status::Fail, "{v}");
    assert!(v.get("vek_tcb").unwrap().detail.contains("snp"));

    // Debug policy is refused unless allowed; migration agent likewise.
    let debug = chain.sign_template(&ReportTemplate {
        policy: 0x30000 | 1 << 19 | 1 << 18,
        ..ReportTemplate::default()
    });
    let v = verify(&debug, &chain, &SnpExpectations::default());
    assert_eq!(v.failed(), vec!["debug", "migration_agent"], "{v}");
    let allowing = SnpExpectations {
        allow_debug: true,
        allow_migration_agent: true,
        ..SnpExpectations::default()
    };
    assert!(verify(&debug, &chain, &allowing).passed);

    // Another chain's VCEK and CAs do not verify this chain's report.
    let stranger = TestChain::generate(tcb(), [0x5a; 64]).unwrap();
    let v = verify(&raw, &stranger, &SnpExpectations::default());
    assert_eq!(v.get("report_signature").unwrap().status, Status::Fail);
    let v = verify_snp_report(
        &SnpReport::parse(&raw).unwrap(),
        &chain.vcek,
        &stranger.chain,
        &SnpExpectations::default(),
    );
    assert_eq!(v.get("cert_chain").unwrap().status, Status::Fail);
}

#[test]
fn vlek_and_turin_reports_verify() {
    use veil_launch::attest::Product;
    use veil_launch::attest::test_signer::TestVek;

    // A VLEK: no hwID, a CSP id; chip_id is not compared, signing_key must say VLEK.
    let vlek = TestChain::generate_with(
        tcb(),
        [0; 64],
        Product::Genoa,
        TestVek::Vlek("veil-csp".into()),
    )
    .unwrap();
    assert_eq!(vlek.vcek.label, "VLEK");
    let raw = vlek.sign_template(&ReportTemplate {
        version: 3,
        ..ReportTemplate::default()
    });
    let v = verify(&raw, &vlek, &SnpExpectations::default());
    assert!(v.passed, "{v}");
    assert_eq!(v.get("signing_key").unwrap().detail, "VLEK");
    assert_eq!(v.get("chip_id").unwrap().status, Status::Skip);
    // The same report claiming a VCEK signed it (re-signed so only SIGNER_INFO differs).
    let mut claim_vcek = raw;
    claim_vcek[0x48] = 0;
    vlek.sign(&mut claim_vcek);
    let v = verify(&claim_vcek, &vlek, &SnpExpectations::default());
    assert_eq!(v.failed(), vec!["signing_key"], "{v}");

    // Turin: fmc first in the TCB, the layout chosen from the report's CPUID (family 1Ah).
    let turin_tcb = Tcb {
        fmc: Some(2),
        ..tcb()
    };
    let turin =
        TestChain::generate_with(turin_tcb, [7; 64], Product::Turin, TestVek::Vcek).unwrap();
    let raw = turin.sign_template(&ReportTemplate {
        version: 3,
        ..ReportTemplate::default()
    });
    let report = SnpReport::parse(&raw).unwrap();
    assert_eq!(report.tcb_layout(None), TcbLayout::Turin);
    assert_eq!(report.reported_tcb(TcbLayout::Turin), turin_tcb);
    let exp = SnpExpectations {
        min_tcb: Some(Tcb {
            fmc: Some(3),
            ..tcb()
        }),
        ..SnpExpectations::default()
    };
    let v = verify(&raw, &turin, &exp);
    assert_eq!(v.failed(), vec!["min_tcb"], "{v}");
    assert!(v.get("min_tcb").unwrap().detail.ends_with("in fmc"), "{v}");
    assert_eq!(v.get("vek_tcb").unwrap().status, Status::Pass, "{v}");
    // A VCEK whose fmc SPL differs is caught.
    let stale = turin
        .vcek_for_tcb(Tcb {
            fmc: Some(1),
            ..turin_tcb
        })
        .unwrap();
    let v = verify_snp_report(&report, &stale, &turin.chain, &SnpExpectations::default());
    assert_eq!(v.failed(), vec!["vek_tcb"], "{v}");
}
