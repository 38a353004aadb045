//! `veil igvm build` round trips: an OVMF wrapped into IGVM measures exactly like the same OVMF
//! launched directly (and, for SEV-SNP, like `sev-snp-measure` computes it); broken IGVM files
//! are refused with an error naming the file and the defect.

use std::path::{Path, PathBuf};
use std::process::Command;

use veil_tests::{OVMF, have_tool, ovmf_present, sev_snp_measure, utf8, veil_fails, veil_measure};

/// `veil igvm build -o dir/name <extra>`; returns the file's path.
fn build(dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = dir.join(name);
    let args = [&["igvm", "build", "-o", utf8(&out)][..], extra].concat();
    let run = veil_tests::veil(&args);
    assert_eq!(run.status, Some(0), "veil {args:?} failed: {run:#?}");
    out
}

#[test]
fn igvm_round_trip_snp_equals_direct_ovmf_and_agrees_with_sev_snp_measure() {
    if !ovmf_present() {
        return;
    }
    let dir = veil_tests::scratch_dir("igvm-snp");
    for cpu in ["EPYC", "EPYC-Milan", "EPYC-Genoa"] {
        let f = build(
            &dir,
            &format!("ovmf-{cpu}.igvm"),
            &[
                "--firmware",
                OVMF,
                "--platform",
                "sev-snp",
                "--cpu-type",
                cpu,
            ],
        );
        let f = utf8(&f);
        for vcpus in ["1", "4"] {
            let common = ["--platform", "sev-snp", "--cpu-type", cpu, "--cpus", vcpus];
            let via_igvm = veil_measure(&[&["--igvm", f][..], &common].concat());
            let direct = veil_measure(&[&["--firmware", OVMF][..], &common].concat());
            assert_eq!(via_igvm, direct, "cpu type {cpu}, {vcpus} vCPUs");
            if have_tool("sev-snp-measure") {
                let oracle =
                    sev_snp_measure(&["--vcpus", vcpus, "--vcpu-type", cpu, "--ovmf", OVMF]);
                assert_eq!(oracle, via_igvm, "cpu type {cpu}, {vcpus} vCPUs");
            } else {
                eprintln!("note: sev-snp-measure missing; compared with the direct launch only");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn igvm_round_trip_snp_with_kernel_hashes_equals_direct_and_agrees_with_sev_snp_measure() {
    let dir = veil_tests::scratch_dir("igvm-snp-hashes");
    let ovmf = dir.join("OVMF-hashes.fd");
    std::fs::write(
        &ovmf,
        veil_tests::ovmf_image::build(
            0x40000,
            &[
                (0x80_0000, 0x9000, 1),
                (0x80_9000, 0x1000, 2),
                (0x80_a000, 0x1000, 3),
                (0x80_b000, 0x1000, 0x10),
            ],
            0xfffc_b004,
            Some(0x80_b000),
        ),
    )
    .unwrap();
    let kernel = dir.join("vmlinuz");
    std::fs::write(&kernel, vec![0x5a; 12345]).unwrap();
    let (o, k) = (utf8(&ovmf), utf8(&kernel));
    let common = [
        "--cpu-type",
        "EPYC-Milan",
        "--kernel",
        k,
        "--cmdline",
        "quiet",
    ];
    let b = [&["--firmware", o, "--platform", "sev-snp"][..], &common].concat();
    let f = build(&dir, "hashes.igvm", &b);
    let via_igvm = veil_measure(&["--igvm", utf8(&f), "--cpu-type", "EPYC-Milan"]);
    assert_eq!(
        via_igvm,
        veil_measure(&[&["--firmware", o][..], &common].concat())
    );
    if have_tool("sev-snp-measure") {
        let oracle = sev_snp_measure(&[
            "--vcpus",
            "1",
            "--vcpu-type",
            "EPYC-Milan",
            "--ovmf",
            o,
            "--kernel",
            k,
            "--append",
            "quiet",
        ]);
        assert_eq!(oracle, via_igvm);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn igvm_round_trip_tdx_mrtd_and_plain_digest_equal_direct_ovmf() {
    if !ovmf_present() {
        return;
    }
    let dir = veil_tests::scratch_dir("igvm-tdx");
    let f = build(
        &dir,
        "multi.igvm",
        &[
            "--firmware",
            OVMF,
            "--platform",
            "tdx,sev-snp,none",
            "--cpu-type",
            "EPYC",
        ],
    );
    let f = utf8(&f);
    // The file and the firmware it wraps, with the same flags.
    let both = |flags: &[&str]| {
        (
            veil_measure(&[&["--igvm", f][..], flags].concat()),
            veil_measure(&[&["--firmware", OVMF][..], flags].concat()),
        )
    };
    for cpus in ["1", "4"] {
        let (via, direct) = both(&["--platform", "tdx", "--cpus", cpus]);
        assert_eq!(via, direct, "TDX MRTD, {cpus} vCPUs");
        assert_eq!(via.len(), 96);
    }
    let (via, direct) = both(&["--platform", "none"]);
    assert_eq!(via, direct);
    let (via, direct) = both(&["--platform", "sev-snp", "--cpu-type", "EPYC"]);
    assert_eq!(via, direct);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn broken_igvm_files_are_refused_naming_file_and_defect() {
    if !ovmf_present() {
        return;
    }
    let dir = veil_tests::scratch_dir("igvm-bad");
    let good = build(&dir, "tdx.igvm", &["--firmware", OVMF, "--platform", "tdx"]);
    let bytes = std::fs::read(&good).unwrap();
    let case = |name: &str, data: &[u8], platform: &str, expect: &str| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        let out = veil_fails(
            &[
                "measure",
                "--igvm",
                utf8(&p),
                "--platform",
                platform,
                "--cpu-type",
                "EPYC",
            ],
            1,
            &[name, expect],
        );
        assert!(!out.stderr.contains("panicked"), "{name}: {out:#?}");
    };
    case(
        "truncated.igvm",
        &bytes[..bytes.len() / 3],
        "tdx",
        "fixed header",
    );
    let mut crc = bytes.clone();
    crc[64] ^= 0x01;
    case("crc.igvm", &crc, "tdx", "checksum");
    let mut past_end = bytes.clone();
    past_end[12..16].copy_from_slice(&0x7fff_0000u32.to_le_bytes()); // variable header size
    case(
        "past-end.igvm",
        &past_end,
        "tdx",
        "run past the end of the file",
    );
    case(
        "wrong-platform.igvm",
        &bytes,
        "sev-snp",
        "does not support platform sev-snp",
    );
    case("empty.igvm", &[], "tdx", "fixed header");
    // An unknown required directive, with a correct checksum so the parser gets to it.
    let mut unknown = bytes.clone();
    let off = u32::from_le_bytes(unknown[8..12].try_into().unwrap()) as usize;
    let size = u32::from_le_bytes(unknown[12..16].try_into().unwrap()) as usize;
    let mut at = off;
    while u32::from_le_bytes(unknown[at..at + 4].try_into().unwrap()) != 0x302 {
        let len = u32::from_le_bytes(unknown[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + len.div_ceil(8) * 8;
    }
    unknown[at..at + 4].copy_from_slice(&0x3feu32.to_le_bytes());
    unknown[20..24].fill(0);
    let mut covered = unknown[..24].to_vec();
    covered.extend_from_slice(&unknown[off..off + size]);
    let crc = crc32(&covered);
    unknown[20..24].copy_from_slice(&crc.to_le_bytes());
    case(
        "unknown-header.igvm",
        &unknown,
        "tdx",
        "unknown required header",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// CRC-32 (IEEE), as the IGVM fixed header's checksum uses.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn igvm_build_embeds_a_signed_id_block_for_its_own_snp_digest() {
    if !ovmf_present() || !have_tool("openssl") {
        eprintln!("skipped: needs {OVMF} and openssl (to make keys)");
        return;
    }
    let dir = veil_tests::scratch_dir("igvm-id-block");
    let (id_key, author_key) = (dir.join("id.pem"), dir.join("author.pem"));
    for k in [&id_key, &author_key] {
        let st = Command::new("openssl")
            .args(["ecparam", "-genkey", "-name", "secp384r1", "-noout", "-out"])
            .arg(k)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let f = build(
        &dir,
        "signed.igvm",
        &[
            "--firmware",
            OVMF,
            "--platform",
            "sev-snp",
            "--cpu-type",
            "EPYC-Milan",
            "--cpus",
            "2",
            "--id-key",
            utf8(&id_key),
            "--author-key",
            utf8(&author_key),
        ],
    );
    let digest = veil_measure(&[
        "--igvm",
        utf8(&f),
        "--cpu-type",
        "EPYC-Milan",
        "--cpus",
        "2",
    ]);
    let bytes = std::fs::read(&f).unwrap();
    let config = veil_firmware::VmConfig {
        platform: veil_firmware::Platform::SevSnp,
        cpus: 2,
        memory: 512 << 20,
        cpu_signature: 0x00a0_0f11,
        sev_features: 1,
        policy: None,
        host_data: [0; 32],
        cmdline: None,
    };
    let plan = veil_firmware::igvm::load(&bytes, &config).unwrap();
    let pair = plan.id_block.expect("the file carries an ID block");
    assert!(pair.author_key_enabled);
    let hex: String = pair.id_block[..48]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        hex, digest,
        "the ID block signs the launch digest of the file itself"
    );
    assert_eq!(&pair.id_block[0x58..0x60], &0x30000u64.to_le_bytes());
    veil_firmware::id_block::verify(&pair.id_block, &pair.id_auth).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
