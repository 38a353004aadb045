//! Real SEV-SNP and TDX launches. They run only where `veil host-check --platform P` says the
//! platform is present, and skip with the printed reason everywhere else (as on the development
//! machines, which have neither). docs/launch.md says how to run them on hardware. The OVMF
//! launches carry a virtio-rng device, so they also exercise the device manager on the
//! platform's shared memory (ACCESS_PLATFORM).
//!
//! The attestation checks need a guest that prints its evidence on the serial console:
//! `VEIL_SNP_TEST_GUEST` (an IGVM file whose guest prints `SNP_REPORT=<hex of the 0x4a0-byte
//! report>`) and `VEIL_TDX_TEST_GUEST` (an IGVM file whose guest prints `TDREPORT=<hex of the
//! 1024-byte TDREPORT>`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use veil_tests::{bin, veil, veil_measure};

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn present(platform: &str) -> bool {
    let out = veil(&["host-check", "--platform", platform]);
    if out.status == Some(0) {
        return true;
    }
    eprintln!(
        "skipped: this host cannot run {platform} guests; veil host-check says:\n{}",
        out.stderr
    );
    false
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex from the guest"))
        .collect()
}

/// Runs `veil` with `args` until a line (stdout or stderr) starts with `prefix` or `limit`
/// passes; kills it and returns the matching line and everything printed.
fn run_until(args: &[&str], prefix: &str, limit: Duration) -> (Option<String>, String) {
    let mut child = Command::new(bin("veil"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("veil starts");
    let (tx, rx) = mpsc::channel::<String>();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        BufReader::new(out)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx.send(l)))
    });
    std::thread::spawn(move || {
        BufReader::new(err)
            .lines()
            .map_while(Result::ok)
            .for_each(|l| drop(tx2.send(l)))
    });
    let deadline = Instant::now() + limit;
    let mut all = String::new();
    let mut found = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                all.push_str(&line);
                all.push('\n');
                if line.starts_with(prefix) {
                    found = Some(line);
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    (found, all)
}

fn host_cpu_sig() -> String {
    format!("{:#x}", std::arch::x86_64::__cpuid(1).eax)
}

/// What `veil measure <measure>` expects, and the first output line of `veil <run>` that starts
/// with `marker` (the test fails with all output when none comes within `limit`).
fn expected_and_line(
    measure: &[&str],
    run: &[&str],
    marker: &str,
    limit: Duration,
) -> (String, String) {
    let expected = veil_measure(measure);
    let (line, all) = run_until(run, marker, limit);
    let line = line.unwrap_or_else(|| panic!("no line starting with {marker:?}:\n{all}"));
    (expected, line)
}

#[test]
fn snp_ovmf_launch_completes_with_the_measured_digest() {
    if !present("sev-snp") {
        return;
    }
    let sig = host_cpu_sig();
    let (expected, line) = expected_and_line(
        &[
            "--platform",
            "sev-snp",
            "--firmware",
            OVMF,
            "--cpu-sig",
            &sig,
        ],
        // With a virtio device: the launch goes through the VMM's device manager, and the line
        // comes once the devices are attached.
        &["run", "--platform", "sev-snp", "--firmware", OVMF, "--rng"],
        "veil: SEV-SNP guest launched",
        Duration::from_secs(60),
    );
    assert!(line.ends_with(&expected), "{line} vs {expected}");
}

#[test]
fn snp_guest_reports_the_measurement_and_host_data() {
    if !present("sev-snp") {
        return;
    }
    let Ok(guest) = std::env::var("VEIL_SNP_TEST_GUEST") else {
        eprintln!("skipped: set VEIL_SNP_TEST_GUEST to an IGVM guest that prints SNP_REPORT=<hex>");
        return;
    };
    let host_data = "a5".repeat(32);
    let sig = host_cpu_sig();
    let (expected, line) = expected_and_line(
        &[
            "--platform",
            "sev-snp",
            "--igvm",
            &guest,
            "--cpus",
            "2",
            "--cpu-sig",
            &sig,
        ],
        &[
            "run",
            "--platform",
            "sev-snp",
            "--igvm",
            &guest,
            "--cpus",
            "2",
            "--host-data",
            &host_data,
        ],
        "SNP_REPORT=",
        Duration::from_secs(300),
    );
    let report = unhex(line.trim_start_matches("SNP_REPORT=").trim());
    assert!(report.len() >= 0x4a0, "report of {} bytes", report.len());
    assert_eq!(hex(&report[0x90..0xc0]), expected, "MEASUREMENT");
    assert_eq!(hex(&report[0xc0..0xe0]), host_data, "HOST_DATA");
}

#[test]
fn tdx_ovmf_launch_completes_with_the_measured_mrtd() {
    if !present("tdx") {
        return;
    }
    let (expected, line) = expected_and_line(
        &["--platform", "tdx", "--firmware", OVMF],
        &["run", "--platform", "tdx", "--firmware", OVMF, "--rng"],
        "veil: TD launched",
        Duration::from_secs(60),
    );
    assert!(line.ends_with(&expected), "{line} vs {expected}");
}

#[test]
fn tdx_guest_reports_the_mrtd() {
    if !present("tdx") {
        return;
    }
    let Ok(guest) = std::env::var("VEIL_TDX_TEST_GUEST") else {
        eprintln!("skipped: set VEIL_TDX_TEST_GUEST to an IGVM guest that prints TDREPORT=<hex>");
        return;
    };
    let (expected, line) = expected_and_line(
        &["--platform", "tdx", "--igvm", &guest, "--cpus", "2"],
        &["run", "--platform", "tdx", "--igvm", &guest, "--cpus", "2"],
        "TDREPORT=",
        Duration::from_secs(300),
    );
    let report = unhex(line.trim_start_matches("TDREPORT=").trim());
    assert!(report.len() >= 1024, "TDREPORT of {} bytes", report.len());
    // TDREPORT: REPORTMACSTRUCT (256), TEE_TCB_INFO (239), reserved (17), then TDINFO:
    // ATTRIBUTES (8), XFAM (8), MRTD (48).
    assert_eq!(hex(&report[528..576]), expected, "MRTD");
}
