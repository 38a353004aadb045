//! `veil-jailer` refuses bad input with a message naming it, and a failure at any step leaves
//! nothing behind: no jail directory, no chroot base it made, no cgroup.

mod jailer_common;

use std::path::Path;
use std::process::{Command, Output};

use jailer_common::{Case, PROBE};

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stderr)
}

fn assert_failed(out: &Output, stderr: &str, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{n:?} not in: {stderr}");
    }
}

#[test]
fn bad_ids_are_refused_before_anything_is_made() {
    let long = "x".repeat(65);
    for (id, needle) in [
        ("../x", "'.'"),
        ("", "empty"),
        (long.as_str(), "65 characters"),
        ("a/b", "'/'"),
    ] {
        let Some(case) = Case::new("bad_ids_are_refused_before_anything_is_made") else {
            return;
        };
        let mut cmd = Command::new(veil_tests::bin("veil-jailer"));
        cmd.args(["--id", id, "--exec-file", PROBE, "--uid", "1", "--gid", "1"])
            .arg("--chroot-base-dir")
            .arg(&case.base)
            .args([
                "--cgroup",
                "pids.max=4",
                "--parent-cgroup",
                &case.parent_cgroup,
            ]);
        let (out, stderr) = run(&mut cmd);
        assert_failed(&out, &stderr, &["--id", needle]);
        case.assert_nothing_left();
    }
}

#[test]
fn a_missing_exec_file_is_named() {
    let Some(case) = Case::new("a_missing_exec_file_is_named") else {
        return;
    };
    let missing = case.scratch.join("no-such-veil");
    let (out, stderr) = run(&mut case.jailer(&missing, 1000, 1000));
    assert_failed(
        &out,
        &stderr,
        &["--exec-file", &missing.display().to_string()],
    );
    case.assert_nothing_left();
}

#[test]
fn a_dynamically_linked_exec_file_is_refused() {
    let Some(case) = Case::new("a_dynamically_linked_exec_file_is_refused") else {
        return;
    };
    // The jailer itself is dynamically linked on the gnu target.
    let exec = veil_tests::bin("veil-jailer");
    let (out, stderr) = run(&mut case.jailer(&exec, 1000, 1000));
    assert_failed(&out, &stderr, &["dynamically linked", "statically"]);
    case.assert_nothing_left();
}

#[test]
fn an_existing_jail_directory_is_refused_and_left_alone() {
    let Some(case) = Case::new("an_existing_jail_directory_is_refused_and_left_alone") else {
        return;
    };
    let existing = case.base.join("jail_probe").join(&case.id);
    std::fs::create_dir_all(existing.join("root")).unwrap();
    std::fs::write(existing.join("root/keep"), "mine").unwrap();
    let (out, stderr) = run(case
        .jailer(Path::new(PROBE), 1000, 1000)
        .args(["--cgroup", "pids.max=4"]));
    assert_failed(
        &out,
        &stderr,
        &["already exists", &existing.display().to_string()],
    );
    assert_eq!(
        std::fs::read_to_string(existing.join("root/keep")).unwrap(),
        "mine"
    );
    assert_eq!(jailer_common::walk(&existing).len(), 2, "nothing added");
    for p in case.cgroup_parents() {
        assert!(!p.exists(), "cgroup {} was made", p.display());
    }
}

#[test]
fn unknown_or_malformed_cgroup_keys_are_refused() {
    for (args, needles) in [
        (
            vec!["--cgroup", "pids.maximum=3"],
            vec!["\"pids.maximum\"", "not a known cgroup v1 key", "pids.max"],
        ),
        (vec!["--cgroup", "pids.max"], vec!["KEY=VALUE"]),
        (
            vec!["--cgroup", "memory.max=1G"],
            vec!["memory.max", "--cgroup-version 2"],
        ),
        (
            vec!["--cgroup-version", "2", "--cgroup", "cpu.shares=10"],
            vec!["not a known cgroup v2 key"],
        ),
        (
            vec!["--resource-limit", "stack=1"],
            vec!["\"stack\"", "fsize, no-file"],
        ),
        (
            vec!["--resource-limit", "no-file=99999999999"],
            vec!["no-file=99999999999", "fs.nr_open"],
        ),
    ] {
        let Some(case) = Case::new("unknown_or_malformed_cgroup_keys_are_refused") else {
            return;
        };
        let (out, stderr) = run(case.jailer(Path::new(PROBE), 1000, 1000).args(&args));
        assert_failed(&out, &stderr, &needles);
        case.assert_nothing_left();
    }
}

#[test]
fn a_v2_controller_the_host_binds_to_v1_is_reported() {
    let Some(case) = Case::new("a_v2_controller_the_host_binds_to_v1_is_reported") else {
        return;
    };
    let v2 = jailer_common::cgroup_mounts()
        .into_iter()
        .find(|m| m.join("cgroup.controllers").exists());
    let offers_pids = v2.as_ref().is_some_and(|m| {
        std::fs::read_to_string(m.join("cgroup.controllers"))
            .unwrap()
            .split_whitespace()
            .any(|c| c == "pids")
    });
    if offers_pids {
        eprintln!("skipped: cgroup2 here offers pids; nothing to refuse");
        return;
    }
    let (out, stderr) = run(case.jailer(Path::new(PROBE), 1000, 1000).args([
        "--cgroup-version",
        "2",
        "--cgroup",
        "pids.max=4",
    ]));
    assert_failed(&out, &stderr, &["\"pids\"", "cgroup v2"]);
    case.assert_nothing_left();
}

#[test]
fn a_limit_the_kernel_rejects_undoes_everything_made_before_it() {
    let Some(case) = Case::new("a_limit_the_kernel_rejects_undoes_everything_made_before_it")
    else {
        return;
    };
    // By then the jail directory, the device nodes and the cpu cgroup (joined, limit set) exist;
    // pids.max=lots fails in the kernel.
    let (out, stderr) = run(case.jailer(Path::new(PROBE), 1000, 1000).args([
        "--cgroup",
        "cpu.shares=256",
        "--cgroup",
        "pids.max=lots",
    ]));
    let file = Path::new("/sys/fs/cgroup/pids")
        .join(&case.parent_cgroup)
        .join(&case.id)
        .join("pids.max");
    assert_failed(
        &out,
        &stderr,
        &["cgroups", &file.display().to_string(), "\"lots\""],
    );
    assert!(!stderr.contains("cleanup:"), "cleanup failed: {stderr}");
    case.assert_nothing_left();
}

#[test]
fn a_missing_network_namespace_is_named() {
    let Some(case) = Case::new("a_missing_network_namespace_is_named") else {
        return;
    };
    let ns = case.scratch.join("no-such-netns");
    let (out, stderr) = run(case
        .jailer(Path::new(PROBE), 1000, 1000)
        .arg("--netns")
        .arg(&ns));
    assert_failed(
        &out,
        &stderr,
        &["network namespace", &ns.display().to_string()],
    );
    case.assert_nothing_left();
}

#[test]
fn a_file_that_is_not_a_network_namespace_is_refused_after_nothing_was_made() {
    let Some(case) = Case::new("a_file_that_is_not_a_network_namespace") else {
        return;
    };
    let (out, stderr) = run(case.jailer(Path::new(PROBE), 1000, 1000).args([
        "--netns",
        "/etc/passwd",
        "--cgroup",
        "pids.max=4",
    ]));
    assert_failed(&out, &stderr, &["joining network namespace /etc/passwd"]);
    case.assert_nothing_left();
}

#[test]
fn daemonize_as_a_process_group_leader_fails_before_anything_is_made() {
    use std::os::unix::process::CommandExt;
    let Some(case) = Case::new("daemonize_as_a_process_group_leader") else {
        return;
    };
    let (out, stderr) = run(case
        .jailer(Path::new(PROBE), 1000, 1000)
        .args(["--daemonize", "--cgroup", "pids.max=4"])
        .process_group(0));
    assert_failed(&out, &stderr, &["setsid", "process group"]);
    case.assert_nothing_left();
}
