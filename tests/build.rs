//! Builds `jail_probe` as a statically linked executable (the jailer copies only the exec file
//! into a jail, so it must run with no shared libraries) and tells the tests where it is
//! (`env!("JAIL_PROBE")`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "jail_probe/main.rs";
    println!("cargo:rerun-if-changed={src}");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("jail_probe");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "-C",
            "opt-level=1",
            "-C",
            "target-feature=+crt-static",
        ])
        .arg("-o")
        .arg(&out)
        .arg(src)
        .status()
        .expect("running rustc for jail_probe");
    assert!(status.success(), "building jail_probe (static) failed");
    println!("cargo:rustc-env=JAIL_PROBE={}", out.display());
}
