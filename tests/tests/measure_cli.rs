//! `veil measure` as a user meets it: plain guests, JSON output and bad payloads.

use std::process::Command;

use veil_tests::{OVMF, ovmf_present, utf8, veil_fails, veil_measure};

fn bzimage() -> Vec<u8> {
    let mut k = vec![0u8; 0x6000];
    k[0x1f1] = 3;
    k[0x201] = 0x6a;
    k[0x202..0x206].copy_from_slice(b"HdrS");
    k[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
    k[0x22c..0x230].copy_from_slice(&0x37ff_ffffu32.to_le_bytes());
    k[0x238..0x23c].copy_from_slice(&2047u32.to_le_bytes());
    k
}

#[test]
fn plain_direct_boot_digest_is_reproducible_and_depends_on_every_input() {
    let dir = veil_tests::scratch_dir("measure-plain");
    let kernel = dir.join("bzImage");
    let initrd = dir.join("initrd");
    std::fs::write(&kernel, bzimage()).unwrap();
    std::fs::write(&initrd, vec![3u8; 50_000]).unwrap();
    let (k, i) = (utf8(&kernel), utf8(&initrd));
    let base = ["--platform", "none", "--kernel", k, "--initramfs", i];
    let run = |extra: &[&str]| veil_measure(&[&base[..], extra].concat());
    let d1 = run(&["--cmdline", "console=ttyS0"]);
    assert_eq!(d1.len(), 96);
    assert_eq!(d1, run(&["--cmdline", "console=ttyS0"]));
    assert_ne!(d1, run(&["--cmdline", "console=hvc0"]));
    assert_ne!(d1, run(&["--cmdline", "console=ttyS0", "--memory", "1G"]));
    assert_ne!(d1, run(&["--cmdline", "console=ttyS0", "--cpus", "2"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn json_output_lists_inputs_with_their_hashes() {
    if !ovmf_present() {
        return;
    }
    let args = ["--firmware", OVMF, "--cpu-type", "EPYC", "--cpus", "2"];
    let out = veil_measure(&[&args[..], &["--json"]].concat());
    let plain = veil_measure(&args);
    assert!(out.contains(&format!("\"digest\": \"{plain}\"")), "{out}");
    assert!(
        out.contains("\"role\": \"firmware\"") && out.contains("\"sha384\""),
        "{out}"
    );
    assert!(out.contains("\"cpu_signature\": \"0x800f12\""), "{out}");
}

#[test]
fn payloads_without_what_the_platform_needs_are_clear_errors() {
    let dir = veil_tests::scratch_dir("measure-bad");
    let not_ovmf = dir.join("blank.fd");
    std::fs::write(&not_ovmf, vec![0u8; 0x10000]).unwrap();
    let p = utf8(&not_ovmf);
    for platform in ["sev-snp", "tdx"] {
        veil_fails(
            &[
                "measure",
                "--platform",
                platform,
                "--firmware",
                p,
                "--cpu-type",
                "EPYC",
            ],
            1,
            &["blank.fd", "footer GUID table"],
        );
    }
    let odd = dir.join("odd.fd");
    std::fs::write(&odd, vec![0u8; 1000]).unwrap();
    veil_fails(
        &["measure", "--firmware", utf8(&odd), "--cpu-type", "EPYC"],
        1,
        &["odd.fd", "multiple of 4 KiB"],
    );
    veil_fails(&["measure", "--firmware", p], 1, &["--cpu-type"]);
    veil_fails(
        &[
            "measure",
            "--firmware",
            "/no/such/file.fd",
            "--cpu-type",
            "EPYC",
        ],
        1,
        &["/no/such/file.fd"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tdx_trace_shows_page_add_then_mr_extend_per_page_and_ends_at_mrtd() {
    if !ovmf_present() {
        return;
    }
    let out = Command::new(veil_tests::bin("veil"))
        .args([
            "measure",
            "--platform",
            "tdx",
            "--firmware",
            OVMF,
            "--trace",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mrtd = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let trace = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = trace.lines().collect();
    // Debian's TDVF: BFV 480 measured pages, CFV 32 unmeasured, TEMP_MEM 24 and TD_HOB 2 pages.
    let adds = lines.iter().filter(|l| l.contains("page.add")).count();
    let extends = lines.iter().filter(|l| l.contains("mr.extend")).count();
    assert_eq!((adds, extends), (538, 480));
    // Upstream KVM order: each measured page's MR.EXTEND directly follows its PAGE.ADD.
    assert!(lines[0].contains("page.add") && lines[1].contains("mr.extend"));
    let gpa = |l: &str| l.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(gpa(lines[0]), gpa(lines[1]));
    assert!(lines.last().unwrap().ends_with(&mrtd));
}
