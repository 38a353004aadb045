//! `veil measure --platform sev-snp` against the independent `sev-snp-measure` tool (PyPI), run
//! side by side on the same inputs. Each test name says which configurations agree.

use std::path::Path;
use std::process::Command;

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn ready() -> bool {
    if !veil_tests::have_tool("sev-snp-measure") {
        eprintln!("skipped: sev-snp-measure is not installed (pip install sev-snp-measure)");
        return false;
    }
    if !Path::new(OVMF).is_file() {
        eprintln!("skipped: {OVMF} is missing (apt-get install ovmf)");
        return false;
    }
    true
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("the command starts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Runs both tools; `veil` gets `veil_args`, the oracle `oracle_args`; returns both digests.
fn both(veil_args: &[&str], oracle_args: &[&str]) -> (String, String) {
    let (ok, veil, err) = run(Command::new(veil_tests::bin("veil"))
        .args(["measure", "--platform", "sev-snp"])
        .args(veil_args));
    assert!(ok, "veil measure {veil_args:?} failed: {err}");
    let (ok, oracle, err) = run(Command::new("sev-snp-measure")
        .args(["--mode", "snp"])
        .args(oracle_args));
    assert!(ok, "sev-snp-measure {oracle_args:?} failed: {err}");
    assert_eq!(veil.len(), 96, "veil printed {veil:?}");
    (veil, oracle)
}

#[test]
fn agrees_with_sev_snp_measure_for_debian_ovmf_across_vcpus_and_cpu_types() {
    if !ready() {
        return;
    }
    for vcpus in ["1", "2", "4", "16"] {
        for cpu in ["EPYC", "EPYC-Milan", "EPYC-Genoa"] {
            let (veil, oracle) = both(
                &["--firmware", OVMF, "--cpus", vcpus, "--cpu-type", cpu],
                &["--ovmf", OVMF, "--vcpus", vcpus, "--vcpu-type", cpu],
            );
            assert_eq!(veil, oracle, "vcpus {vcpus}, cpu type {cpu}");
        }
    }
}

#[test]
fn agrees_with_sev_snp_measure_for_cpu_sig_and_guest_features() {
    if !ready() {
        return;
    }
    for (sig, features) in [
        ("0xa00f11", "0x1"),
        ("0xb00f21", "0x21"),
        ("0x800f12", "0x5"),
    ] {
        let (veil, oracle) = both(
            &[
                "--firmware",
                OVMF,
                "--cpus",
                "3",
                "--cpu-sig",
                sig,
                "--guest-features",
                features,
            ],
            &[
                "--ovmf",
                OVMF,
                "--vcpus",
                "3",
                "--vcpu-sig",
                sig,
                "--guest-features",
                features,
            ],
        );
        assert_eq!(veil, oracle, "cpu sig {sig}, guest features {features}");
    }
}

fn write_direct_boot_files(dir: &Path) -> (String, String) {
    let kernel = dir.join("bzImage");
    let initrd = dir.join("initrd.img");
    std::fs::write(
        &kernel,
        (0..100_000u32).map(|i| (i % 253) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    std::fs::write(&initrd, b"070701 a tiny initramfs\n".repeat(1000)).unwrap();
    (kernel.display().to_string(), initrd.display().to_string())
}

#[test]
fn agrees_with_sev_snp_measure_with_kernel_hashes_on_an_ovmf_with_the_section() {
    if !ready() {
        return;
    }
    let dir = veil_tests::scratch_dir("snp-kernel-hashes");
    let (kernel, initrd) = write_direct_boot_files(&dir);
    let image = veil_tests::ovmf_image::build(
        0x40000,
        &[
            (0x80_0000, 0x9000, 1),
            (0x80_9000, 0x1000, 2),
            (0x80_a000, 0x1000, 3),
            (0x80_b000, 0x1000, 0x10),
            (0x80_c000, 0x4000, 1),
        ],
        0xfffc_b004,
        Some(0x80_bc00),
    );
    let ovmf = dir.join("OVMF-hashes.fd");
    std::fs::write(&ovmf, image).unwrap();
    let ovmf = ovmf.display().to_string();
    let cases: [&[&str]; 3] = [
        &[
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--append",
            "console=ttyS0 root=/dev/vda",
        ],
        &["--kernel", &kernel],
        &["--kernel", &kernel, "--append", ""],
    ];
    for extra in cases {
        for vcpus in ["1", "4"] {
            let mut v = vec![
                "--firmware",
                ovmf.as_str(),
                "--cpus",
                vcpus,
                "--cpu-type",
                "EPYC-Milan",
            ];
            v.extend_from_slice(extra);
            let mut o = vec![
                "--ovmf",
                ovmf.as_str(),
                "--vcpus",
                vcpus,
                "--vcpu-type",
                "EPYC-Milan",
            ];
            o.extend_from_slice(extra);
            let (veil, oracle) = both(&v, &o);
            assert_eq!(veil, oracle, "direct boot {extra:?}, vcpus {vcpus}");
        }
    }
    // Without a kernel the section is imported as zero pages: still in agreement.
    let (veil, oracle) = both(
        &[
            "--firmware",
            &ovmf,
            "--cpus",
            "2",
            "--cpu-type",
            "EPYC-Genoa",
        ],
        &["--ovmf", &ovmf, "--vcpus", "2", "--vcpu-type", "EPYC-Genoa"],
    );
    assert_eq!(veil, oracle, "no kernel, section present");
    // And the kernel's bytes matter.
    let (with_kernel, _) = both(
        &[
            "--firmware",
            &ovmf,
            "--cpus",
            "2",
            "--cpu-type",
            "EPYC-Genoa",
            "--kernel",
            &kernel,
        ],
        &[
            "--ovmf",
            &ovmf,
            "--vcpus",
            "2",
            "--vcpu-type",
            "EPYC-Genoa",
            "--kernel",
            &kernel,
        ],
    );
    assert_ne!(with_kernel, veil);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kernel_hashes_on_debian_ovmf_fail_as_in_sev_snp_measure_naming_file_and_section() {
    if !ready() {
        return;
    }
    let image = std::sync::Arc::from(std::fs::read(OVMF).unwrap());
    let parsed = veil_firmware::ovmf::Ovmf::parse(image).unwrap();
    if parsed.kernel_hashes_section().is_some() {
        eprintln!(
            "skipped: this {OVMF} has an SNP KERNEL_HASHES section; agreement with kernel hashes \
             is covered by the synthetic-image test"
        );
        return;
    }
    let dir = veil_tests::scratch_dir("snp-no-hashes");
    let (kernel, _) = write_direct_boot_files(&dir);
    let (ok, _, err) = run(Command::new(veil_tests::bin("veil")).args([
        "measure",
        "--platform",
        "sev-snp",
        "--firmware",
        OVMF,
        "--cpu-type",
        "EPYC",
        "--kernel",
        &kernel,
    ]));
    assert!(
        !ok,
        "veil accepted a kernel for an OVMF without KERNEL_HASHES"
    );
    assert!(
        err.contains(OVMF) && err.contains("KERNEL_HASHES"),
        "stderr: {err}"
    );
    let (ok, _, _) = run(Command::new("sev-snp-measure").args([
        "--mode",
        "snp",
        "--ovmf",
        OVMF,
        "--vcpus",
        "1",
        "--vcpu-type",
        "EPYC",
        "--kernel",
        &kernel,
    ]));
    assert!(
        !ok,
        "sev-snp-measure is expected to refuse the same request"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trace_lists_every_measured_page_and_ends_at_the_digest() {
    if !Path::new(OVMF).is_file() {
        eprintln!("skipped: {OVMF} is missing");
        return;
    }
    let out = Command::new(veil_tests::bin("veil"))
        .args([
            "measure",
            "--firmware",
            OVMF,
            "--cpus",
            "2",
            "--cpu-type",
            "EPYC",
            "--trace",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let digest = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let trace = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = trace.lines().collect();
    // 512 firmware pages, the SEV metadata pages (0x9000+0x3000+0x1000+0x1000+0x11000 = 31 pages
    // in Debian's OVMF), and two VMSAs.
    let size = std::fs::metadata(OVMF).unwrap().len() / 4096;
    assert_eq!(
        lines.len() as u64,
        size + 31 + 2,
        "trace has {} lines",
        lines.len()
    );
    assert!(lines[0].contains("gpa=0x0000ffe00000") && lines[0].contains("normal"));
    assert!(lines.last().unwrap().contains("vmsa"));
    assert!(lines.last().unwrap().ends_with(&digest));
}
