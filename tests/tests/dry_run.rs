//! `veil run --platform sev-snp|tdx --dry-run`: the real launch sequence replayed through the
//! platform model, run as the `veil` binary. Its digest must equal `veil measure`'s for the same
//! flags, and (SNP, OVMF) the independent `sev-snp-measure`'s.

use veil_tests::{
    OVMF, Output, SNP_OVMF_EPYC, have_tool, ovmf_present, sev_snp_measure, temp_dir, utf8, veil,
    veil_fails, veil_measure,
};

/// SEV-SNP on `firmware` with `cpus` vCPUs of `cpu_type`.
fn snp<'a>(firmware: &'a str, cpus: &'a str, cpu_type: &'a str) -> [&'a str; 8] {
    [
        "--platform",
        "sev-snp",
        "--firmware",
        firmware,
        "--cpus",
        cpus,
        "--cpu-type",
        cpu_type,
    ]
}

/// Runs `veil run --dry-run <args>`.
fn dry_run(args: &[&str]) -> Output {
    veil(&[&["run", "--dry-run"][..], args].concat())
}

/// Asserts `veil run --dry-run <args>` exits with `status` naming every one of `words`.
fn dry_run_fails(args: &[&str], status: i32, words: &[&str]) {
    veil_fails(&[&["run", "--dry-run"][..], args].concat(), status, words);
}

/// The digest printed by a dry run (`launch digest: X` or `mrtd: X`, the last line).
fn dry_run_digest(args: &[&str]) -> String {
    let out = dry_run(args);
    out.expect_status(0);
    let last = out.stdout.lines().last().unwrap_or_default().to_string();
    let digest = last
        .strip_prefix("launch digest: ")
        .or_else(|| last.strip_prefix("mrtd: "))
        .unwrap_or_else(|| panic!("no digest line in {:#?}", out));
    assert_eq!(digest.len(), 96, "{last}");
    digest.to_string()
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
            let args = [&snp(OVMF, cpus, cpu)[..], &["--memory", "512M"]].concat();
            let dry = dry_run_digest(&args);
            assert_eq!(dry, veil_measure(&args), "{cpus} vCPUs, {cpu}");
            if oracle {
                let expected =
                    sev_snp_measure(&["--vcpus", cpus, "--vcpu-type", cpu, "--ovmf", OVMF]);
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
    let expected = sev_snp_measure(&[
        "--vcpus",
        "3",
        "--vcpu-sig",
        "0xa00f11",
        "--guest-features",
        "0x21",
        "--ovmf",
        OVMF,
    ]);
    assert_eq!(dry_run_digest(&args), expected);
}

#[test]
fn tdx_ovmf_dry_run_equals_veil_measure() {
    if !ovmf_present() {
        return;
    }
    for cpus in ["1", "2", "8"] {
        let args = ["--platform", "tdx", "--firmware", OVMF, "--cpus", cpus];
        assert_eq!(dry_run_digest(&args), veil_measure(&args), "{cpus} vCPUs");
    }
}

#[test]
fn igvm_dry_run_equals_veil_measure_on_both_platforms() {
    if !ovmf_present() {
        return;
    }
    let dir = temp_dir("dry-run-igvm");
    let igvm = dir.join("ovmf.igvm");
    let igvm = utf8(&igvm);
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
            veil_measure(&snp),
            "SNP, {cpus} vCPUs"
        );
        let tdx = ["--platform", "tdx", "--igvm", igvm, "--cpus", cpus];
        assert_eq!(
            dry_run_digest(&tdx),
            veil_measure(&tdx),
            "TDX, {cpus} vCPUs"
        );
    }
}

#[test]
fn dry_run_json_lists_the_commands_and_agrees() {
    if !ovmf_present() {
        return;
    }
    let host_data = "5a".repeat(32);
    let out = dry_run(
        &[
            &["--json"][..],
            &SNP_OVMF_EPYC,
            &["--policy", "0x30000", "--host-data", &host_data],
        ]
        .concat(),
    );
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
    assert!(finish.contains(&host_data), "{finish}");
}

#[test]
fn dry_run_refuses_what_the_platform_would_refuse() {
    if !ovmf_present() {
        return;
    }
    // ReflectVC (bit 2) is not a feature KVM offers through KVM_SEV_INIT2.
    dry_run_fails(
        &[&SNP_OVMF_EPYC[..], &["--guest-features", "0x5"]].concat(),
        1,
        &["KVM_SEV_INIT2", "EINVAL"],
    );
    // A policy without the must-be-one bit 17.
    dry_run_fails(
        &[&SNP_OVMF_EPYC[..], &["--policy", "0x10000"]].concat(),
        1,
        &["SNP_LAUNCH_START"],
    );
    // TD attributes the modelled TDX module does not support.
    dry_run_fails(
        &[
            "--platform",
            "tdx",
            "--firmware",
            OVMF,
            "--tdx-attributes",
            "0x10000000000",
        ],
        1,
        &["TD attributes"],
    );
}

#[test]
fn dry_run_needs_a_confidential_platform_and_well_formed_values() {
    dry_run_fails(&["--firmware", OVMF], 2, &["--platform sev-snp"]);
    dry_run_fails(
        &["--platform", "tdx", "--firmware", OVMF, "--mrowner", "abcd"],
        1,
        &["--mrowner must be 96 hex digits"],
    );
    dry_run_fails(
        &[
            "--platform",
            "sev-snp",
            "--firmware",
            "/nonexistent/OVMF.fd",
            "--cpu-type",
            "EPYC",
        ],
        1,
        &["/nonexistent/OVMF.fd"],
    );
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
    let base = snp(OVMF, "2", "EPYC-Genoa");
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
            utf8(&key),
            "--out-dir",
            utf8(&out_dir),
        ]);
        out.expect_status(0);
    }
    let with_block = |name: &str| {
        let block = dir.join(name).join("id_block.bin");
        let auth = dir.join(name).join("id_auth.bin");
        let flags = ["--id-block", utf8(&block), "--id-auth", utf8(&auth)];
        dry_run(&[&base[..], &flags].concat())
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
    let image = veil_tests::ovmf_image::with_kernel_hashes();
    let path = |name: &str| utf8(&dir.join(name)).to_string();
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
        let files = [
            "--kernel",
            &kernel,
            "--initramfs",
            &initrd,
            "--cmdline",
            cmdline,
        ];
        let dry = dry_run_digest(&[&snp(&ovmf, cpus, "EPYC-Milan")[..], &files].concat());
        let expected = sev_snp_measure(&[
            "--vcpus",
            cpus,
            "--vcpu-type",
            "EPYC-Milan",
            "--ovmf",
            &ovmf,
            "--kernel",
            &kernel,
            "--initrd",
            &initrd,
            "--append",
            cmdline,
        ]);
        assert_eq!(dry, expected, "{cpus} vCPUs");
    }
}

#[test]
fn platform_specific_flags_are_refused_on_the_other_platform() {
    dry_run_fails(
        &[
            "--platform",
            "tdx",
            "--firmware",
            OVMF,
            "--policy",
            "0x30000",
        ],
        2,
        &["--tdx-attributes"],
    );
    dry_run_fails(
        &[&SNP_OVMF_EPYC[..], &["--tdx-xfam", "0x7"]].concat(),
        2,
        &["--platform tdx"],
    );
}
