//! `veil attest verify` as a relying party runs it: the public Milan report with AMD's built-in
//! chain, mutations of it, public TDX quotes, and the end-to-end path launch plan -> launch digest
//! -> a report signed by the test chain -> verdict.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha384};
use veil_launch::attest::report_data_for;
use veil_launch::attest::test_signer::{ReportTemplate, TestChain};
use veil_launch::attest::{Tcb, TcbLayout};

const MEASUREMENT: &str = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d3e1a0dc39b2c60bd95b9c480cd81841f";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn snp_data(name: &str) -> PathBuf {
    repo()
        .ancestors()
        .map(|a| a.join("../shared/testdata/snp"))
        .find(|p| p.join("report_milan.hex").is_file())
        .expect("shared/testdata/snp beside the repository")
        .join(name)
}

fn tdx_data(name: &str) -> PathBuf {
    repo().join("launch/tests/data/tdx").join(name)
}

/// A fresh scratch directory for one test.
fn scratch(test: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("veil-attest-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn veil(args: &[&str]) -> Output {
    Command::new(veil_tests::bin("veil"))
        .args(["attest", "verify"])
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Asserts exit 1 and that the verdict lists `check` as failed.
fn assert_fails(o: &Output, check: &str) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("[FAIL] {check}:")),
        "{check} not failed:\n{t}"
    );
}

#[test]
fn public_report_passes_with_builtin_milan_chain() {
    let (report, vcek) = (snp_data("report_milan.hex"), snp_data("vcek_milan.der"));
    let o = veil(&[
        "--report",
        p(&report),
        "--vcek",
        p(&vcek),
        "--measurement",
        MEASUREMENT,
        "--host-data",
        &"00".repeat(32),
        "--min-tcb",
        "bl=3,tee=0,snp=8,ucode=115",
        "--vmpl",
        "0",
    ]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    assert!(t.contains("PASS") && t.contains("built-in milan"), "{t}");
    assert!(
        t.contains("[pass] report_signature") && t.contains("[pass] chip_id"),
        "{t}"
    );

    // Explicit product and JSON output.
    let o = veil(&[
        "--report",
        p(&report),
        "--vcek",
        p(&vcek),
        "--product",
        "milan",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["passed"], true);
    assert_eq!(j["facts"]["measurement"], MEASUREMENT);
    let sig = j["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "report_signature")
        .unwrap();
    assert_eq!(sig["status"], "pass");
}

#[test]
fn public_report_mutations_fail_by_name() {
    let dir = scratch("mutations");
    let raw = hex::decode(
        std::fs::read_to_string(snp_data("report_milan.hex"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    let vcek = snp_data("vcek_milan.der");
    let chain = snp_data("ask_ark_milan.pem");

    // A changed signed byte, in binary form (measurement, then reported_tcb, then chip_id).
    for off in [0x90, 0x181, 0x1A0 + 63] {
        let mut bad = raw.clone();
        bad[off] ^= 0x40;
        let f = dir.join(format!("bad-{off:x}.bin"));
        std::fs::write(&f, &bad).unwrap();
        assert_fails(
            &veil(&["--report", p(&f), "--vcek", p(&vcek)]),
            "report_signature",
        );
    }
    // A changed signature.
    let mut bad = raw.clone();
    bad[0x2E8 + 3] ^= 1;
    let f = dir.join("badsig.bin");
    std::fs::write(&f, &bad).unwrap();
    assert_fails(
        &veil(&["--report", p(&f), "--vcek", p(&vcek), "--chain", p(&chain)]),
        "report_signature",
    );

    let good = snp_data("report_milan.hex");
    // The wrong product's chain.
    assert_fails(
        &veil(&[
            "--report",
            p(&good),
            "--vcek",
            p(&vcek),
            "--product",
            "genoa",
        ]),
        "cert_chain",
    );
    // Expectations that differ.
    let mut m = MEASUREMENT.to_string();
    m.replace_range(0..2, "7b");
    assert_fails(
        &veil(&[
            "--report",
            p(&good),
            "--vcek",
            p(&vcek),
            "--measurement",
            &m,
        ]),
        "measurement",
    );
    assert_fails(
        &veil(&[
            "--report",
            p(&good),
            "--vcek",
            p(&vcek),
            "--host-data",
            &"11".repeat(32),
        ]),
        "host_data",
    );
    assert_fails(
        &veil(&[
            "--report",
            p(&good),
            "--vcek",
            p(&vcek),
            "--report-data",
            "00",
        ]),
        "report_data",
    );
    assert_fails(
        &veil(&[
            "--report",
            p(&good),
            "--vcek",
            p(&vcek),
            "--min-tcb",
            "bl=3,tee=0,snp=8,ucode=116",
        ]),
        "min_tcb",
    );
    assert_fails(
        &veil(&["--report", p(&good), "--vcek", p(&vcek), "--deny-smt"]),
        "smt",
    );

    // Malformed input is an error naming the input, not a verdict.
    let short = dir.join("short.bin");
    std::fs::write(&short, &raw[..1000]).unwrap();
    let o = veil(&["--report", p(&short), "--vcek", p(&vcek)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("1000 bytes") && text(&o).contains("short.bin"),
        "{}",
        text(&o)
    );
    let mut v9 = raw.clone();
    v9[0] = 9;
    let f = dir.join("v9.bin");
    std::fs::write(&f, &v9).unwrap();
    let o = veil(&["--report", p(&f), "--vcek", p(&vcek)]);
    assert!(
        text(&o).contains("version 9 is not supported"),
        "{}",
        text(&o)
    );
    let o = veil(&["--report", p(&good), "--vcek", p(&good)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--vcek"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(dir);
}

/// The SNP launch digest of a plan of (gpa, page type, contents) pages (PAGE_INFO chain, see
/// platform.md). Stands in for `veil measure` until that lands on this branch.
fn launch_digest(plan: &[(u64, u8, Vec<u8>)]) -> [u8; 48] {
    let mut ld = [0u8; 48];
    for (gpa, page_type, contents) in plan {
        let mut info = Vec::with_capacity(0x70);
        info.extend_from_slice(&ld);
        if *page_type == 1 {
            info.extend_from_slice(&Sha384::digest(contents));
        } else {
            info.extend_from_slice(&[0u8; 48]);
        }
        info.extend_from_slice(&0x70u16.to_le_bytes());
        info.extend_from_slice(&[*page_type, 0, 0, 0, 0, 0]);
        info.extend_from_slice(&gpa.to_le_bytes());
        assert_eq!(info.len(), 0x70);
        ld.copy_from_slice(&Sha384::digest(&info));
    }
    ld
}

#[test]
fn end_to_end_plan_digest_signed_report_verdict() {
    let dir = scratch("e2e");
    let plan = |firmware_byte: u8| {
        vec![
            (0xFFFF_E000u64, 1u8, vec![firmware_byte; 4096]),
            (0xFFFF_F000, 1, vec![0x90; 4096]),
            (0x0080_0000, 3, vec![]),
        ]
    };
    let digest = launch_digest(&plan(0xCC));
    let altered = launch_digest(&plan(0xCD));
    assert_ne!(digest, altered);

    // The guest binds an ephemeral key to the relying party's nonce.
    let (nonce, key) = ([0xA5u8; 32], [0x04u8; 65]);
    let tcb = Tcb::parse("bl=4,tee=0,snp=22,ucode=213", TcbLayout::MilanGenoa).unwrap();
    let chain = TestChain::generate(tcb, [0x42; 64]).unwrap();
    let report = chain.sign_template(&ReportTemplate {
        version: 3,
        measurement: digest,
        host_data: [0x77; 32],
        report_data: report_data_for(&nonce, &key),
        ..ReportTemplate::default()
    });
    let (rf, vf, cf) = (
        dir.join("report.bin"),
        dir.join("vcek.der"),
        dir.join("chain.pem"),
    );
    std::fs::write(&rf, report).unwrap();
    std::fs::write(&vf, chain.vcek.to_der()).unwrap();
    std::fs::write(&cf, chain.chain_pem().unwrap()).unwrap();

    let binding = format!("nonce={},key={}", hex::encode(nonce), hex::encode(key));
    let run = |measurement: &[u8; 48], binding: &str| {
        veil(&[
            "--report",
            p(&rf),
            "--vcek",
            p(&vf),
            "--chain",
            p(&cf),
            "--measurement",
            &hex::encode(measurement),
            "--host-data",
            &"77".repeat(32),
            "--report-data-from",
            binding,
            "--min-tcb",
            "bl=4,snp=22",
            "--vmpl",
            "0",
        ])
    };
    let o = run(&digest, &binding);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("[pass] report_data"), "{}", text(&o));

    // The plan changed: the digest the relying party expects no longer matches.
    assert_fails(&run(&altered, &binding), "measurement");
    // A different nonce (a replay) or a different key (a man in the middle).
    let replay = format!(
        "nonce={},key={}",
        hex::encode([0xA6u8; 32]),
        hex::encode(key)
    );
    assert_fails(&run(&digest, &replay), "report_data");
    let mitm = format!(
        "nonce={},key={}",
        hex::encode(nonce),
        hex::encode([0x05u8; 65])
    );
    assert_fails(&run(&digest, &mitm), "report_data");
    // AMD's built-in chain does not certify the test VCEK.
    let o = veil(&["--report", p(&rf), "--vcek", p(&vf), "--product", "milan"]);
    assert_fails(&o, "cert_chain");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn public_tdx_quotes_verify_and_compare_mrtd() {
    for name in [
        "quote_v4_td10.bin",
        "quote_v5_td15.bin",
        "quote_v5_td15ex.bin",
    ] {
        let q = tdx_data(name);
        let o = veil(&["--quote", p(&q), "--json"]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mrtd = j["facts"]["mrtd"].as_str().unwrap().to_string();
        let o = veil(&["--quote", p(&q), "--measurement", &mrtd]);
        assert_eq!(o.status.code(), Some(0), "{name}: {}", text(&o));
        assert!(text(&o).contains("[pass] pck_chain"));
        let mut wrong = mrtd.clone();
        wrong.replace_range(0..1, if mrtd.starts_with('0') { "1" } else { "0" });
        assert_fails(
            &veil(&["--quote", p(&q), "--measurement", &wrong]),
            "measurement",
        );
    }
}
