//! Bad input gets a message naming the input, and status 2 (usage) or 1 (run-time failure).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use veil_tests::{Output, bin, run_kernel, run_with_limit, temp_dir, utf8, veil, write_file};
use veil_vmm::probe_image::PROBE_ELF;

/// Asserts `out` failed with `status` and that stderr mentions every word in `words`.
fn fails_with(out: &Output, status: i32, words: &[&str]) {
    out.expect_status(status);
    for w in words {
        assert!(out.stderr.contains(w), "stderr lacks {w:?}: {out:#?}");
    }
    assert!(out.stdout.is_empty(), "no guest output expected: {out:#?}");
}

#[test]
fn kernel_missing() {
    let out = veil(&["run", "--kernel", "/no/such/vmlinux"]);
    fails_with(&out, 1, &["kernel /no/such/vmlinux", "No such file"]);
}

#[test]
fn kernel_unreadable() {
    // A directory opens but cannot be read as a file (root ignores permission bits).
    let dir = temp_dir("unreadable");
    let out = veil(&["run", "--kernel", utf8(&dir)]);
    fails_with(
        &out,
        1,
        &[&format!("kernel {}", dir.display()), "directory"],
    );
}

#[test]
fn kernel_not_elf_or_bzimage() {
    let dir = temp_dir("notkernel");
    let k = write_file(&dir, "notes.txt", &b"just some text\n".repeat(100));
    let out = veil(&["run", "--kernel", utf8(&k)]);
    fails_with(&out, 1, &["notes.txt", "not an ELF or bzImage"]);
}

#[test]
fn kernel_truncated() {
    let dir = temp_dir("truncated");
    let tiny = write_file(&dir, "tiny", b"\x7fEL");
    let out = veil(&["run", "--kernel", utf8(&tiny)]);
    fails_with(&out, 1, &["tiny", "truncated"]);
    // A real ELF cut after its headers: the segments are missing.
    let cut = write_file(&dir, "cut.elf", &PROBE_ELF[..PROBE_ELF.len().min(300)]);
    let out = veil(&["run", "--kernel", utf8(&cut)]);
    fails_with(&out, 1, &["cut.elf", "cannot load", "truncated"]);
}

#[test]
fn kernel_pvh_without_note() {
    let dir = temp_dir("nopvh");
    let bz = write_file(&dir, "probe.bzImage", veil_vmm::probe_image::PROBE_BZIMAGE);
    let out = veil(&["run", "--kernel", utf8(&bz), "--boot", "pvh"]);
    fails_with(&out, 1, &["probe.bzImage", "PVH note"]);
}

#[test]
fn initramfs_that_does_not_fit() {
    let dir = temp_dir("bigrd");
    let k = write_file(&dir, "probe.elf", PROBE_ELF);
    let rd = write_file(&dir, "initrd.img", &vec![0u8; 8 << 20]);
    let out = run_kernel(&k, &["--initramfs", utf8(&rd), "--memory", "8M"]);
    fails_with(&out, 1, &["initramfs", "initrd.img", "do not fit"]);
}

#[test]
fn initramfs_missing() {
    let dir = temp_dir("nord");
    let k = write_file(&dir, "probe.elf", PROBE_ELF);
    let out = veil(&["run", "--kernel", utf8(&k), "--initramfs", "/no/rd"]);
    fails_with(&out, 1, &["initramfs /no/rd", "No such file"]);
}

#[test]
fn serial_file_that_cannot_be_created() {
    let out = veil(&["run", "--serial", "file=/no/such/dir/console.log"]);
    fails_with(
        &out,
        1,
        &["--serial file=/no/such/dir/console.log", "No such file"],
    );
}

#[test]
fn memory_zero_unparsable_or_beyond_the_host() {
    fails_with(&veil(&["run", "--memory", "0"]), 2, &["--memory", "got 0"]);
    fails_with(
        &veil(&["run", "--memory", "lots"]),
        2,
        &["--memory", "lots"],
    );
    fails_with(
        &veil(&["run", "--memory", "1.5G"]),
        2,
        &["--memory", "1.5G"],
    );
    fails_with(
        &veil(&["run", "--memory", "1000T"]),
        2,
        &["--memory", "host"],
    );
}

#[test]
fn cpus_zero_or_too_many() {
    fails_with(
        &veil(&["run", "--cpus", "0"]),
        2,
        &["--cpus", "at least one"],
    );
    fails_with(
        &veil(&["run", "--cpus", "100000"]),
        2,
        &["--cpus 100000", "at most"],
    );
    fails_with(&veil(&["run", "--cpus", "two"]), 2, &["--cpus", "two"]);
}

#[test]
fn unknown_flags_and_values() {
    fails_with(&veil(&["run", "--bogus"]), 2, &["--bogus"]);
    fails_with(&veil(&["run", "--boot", "efi"]), 2, &["--boot", "efi"]);
    fails_with(&veil(&["run", "--serial", "tcp"]), 2, &["--serial", "tcp"]);
    fails_with(&veil(&["run", "--initramfs", "/x"]), 2, &["--kernel"]);
}

/// Runs `veil run` in a private mount namespace after `setup` (shell) changed /dev/kvm there,
/// as `user` if given. Returns None (the test is skipped, with the reason printed) where this
/// machine cannot make such a namespace.
fn veil_with_kvm_changed(setup: &str, user: Option<&str>, veil: &Path) -> Option<Output> {
    let works = |args: &[&str]| {
        Command::new(args[0])
            .args(&args[1..])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !works(&["unshare", "--mount", "--propagation", "private", "true"]) {
        eprintln!("skipped: cannot create a mount namespace here (`unshare --mount` failed)");
        return None;
    }
    if user.is_some()
        && !works(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "true",
        ])
    {
        eprintln!("skipped: cannot drop to an unprivileged user here (`setpriv` failed)");
        return None;
    }
    let run = match user {
        Some(u) => format!(
            "exec setpriv --reuid={u} --regid={u} --clear-groups {} run",
            veil.display()
        ),
        None => format!("exec {} run", veil.display()),
    };
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(format!("{setup}\n{run}"));
    Some(run_with_limit(cmd, Duration::from_secs(30)))
}

#[test]
fn dev_kvm_missing() {
    // An empty /dev in this namespace only.
    if let Some(out) = veil_with_kvm_changed("mount -t tmpfs none /dev", None, &bin("veil")) {
        fails_with(&out, 1, &["/dev/kvm", "does not exist"]);
    }
}

#[test]
fn dev_kvm_not_permitted() {
    let dir = temp_dir("kvmperm");
    std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // A copy the unprivileged user can reach whatever the permissions on the target directory.
    let veil = dir.join("veil");
    std::fs::copy(bin("veil"), &veil).unwrap();
    // A /dev/kvm node that only root may open, seen by an unprivileged user.
    let setup = format!(
        "mknod {d}/kvm c 10 232 && chmod 600 {d}/kvm && mount --bind {d}/kvm /dev/kvm",
        d = dir.display()
    );
    if let Some(out) = veil_with_kvm_changed(&setup, Some("65534"), &veil) {
        fails_with(&out, 1, &["/dev/kvm", "permission denied"]);
    }
}
