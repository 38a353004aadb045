//! The KVM floor really runs guests: the three-instruction guest and the probe guest reach their
//! debug exit, so the benchmark's baseline measures a real boot.

use std::process::Command;

fn floor(guest: &[u8], name: &str, args: &[&str]) -> std::process::Output {
    let dir = std::env::temp_dir().join(format!("veil-floor-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, guest).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kvm_floor"))
        .arg(&path)
        .args(args)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

#[test]
fn tiny_guest_reaches_first_io_and_exit() {
    let elf = veil_benches::tiny_pvh_elf();
    let out = floor(&elf, "tiny.elf", &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("first port write (port 0x80)"));
    let out = floor(&elf, "tiny.elf", &["--until", "exit"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn probe_guest_passes_under_the_floor() {
    let out = floor(
        veil_vmm::probe_image::PROBE_ELF,
        "probe.elf",
        &["--until", "exit"],
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("PROBE PASS"),
        "{out:?}"
    );
}

#[test]
fn bad_kernel_is_refused_with_a_reason() {
    let out = floor(b"not an elf", "bad.elf", &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a PVH ELF64 kernel: no ELF64 magic"),
        "{err}"
    );
}
