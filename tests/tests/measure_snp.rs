//! `veil measure --platform sev-snp` against the independent `sev-snp-measure` tool (PyPI), run
//! side by side on the same inputs. Each test name says which configurations agree.

use std::path::Path;
use std::process::Command;

use veil_tests::{
    OVMF, SNP_OVMF_EPYC, have_tool, ovmf_present, sev_snp_measure, veil_fails, veil_measure,
};

fn ready() -> bool {
    if !have_tool("sev-snp-measure") {
        eprintln!("skipped: sev-snp-measure is not installed (pip install sev-snp-measure)");
        return false;
    }
    ovmf_present()
}

/// Runs both tools; `veil` gets `veil_args`, the oracle `oracle_args`; returns both digests.
fn both(veil_args: &[&str], oracle_args: &[&str]) -> (String, String) {
    let veil = veil_measure(&[&["--platform", "sev-snp"][..], veil_args].concat());
    let oracle = sev_snp_measure(oracle_args);
    assert_eq!(veil.len(), 96, "veil printed {veil:?}");
    (veil, oracle)
}

/// Both tools' digests for `firmware` with `vcpus` vCPUs of `cpu_type`, plus `extra` flags the
/// two tools spell alike.
fn both_for(firmware: &str, vcpus: &str, cpu_type: &str, extra: &[&str]) -> (String, String) {
    both(
        &[
            &[
                "--firmware",
                firmware,
                "--cpus",
                vcpus,
                "--cpu-type",
                cpu_type,
            ][..],
            extra,
        ]
        .concat(),
        &[
            &[
                "--ovmf",
                firmware,
                "--vcpus",
                vcpus,
                "--vcpu-type",
                cpu_type,
            ][..],
            extra,
        ]
        .concat(),
    )
}

#[test]
fn agrees_with_sev_snp_measure_for_debian_ovmf_across_vcpus_and_cpu_types() {
    if !ready() {
        return;
    }
    for vcpus in ["1", "2", "4", "16"] {
        for cpu in ["EPYC", "EPYC-Milan", "EPYC-Genoa"] {
            let (veil, oracle) = both_for(OVMF, vcpus, cpu, &[]);
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
    let image = veil_tests::ovmf_image::with_kernel_hashes();
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
            let (veil, oracle) = both_for(&ovmf, vcpus, "EPYC-Milan", extra);
            assert_eq!(veil, oracle, "direct boot {extra:?}, vcpus {vcpus}");
        }
    }
    // Without a kernel the section is imported as zero pages: still in agreement.
    let (veil, oracle) = both_for(&ovmf, "2", "EPYC-Genoa", &[]);
    assert_eq!(veil, oracle, "no kernel, section present");
    // And the kernel's bytes matter.
    let (with_kernel, _) = both_for(&ovmf, "2", "EPYC-Genoa", &["--kernel", &kernel]);
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
    veil_fails(
        &[&["measure"][..], &SNP_OVMF_EPYC, &["--kernel", &kernel]].concat(),
        1,
        &[OVMF, "KERNEL_HASHES"],
    );
    let oracle = Command::new("sev-snp-measure")
        .args(["--mode", "snp", "--ovmf", OVMF, "--vcpus", "1"])
        .args(["--vcpu-type", "EPYC", "--kernel", &kernel])
        .output()
        .expect("sev-snp-measure starts");
    assert!(
        !oracle.status.success(),
        "sev-snp-measure is expected to refuse the same request"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn trace_lists_every_measured_page_and_ends_at_the_digest() {
    if !ovmf_present() {
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
