//! The machine the probe finds: every vCPU (through the MADT / MP table and INIT/SIPI) and the
//! RAM that --memory asked for, below and above the 32-bit MMIO hole.

use veil_tests::{temp_dir, veil, write_file};
use veil_vmm::probe_image::PROBE_BZIMAGE;

/// RAM the e820 map holds back from the guest: the EBDA and the legacy area, 0x9fc00..0x100000.
const RESERVED_LOW: u64 = 0x10_0000 - 0x9_fc00;

fn check(cpus: u32, memory: &str, bytes: u64, extra: &[&str]) {
    let cpus_arg = cpus.to_string();
    let mut args = vec!["run", "--cpus", &cpus_arg, "--memory", memory];
    args.extend_from_slice(extra);
    let out = veil(&args);
    out.expect_status(0);
    assert_eq!(
        out.probe_info("cpus"),
        Some(cpus.to_string()),
        "{args:?}: {out:#?}"
    );
    assert_eq!(
        out.probe_info("ram_bytes"),
        Some((bytes - RESERVED_LOW).to_string()),
        "{args:?}: {out:#?}"
    );
}

#[test]
fn one_vcpu_default_memory() {
    check(1, "256M", 256 << 20, &[]);
}

#[test]
fn two_vcpus_and_ram_above_4_gib_via_the_linux_protocol() {
    let dir = temp_dir("machine-bz");
    let k = write_file(&dir, "probe.bzImage", PROBE_BZIMAGE);
    check(2, "5G", 5 << 30, &["--kernel", k.to_str().unwrap()]);
}

#[test]
fn four_vcpus() {
    check(4, "384M", 384 << 20, &[]);
}
