//! `veil run --platform sev-snp|tdx --dry-run`: the real launch sequence replayed through the
//! platform model, run as the `veil` binary. Its digest must equal `veil measure`'s for the same
//! flags, and (SNP, OVMF) the independent `sev-snp-measure`'s.

use std::path::Path;
use std::process::Command;

use veil_tests::{have_tool, temp_dir, veil};

const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

fn ovmf_present() -> bool {
    if Path::new(OVMF).is_file() {
        return true;
    }
    eprintln!("skipped: {OVMF} is missing (apt-get install ovmf)");
    false
}

/// The digest printed by a dry run (`launch digest: X` or `mrtd: X`, the last line).
fn dry_run_digest(args: &[&str]) -> String {
    let mut all = vec!["run", "--dry-run"];
    all.extend_from_slice(args);
    let out = veil(&all);
    out.expect_status(0);
    let last = out.stdout.lines().last().unwrap_or_default().to_string();
    let digest = last
        .strip_prefix("launch digest: ")
        .or_else(|| last.strip_prefix("mrtd: "))
        .unwrap_or_else(|| panic!("no digest line in {:#?}", out));
    assert_eq!(digest.len(), 96, "{last}");
    digest.to_string()
}

fn measure_digest(args: &[&str]) -> String {
    let mut all = vec!["measure"];
    all.extend_from_slice(args);
    let out = veil(&all);
    out.expect_status(0);
    out.stdout.trim().to_string()
}

#[test]
fn snp_ovmf_dry_run_equals_veil_measure_and_sev_snp_measure() {
    if !ovmf_present() {
        return;
    }
    let oracle = have_tool("sev-snp-measure");
    if !oracle {
        eprintln!("sev-snp-measure is not installed: comparing with veil measure only");
    }
    for cpus in ["1", "2", "4", "16"] {
        for cpu in ["EPYC-Milan", "EPYC-Genoa"] {
            let args = [
                "--platform",
                "sev-snp",
                "--firmware",
                OVMF,
                "--cpus",
                cpus,
                "--cpu-type",
                cpu,
                "--memory",
                "512M",
            ];
            let dry = dry_run_digest(&args);
            assert_eq!(dry, measure_digest(&args), "{cpus} vCPUs, {cpu}");
            if oracle {
                let out = Command::new("sev-snp-measure")
                    .args(["--mode", "snp", "--vcpus", cpus, "--vcpu-type", cpu])
                    .args(["--ovmf", OVMF])
                    .output()
                    .expect("sev-snp-measure runs");
                assert!(out.status.success(), "{out:?}");
                let expected = String::from_utf8_lossy(&out.stdout).trim().to_string();
                assert_eq!(dry, expected, "{cpus} vCPUs, {cpu}: sev-snp-measure");
            }
        }
    }
}

#[test]
fn snp_dry_run_with_debug_swap_equals_sev_snp_measure() {
    if !ovmf_present() || !have_tool("sev-snp-measure") {
        eprintln!("skipped: needs {OVMF} and sev-snp-measure");
        return;
    }
    let args = [
        "--platform",
        "sev-snp",
        "--firmware",
        OVMF,
        "--cpus",
        "3",
        "--cpu-sig",
        "0xa00f11",
        "--guest-features",
        "0x21",
    ];
    let out = Command::new("sev-snp-measure")
        .args(["--mode", "snp", "--vcpus", "3", "--vcpu-sig", "0xa00f11"])
        .args(["--guest-features", "0x21", "--ovmf", OVMF])
        .output()
        .expect("sev-snp-measure runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        dry_run_digest(&args),
        String::from_utf8_lossy(&out.stdout).trim()
    );
}

#[test]
fn tdx_ovmf_dry_run_equals_veil_measure() {
    if !ovmf_present() {
        return;
    }
    for cpus in ["1", "2", "8"] {
        let args = ["--platform", "tdx", "--firmware", OVMF, "--cpus", cpus];
        assert_eq!(dry_run_digest(&args), measure_digest(&args), "{cpus} vCPUs");
    }
}

#[test]
fn igvm_dry_run_equals_veil_measure_on_both_platforms() {
    if !ovmf_present() {
        return;
    }
    let dir = temp_dir("dry-run-igvm");
    let igvm = dir.join("ovmf.igvm");
    let igvm = igvm.to_str().expect("temp paths are UTF-8");
    let out = veil(&[
        "igvm",
        "build",
        "--firmware",
        OVMF,
        "--platform",
        "sev-snp,tdx",
        "--cpu-type",
        "EPYC-Milan",
        "-o",
        igvm,
    ]);
    out.expect_status(0);
    for cpus in ["1", "2", "4"] {
        let snp = [
            "--platform",
            "sev-snp",
            "--igvm",
            igvm,
            "--cpus",
            cpus,
            "--cpu-type",
            "EPYC-Milan",
        ];
        assert_eq!(
            dry_run_digest(&snp),
            measure_digest(&snp),
            "SNP, {cpus} vCPUs"
        );
        let tdx = ["--platform", "tdx", "--igvm", igvm, "--cpus", cpus];
        assert_eq!(
            dry_run_digest(&tdx),
            measure_digest(&tdx),
            "TDX, {cpus} vCPUs"
        );
    }
}

#[test]
fn dry_run_json_lists_the_commands_and_agrees() {
    if !ovmf_present() {
        return;
    }
    let out = veil(&[
        "run",
        "--dry-run",
        "--json",
        "--platform",
        "sev-snp",
        "--firmware",
        OVMF,
        "--cpu-type",
        "EPYC",
        "--policy",
        "0x30000",
        "--host-data",
        &"5a".repeat(32),
    ]);
    out.expect_status(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["platform"], "sev-snp");
    assert_eq!(v["agrees_with_measure"], true);
    assert_eq!(v["digest"], v["measure_digest"]);
    let commands: Vec<&str> = v["commands"]
        .as_array()
        .expect("a command list")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(
        commands[0].contains("KVM_CREATE_VM type=4"),
        "{commands:#?}"
    );
    let finish = commands.last().expect("commands");
    assert!(finish.starts_with("SNP_LAUNCH_FINISH"), "{finish}");
    assert!(finish.contains(&"5a".repeat(32)), "{finish}");
}

#[test]
fn dry_run_refuses_what_the_platform_would_refuse() {
    if !ovmf_present() {
        return;
    }
    // ReflectVC (bit 2) is not a feature KVM offers through KVM_SEV_INIT2.
    let out = veil(&[
        "run",
        "--dry-run",
        "--platform",
        "sev-snp",
        "--firmware",
        OVMF,
        "--cpu-type",
        "EPYC",
        "--guest-features",
        "0x5",
    ]);
    out.expect_status(1);
    assert!(out.stderr.contains("KVM_SEV_INIT2"), "{out:#?}");
    assert!(out.stderr.contains("EINVAL"), "{out:#?}");
    // A policy without the must-be-one bit 17.
    let out = veil(&[
        "run",
        "--dry-run",
        "--platform",
        "sev-snp",
        "--firmware",
        OVMF,
        "--cpu-type",
        "EPYC",
        "--policy",
        "0x10000",
    ]);
    out.expect_status(1);
    assert!(out.stderr.contains("SNP_LAUNCH_START"), "{out:#?}");
    // TD attributes the modelled TDX module does not support.
    let out = veil(&[
        "run",
        "--dry-run",
        "--platform",
        "tdx",
        "--firmware",
        OVMF,
        "--tdx-attributes",
        "0x10000000000",
    ]);
    out.expect_status(1);
    assert!(out.stderr.contains("TD attributes"), "{out:#?}");
}

#[test]
fn dry_run_needs_a_confidential_platform_and_well_formed_values() {
    let out = veil(&["run", "--dry-run", "--firmware", OVMF]);
    out.expect_status(2);
    assert!(out.stderr.contains("--platform sev-snp"), "{out:#?}");
    let out = veil(&[
        "run",
        "--dry-run",
        "--platform",
        "tdx",
        "--firmware",
        OVMF,
        "--mrowner",
        "abcd",
    ]);
    out.expect_status(1);
    assert!(
        out.stderr.contains("--mrowner must be 96 hex digits"),
        "{out:#?}"
    );
    let out = veil(&[
        "run",
        "--dry-run",
        "--platform",
        "sev-snp",
        "--firmware",
        "/nonexistent/OVMF.fd",
        "--cpu-type",
        "EPYC",
    ]);
    out.expect_status(1);
    assert!(out.stderr.contains("/nonexistent/OVMF.fd"), "{out:#?}");
}

/// A P-384 key made for these tests only.
const TEST_KEY: &str = "-----BEGIN EC PRIVATE KEY-----
MIGkAgEBBDB+sXQLS3xwZVHy5t3M1BZpwQAZ5elzhbBKNmodir8Vugpex7XzuKg9
t7QIxMkUx3igBwYFK4EEACKhZANiAAT6EE0M2CQ/AvdW3cSnyAgfboRwGhFVyrlw
aRwYBnRvr7Y2DNx39wZjpRAcwOfMl3eeUsEfjG5OqjYGpHNgRLGBBeSqQV2DHgKH
bEH4HaZvvAqnfvrgWAMvfaFfOacJLBc=
-----END EC PRIVATE KEY-----
";

#[test]
fn an_id_block_for_the_dry_run_digest_finishes_and_one_for_another_is_refused() {
    if !ovmf_present() {
        return;
    }
    let dir = temp_dir("dry-run-id-block");
    let key = dir.join("id.pem");
    std::fs::write(&key, TEST_KEY).expect("the temp dir is writable");
    let base = [
        "--platform",
        "sev-snp",
        "--firmware",
        OVMF,
        "--cpus",
        "2",
        "--cpu-type",
        "EPYC-Genoa",
    ];
    let digest = dry_run_digest(&base);
    let mut other = digest.clone().into_bytes();
    other[0] = if other[0] == b'0' { b'1' } else { b'0' };
    let other = String::from_utf8(other).expect("hex");
    for (name, measurement) in [("good", &digest), ("bad", &other)] {
        let out_dir = dir.join(name);
        let out = veil(&[
            "id-block",
            "--measurement",
            measurement,
            "--id-key",
            key.to_str().expect("UTF-8 path"),
            "--out-dir",
            out_dir.to_str().expect("UTF-8 path"),
        ]);
        out.expect_status(0);
    }
    let with_block = |name: &str| {
        let block = dir.join(name).join("id_block.bin");
        let auth = dir.join(name).join("id_auth.bin");
        let mut args = vec!["run", "--dry-run"];
        args.extend_from_slice(&base);
        let (block, auth) = (
            block.to_str().expect("UTF-8").to_string(),
            auth.to_str().expect("UTF-8").to_string(),
        );
        let mut args: Vec<String> = args.into_iter().map(String::from).collect();
        args.extend(["--id-block".into(), block, "--id-auth".into(), auth]);
        veil(&args)
    };
    let good = with_block("good");
    good.expect_status(0);
    assert!(good.stdout.contains("id_block_en=1"), "{good:#?}");
    let bad = with_block("bad");
    bad.expect_status(1);
    assert!(bad.stderr.contains("BAD_MEASUREMENT"), "{bad:#?}");
}

#[test]
fn snp_measured_direct_boot_dry_run_equals_sev_snp_measure() {
    if !have_tool("sev-snp-measure") {
        eprintln!("skipped: sev-snp-measure is not installed (pip install sev-snp-measure)");
        return;
    }
    // Debian's OVMF has no KERNEL_HASHES section: use an OVMF-format image that has one.
    let dir = temp_dir("dry-run-direct-boot");
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
    let path = |name: &str| dir.join(name).to_str().expect("UTF-8 path").to_string();
    let (ovmf, kernel, initrd) = (path("OVMF-hashes.fd"), path("bzImage"), path("initrd"));
    std::fs::write(&ovmf, image).expect("writable temp dir");
    std::fs::write(
        &kernel,
        (0..90_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .expect("writable temp dir");
    std::fs::write(&initrd, b"070701 initramfs ".repeat(500)).expect("writable temp dir");
    let cmdline = "console=ttyS0 quiet";
    for cpus in ["1", "4"] {
        let dry = dry_run_digest(&[
            "--platform",
            "sev-snp",
            "--firmware",
            &ovmf,
            "--kernel",
            &kernel,
            "--initramfs",
            &initrd,
            "--cmdline",
            cmdline,
            "--cpus",
            cpus,
            "--cpu-type",
            "EPYC-Milan",
        ]);
        let out = Command::new("sev-snp-measure")
            .args([
                "--mode",
                "snp",
                "--vcpus",
                cpus,
                "--vcpu-type",
                "EPYC-Milan",
            ])
            .args(["--ovmf", &ovmf, "--kernel", &kernel, "--initrd", &initrd])
            .args(["--append", cmdline])
            .output()
            .expect("sev-snp-measure runs");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            dry,
            String::from_utf8_lossy(&out.stdout).trim(),
            "{cpus} vCPUs"
        );
    }
}

#[test]
fn platform_specific_flags_are_refused_on_the_other_platform() {
    let out = veil(&[
        "run",
        "--dry-run",
        "--platform",
        "tdx",
        "--firmware",
        OVMF,
        "--policy",
        "0x30000",
    ]);
    out.expect_status(2);
    assert!(out.stderr.contains("--tdx-attributes"), "{out:#?}");
    let out = veil(&[
        "run",
        "--dry-run",
        "--platform",
        "sev-snp",
        "--firmware",
        OVMF,
        "--cpu-type",
        "EPYC",
        "--tdx-xfam",
        "0x7",
    ]);
    out.expect_status(2);
    assert!(out.stderr.contains("--platform tdx"), "{out:#?}");
}
