//! A jailed `veil run` boots the probe guest and passes: the jail holds what Veil needs
//! (/dev/kvm, /dev/net/tun, /dev/urandom) and nothing else, and Veil runs there as an ordinary
//! user under a pids limit.
//!
//! The jail holds only the exec file, so Veil must be statically linked: this test builds a
//! static copy (`-C target-feature=+crt-static`, its own target directory) when the plain `veil
//! run` boots the probe guest on this host; until then it is skipped with the reason printed.

mod jailer_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use jailer_common::Case;

const TRIPLE: &str = "x86_64-unknown-linux-gnu";

#[test]
fn jailed_veil_boots_the_probe_guest_and_passes() {
    let Some(case) = Case::new("jailed_veil_boots_the_probe_guest_and_passes") else {
        return;
    };
    let plain = Command::new(veil_tests::bin("veil"))
        .arg("run")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&plain.stdout);
    if !plain.status.success() || !stdout.contains("PROBE PASS") {
        let why = String::from_utf8_lossy(&plain.stderr);
        eprintln!(
            "skipped: `veil run` does not boot the probe guest on this build yet ({})",
            why.lines().next().unwrap_or("no PROBE PASS")
        );
        return;
    }

    let veil = static_veil();
    let out = case
        .jailer(&veil, 1000, 1000)
        .args(["--cgroup", "pids.max=64", "--", "run"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("PROBE PASS"),
        "jailed veil failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

/// Builds `veil` statically linked into `target/jailer-static-veil` and returns its path.
fn static_veil() -> PathBuf {
    let bin_dir = veil_tests::bin_dir();
    let profile = bin_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let target_dir = bin_dir
        .parent()
        .expect("bin dir is target/<profile>")
        .join("jailer-static-veil");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace");
    let mut cmd = Command::new(option_env!("CARGO").unwrap_or("cargo"));
    cmd.current_dir(workspace)
        .args([
            "build", "-p", "veil-vmm", "--bin", "veil", "--target", TRIPLE,
        ])
        .env("CARGO_TARGET_DIR", &target_dir)
        // With --target these flags reach only the target's code, not build scripts or proc
        // macros (which cannot be static); vmm/build.rs keeps them out of the probe guest.
        .env(
            "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
            "-C target-feature=+crt-static",
        )
        .env_remove("RUSTFLAGS");
    if profile == "release" {
        cmd.arg("--release");
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "building a static veil failed");
    let veil = target_dir.join(TRIPLE).join(&profile).join("veil");
    assert!(veil.is_file(), "{} missing", veil.display());
    veil
}
