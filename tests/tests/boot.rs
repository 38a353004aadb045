//! The probe guest boots through both protocols and from both image formats.

use veil_tests::{Output, run_kernel, temp_dir, utf8, veil, write_file};
use veil_vmm::probe_image::{PROBE_BZIMAGE, PROBE_ELF};

fn passed(out: &Output, boot: &str) {
    out.expect_status(0);
    assert!(out.stdout.contains("PROBE ok boot"), "{out:#?}");
    assert_eq!(out.probe_info("boot").as_deref(), Some(boot), "{out:#?}");
    assert!(out.stdout.trim_end().ends_with("PROBE PASS"), "{out:#?}");
}

#[test]
fn embedded_probe_boots_via_pvh_by_default_and_times_its_boot() {
    let out = veil(&["run", "--boot-timer"]);
    passed(&out, "pvh");
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("boot timer"))
        .unwrap_or_else(|| panic!("no boot timer line: {out:#?}"));
    let ms: f64 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"));
    assert!(ms > 0.0, "{line}");
}

/// Runs `veil run` on `image`, written to a fresh file `name`, with `flags`.
fn boot(name: &str, image: &[u8], flags: &[&str]) -> Output {
    let dir = temp_dir(name);
    run_kernel(&write_file(&dir, name, image), flags)
}

#[test]
fn elf_boots_via_the_linux_protocol() {
    passed(&boot("probe.elf", PROBE_ELF, &["--boot", "linux"]), "linux");
}

#[test]
fn elf_file_boots_via_pvh() {
    passed(&boot("probe.elf", PROBE_ELF, &["--boot", "pvh"]), "pvh");
}

#[test]
fn bzimage_boots_via_the_linux_protocol() {
    passed(&boot("probe.bzImage", PROBE_BZIMAGE, &[]), "linux");
}

#[test]
fn initramfs_is_accepted_by_both_protocols() {
    let dir = temp_dir("initramfs");
    let k = write_file(&dir, "probe.elf", PROBE_ELF);
    let rd = write_file(&dir, "initrd", &[0x5a; 10_000]);
    for boot in ["pvh", "linux"] {
        let out = run_kernel(&k, &["--initramfs", utf8(&rd), "--boot", boot]);
        passed(&out, boot);
    }
}
