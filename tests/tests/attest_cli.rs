//! `veil attest verify` as a relying party runs it: the public Milan report with AMD's built-in
//! chain, mutations of it, public TDX quotes, and the end-to-end path launch plan -> launch digest
//! -> `veil measure` -> a report signed by the test chain -> verdict.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use veil_launch::attest::report_data_for;
use veil_launch::attest::test_signer::{ReportTemplate, TestChain};
use veil_launch::attest::{Tcb, TcbLayout};
use veil_tests::{OVMF, ovmf_present, veil_measure};

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

fn scratch(test: &str) -> PathBuf {
    veil_tests::scratch_dir(&format!("attest-{test}"))
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

/// Asserts exit 1 and that the verdict lists `check` as failed; `case` names the run.
fn assert_fails(case: &str, o: &Output, check: &str) {
    let t = text(o);
    assert_eq!(o.status.code(), Some(1), "{case}: {t}");
    assert!(
        t.contains(&format!("[FAIL] {check}:")),
        "{case}: {check} not failed:\n{t}"
    );
}

/// Asserts exit 0 (a passing verdict); `case` names the run.
fn assert_passes(case: &str, o: &Output) {
    assert_eq!(o.status.code(), Some(0), "{case}: {}", text(o));
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
    assert_passes("all expectations", &o);
    let t = text(&o);
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
    assert_passes("explicit product, JSON", &o);
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
            &format!("byte {off:#x} changed"),
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
        "signature changed",
        &veil(&["--report", p(&f), "--vcek", p(&vcek), "--chain", p(&chain)]),
        "report_signature",
    );

    // The wrong product's chain, then expectations that differ from the good report.
    let good = snp_data("report_milan.hex");
    let mut m = MEASUREMENT.to_string();
    m.replace_range(0..2, "7b");
    let host_data = "11".repeat(32);
    for (flags, check) in [
        (&["--product", "genoa"][..], "cert_chain"),
        (&["--measurement", &m], "measurement"),
        (&["--host-data", &host_data], "host_data"),
        (&["--report-data", "00"], "report_data"),
        (&["--min-tcb", "bl=3,tee=0,snp=8,ucode=116"], "min_tcb"),
        (&["--deny-smt"], "smt"),
    ] {
        let args = [&["--report", p(&good), "--vcek", p(&vcek)][..], flags].concat();
        assert_fails(&format!("{flags:?}"), &veil(&args), check);
    }

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

/// `veil measure` of a launch plan: a synthetic OVMF-format image with SEV metadata, booted with
/// `extra` flags (vCPUs, CPU type).
fn measure(firmware: &Path, extra: &[&str]) -> [u8; 48] {
    let plan = [
        &["--platform", "sev-snp", "--firmware", p(firmware)][..],
        extra,
    ]
    .concat();
    let digest = hex::decode(veil_measure(&plan)).unwrap();
    digest.try_into().unwrap()
}

fn firmware_image(dir: &Path, name: &str, reset_eip: u32) -> PathBuf {
    let image = veil_tests::ovmf_image::build(
        0x40000,
        &[
            (0x80_0000, 0x9000, 1),
            (0x80_9000, 0x1000, 2),
            (0x80_a000, 0x1000, 3),
        ],
        reset_eip,
        None,
    );
    let f = dir.join(name);
    std::fs::write(&f, image).unwrap();
    f
}

#[test]
fn end_to_end_plan_measure_signed_report_verdict() {
    let dir = scratch("e2e");
    // Launch plan -> `veil measure` -> the digest the relying party expects.
    let fw = firmware_image(&dir, "fw.fd", 0xfffc_b004);
    let plan = ["--cpus", "1", "--cpu-type", "EPYC-Milan"];
    let digest = measure(&fw, &plan);
    // Altered plans: another vCPU count, other firmware.
    let more_cpus = measure(&fw, &["--cpus", "2", "--cpu-type", "EPYC-Milan"]);
    let other_fw = firmware_image(&dir, "other.fd", 0xfffc_b008);
    let other = measure(&other_fw, &plan);
    assert!(digest != more_cpus && digest != other && more_cpus != other);

    // The guest (here: the test signer standing in for the platform model) binds an ephemeral
    // key to the relying party's nonce and gets a report carrying the launch digest.
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
    std::fs::write(&vf, chain.vcek.to_der().unwrap()).unwrap();
    std::fs::write(&cf, chain.chain_pem().unwrap()).unwrap();

    let binding = format!("nonce={},key={}", hex::encode(nonce), hex::encode(key));
    let run = |expect: &[&str], binding: &str| {
        let mut args = vec![
            "--report",
            p(&rf),
            "--vcek",
            p(&vf),
            "--chain",
            p(&cf),
            "--host-data",
        ];
        let host = "77".repeat(32);
        args.push(&host);
        args.extend([
            "--report-data-from",
            binding,
            "--min-tcb",
            "bl=4,snp=22",
            "--vmpl",
            "0",
        ]);
        args.extend(expect);
        veil(&args)
    };
    let hex_digest = hex::encode(digest);
    let o = run(&["--measurement", &hex_digest], &binding);
    assert_passes("the plan's digest", &o);
    assert!(text(&o).contains("[pass] report_data"), "{}", text(&o));
    // The same, with the measurement computed on the spot from the plan's flags.
    let fw_arg = p(&fw);
    let plan_flags = [
        "--firmware",
        fw_arg,
        "--cpus",
        "1",
        "--cpu-type",
        "EPYC-Milan",
    ];
    assert_passes("the plan's flags", &run(&plan_flags, &binding));

    // The plan changed (the expected digest no longer matches), a different nonce (a replay) or
    // a different key (a man in the middle).
    let (more_hex, other_hex) = (hex::encode(more_cpus), hex::encode(other));
    let other_arg = p(&other_fw);
    let replay = format!(
        "nonce={},key={}",
        hex::encode([0xA6u8; 32]),
        hex::encode(key)
    );
    let mitm = format!(
        "nonce={},key={}",
        hex::encode(nonce),
        hex::encode([0x05u8; 65])
    );
    for (expect, binding, check) in [
        (&["--measurement", &more_hex][..], &binding, "measurement"),
        (&["--measurement", &other_hex], &binding, "measurement"),
        (
            &[
                "--firmware",
                fw_arg,
                "--cpus",
                "2",
                "--cpu-type",
                "EPYC-Milan",
            ],
            &binding,
            "measurement",
        ),
        (
            &["--firmware", other_arg, "--cpu-type", "EPYC-Milan"],
            &binding,
            "measurement",
        ),
        (&["--measurement", &hex_digest], &replay, "report_data"),
        (&["--measurement", &hex_digest], &mitm, "report_data"),
    ] {
        let case = format!("{expect:?} with {binding}");
        assert_fails(&case, &run(expect, binding), check);
    }
    // AMD's built-in chain does not certify the test VCEK.
    let o = veil(&["--report", p(&rf), "--vcek", p(&vf), "--product", "milan"]);
    assert_fails("the built-in chain", &o, "cert_chain");
    // Both an explicit measurement and a plan is a usage mistake, not a verdict.
    let o = run(
        &[
            "--measurement",
            &hex_digest,
            "--firmware",
            fw_arg,
            "--cpu-type",
            "EPYC-Milan",
        ],
        &binding,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not both"), "{}", text(&o));
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
        assert_passes(name, &o);
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mrtd = j["facts"]["mrtd"].as_str().unwrap().to_string();
        let o = veil(&["--quote", p(&q), "--measurement", &mrtd]);
        assert_passes(name, &o);
        assert!(text(&o).contains("[pass] pck_chain"));
        let mut wrong = mrtd.clone();
        wrong.replace_range(0..1, if mrtd.starts_with('0') { "1" } else { "0" });
        assert_fails(
            name,
            &veil(&["--quote", p(&q), "--measurement", &wrong]),
            "measurement",
        );
    }
}

#[test]
fn end_to_end_tdx_plan_mrtd_synthetic_quote_verdict() {
    use veil_launch::attest::tdx::test_quote::{TestQuoteSigner, blank_td};
    if !ovmf_present() {
        return;
    }
    let dir = scratch("e2e-tdx");
    let mrtd_hex = veil_measure(&["--platform", "tdx", "--firmware", OVMF]);
    let mut td = blank_td();
    td.mrtd = hex::decode(&mrtd_hex).unwrap().try_into().unwrap();
    let (nonce, key) = ([0x11u8; 16], [0x22u8; 32]);
    td.report_data = report_data_for(&nonce, &key);
    let quote = dir.join("quote.bin");
    std::fs::write(&quote, TestQuoteSigner::generate().unwrap().quote_v4(&td)).unwrap();
    let binding = format!("nonce={},key={}", hex::encode(nonce), hex::encode(key));
    let base = [
        "--quote",
        p(&quote),
        "--no-pck-chain",
        "--report-data-from",
        &binding,
    ];

    let o = veil(&[&base[..], &["--measurement", &mrtd_hex]].concat());
    assert_passes("the measured MRTD", &o);
    let o = veil(&[&base[..], &["--firmware", OVMF]].concat());
    assert_passes("the firmware's MRTD", &o);
    assert!(text(&o).contains("[skip] pck_chain") && text(&o).contains("[skip] tcb_status"));

    // Altered firmware: another MRTD.
    let mut fw = std::fs::read(OVMF).unwrap();
    let mid = fw.len() / 2;
    fw[mid] ^= 1;
    let altered = dir.join("OVMF-altered.fd");
    std::fs::write(&altered, fw).unwrap();
    assert_fails(
        "altered firmware",
        &veil(&[&base[..], &["--firmware", p(&altered)]].concat()),
        "measurement",
    );
    // Without --no-pck-chain the test chain is not Intel's.
    let o = veil(&["--quote", p(&quote), "--measurement", &mrtd_hex]);
    assert_fails("with the PCK chain", &o, "pck_chain");
    let _ = std::fs::remove_dir_all(dir);
}
