//! `veil-jailer` runs a program in a jail: the program sees only the jail's files, runs as the
//! given uid/gid, sits in the given cgroups with their limits, has the given rlimits, and keeps no
//! inherited descriptors. The program is `jail_probe`, which reports what it sees.

mod jailer_common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::{Command, Stdio};

use jailer_common::{Case, PROBE, host_has, report, report_of, start_waiting};
use veil_tests::assert_success;

#[test]
fn jailed_probe_sees_only_its_jail_as_the_given_user() {
    let Some(case) = Case::new("jailed_probe_sees_only_its_jail_as_the_given_user") else {
        return;
    };
    let secret = case.scratch.join("host-secret");
    std::fs::write(&secret, "not for the jail").unwrap();
    assert!(Path::new("/etc/passwd").exists());

    // The shell leaves descriptor 7 open (no close-on-exec) across the exec into the jailer.
    let jailer = case.jailer(Path::new(PROBE), 12345, 23456);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("exec 7</etc/passwd; exec \"$@\"")
        .arg("sh")
        .arg(jailer.get_program())
        .args(jailer.get_args())
        .arg("--")
        .arg("--check")
        .arg(&secret)
        .args(["--check", "/etc/passwd", "--check", "/dev/kvm"]);
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "jailer failed: {stderr}");
    let r = report(&String::from_utf8_lossy(&out.stdout));

    assert_eq!(r["uid"], "12345 euid=12345");
    assert_eq!(r["gid"], "23456 egid=23456");
    assert_eq!(r["groups"], "[]");
    assert_eq!(r["cwd"], "/");
    let mut files = vec!["/dev", "/dev/kvm", "/dev/net", "/dev/net/tun"];
    if host_has("sev") {
        files.push("/dev/sev");
    }
    files.extend(["/dev/urandom", "/jail_probe"]);
    assert_eq!(r["files"], files.join(","), "the jail holds only these");
    assert_eq!(r[&format!("exists:{}", secret.display())], "false");
    assert_eq!(r["exists:/etc/passwd"], "false");
    assert_eq!(r["exists:/dev/kvm"], "true");
    assert_eq!(
        r["fds"], "[0, 1, 2]",
        "inherited descriptor 7 must be closed"
    );
    assert_eq!(r["rlimit:nofile"], "2048 2048", "the default no-file limit");

    // Host side: the device nodes are the host's, owned by the jailed uid/gid, mode 0600.
    let root = case.root("jail_probe");
    for node in ["kvm", "net/tun", "urandom"] {
        let m = std::fs::symlink_metadata(root.join("dev").join(node)).unwrap();
        let host = std::fs::metadata(Path::new("/dev").join(node)).unwrap();
        assert!(m.file_type().is_char_device(), "{node}");
        assert_eq!(m.rdev(), host.rdev(), "{node}");
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (12345, 23456, 0o600));
    }
    let m = std::fs::metadata(&root).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (12345, 23456),
        "the jail root belongs to the jailed user"
    );
    let m = std::fs::metadata(root.join("jail_probe")).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (0, 0o555));
}

#[test]
fn jailed_probe_sits_in_its_v1_cgroups_with_the_limits_applied() {
    let Some(case) = Case::new("jailed_probe_sits_in_its_v1_cgroups_with_the_limits_applied")
    else {
        return;
    };
    let (mut child, text) = start_waiting(
        case.jailer(Path::new(PROBE), 1000, 1000)
            .args(["--cgroup", "pids.max=3", "--cgroup", "cpu.shares=256"])
            .args([
                "--resource-limit",
                "no-file=64",
                "--resource-limit",
                "fsize=1048576",
            ])
            .args(["--", "--forks", "10", "--wait"]),
        "forks=",
    );
    let r = report(&text);
    // Exec in place: the jailed program has the jailer's pid; look at it from the host.
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());

    let want = format!("/{}/{}", case.parent_cgroup, case.id);
    for ctrl in ["pids", "cpu"] {
        let line = cgroups.lines().find(|l| {
            l.split(':')
                .nth(1)
                .is_some_and(|c| c.split(',').any(|x| x == ctrl))
        });
        assert_eq!(
            line.and_then(|l| l.split(':').nth(2)),
            Some(want.as_str()),
            "{ctrl} cgroup in:\n{cgroups}"
        );
    }
    // pids.max=3: the probe itself and two children; the third fork is refused.
    assert_eq!(r["forks"], "2", "{text}");
    assert_eq!(r["rlimit:nofile"], "64 64");
    assert_eq!(r["rlimit:fsize"], "1048576 1048576");
}

#[test]
fn cgroup_limits_are_written_where_the_process_sits() {
    let Some(case) = Case::new("cgroup_limits_are_written_where_the_process_sits") else {
        return;
    };
    let (mut child, first) = start_waiting(
        case.jailer(Path::new(PROBE), 1000, 1000)
            .args([
                "--cgroup",
                "pids.max=7",
                "--cgroup",
                "cpu.cfs_quota_us=50000",
            ])
            .args(["--cgroup", "cpuset.cpus=0"])
            .args(["--", "--wait"]),
        "",
    );
    assert!(first.starts_with("uid="), "{first}");
    let dir = |ctrl: &str| {
        Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join(&case.parent_cgroup)
            .join(&case.id)
    };
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).unwrap().trim().to_string();
    assert_eq!(read(dir("pids").join("pids.max")), "7");
    assert_eq!(read(dir("cpu").join("cpu.cfs_quota_us")), "50000");
    let procs = read(dir("pids").join("cgroup.procs"));
    assert_eq!(procs, child.id().to_string());
    // cpuset: the memory nodes were inherited from the parent (a cpuset without them takes no
    // task), and the CPU limit is in force.
    assert_eq!(read(dir("cpuset").join("cpuset.cpus")), "0");
    assert_eq!(
        read(dir("cpuset").join("cpuset.mems")),
        read(Path::new("/sys/fs/cgroup/cpuset").join("cpuset.mems"))
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    assert!(
        status.lines().any(|l| l == "Cpus_allowed_list:\t0"),
        "{status}"
    );
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn cgroup_v2_limit_where_the_host_offers_the_controller() {
    let Some(case) = Case::new("cgroup_v2_limit_where_the_host_offers_the_controller") else {
        return;
    };
    let Some(v2) = jailer_common::cgroup_mounts()
        .into_iter()
        .find(|m| std::fs::read_to_string(m.join("cgroup.controllers")).is_ok())
    else {
        eprintln!("skipped: no cgroup2 mount");
        return;
    };
    let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap();
    // On this hybrid host cpu, memory and pids are bound to v1; hugetlb is the v2 controller
    // left. Use whichever of these v2 offers.
    let (key, value) = if controllers.split_whitespace().any(|c| c == "pids") {
        ("pids.max", "9")
    } else if controllers.split_whitespace().any(|c| c == "hugetlb")
        && Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB").exists()
    {
        ("hugetlb.2MB.max", "0")
    } else {
        eprintln!(
            "skipped: cgroup2 at {} offers neither pids nor hugetlb",
            v2.display()
        );
        return;
    };
    let (mut child, _) = start_waiting(
        case.jailer(Path::new(PROBE), 1000, 1000)
            .args([
                "--cgroup-version",
                "2",
                "--cgroup",
                &format!("{key}={value}"),
            ])
            .args(["--", "--wait"])
            .stderr(Stdio::piped()),
        "",
    );
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap();
    drop(child.stdin.take());
    assert_success(&child.wait_with_output().unwrap());
    let want = format!("0::/{}/{}", case.parent_cgroup, case.id);
    assert!(
        cgroups.lines().any(|l| l == want),
        "{want} not in:\n{cgroups}"
    );
    let dir = v2.join(&case.parent_cgroup).join(&case.id);
    assert_eq!(
        std::fs::read_to_string(dir.join(key)).unwrap().trim(),
        value
    );
}

#[test]
fn jailed_probe_joins_the_network_namespace() {
    let Some(case) = Case::new("jailed_probe_joins_the_network_namespace") else {
        return;
    };
    let name = format!("veil-{}", case.id);
    if !Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: `ip netns add` is not available");
        return;
    }
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let netns = Netns(name);
    let r = report_of(
        case.jailer(Path::new(PROBE), 1000, 1000)
            .arg("--netns")
            .arg(Path::new("/var/run/netns").join(&netns.0)),
    );
    // A new network namespace holds only its own loopback device.
    assert_eq!(r["interfaces"], "lo");
}

#[test]
fn new_pid_ns_makes_the_program_pid_1_and_writes_a_pid_file() {
    let Some(case) = Case::new("new_pid_ns_makes_the_program_pid_1_and_writes_a_pid_file") else {
        return;
    };
    let r = report_of(
        case.jailer(Path::new(PROBE), 1000, 1000)
            .arg("--new-pid-ns"),
    );
    assert_eq!(r["pid"], "1");
    let pid_file = case.root("jail_probe").join("jail_probe.pid");
    let host_pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(host_pid > 1);
}

#[test]
fn daemonize_detaches_and_silences_stdio() {
    let Some(case) = Case::new("daemonize_detaches_and_silences_stdio") else {
        return;
    };
    let out = case
        .jailer(Path::new(PROBE), 1000, 1000)
        .args(["--daemonize", "--", "--out", "/report"])
        .output()
        .unwrap();
    assert_success(&out);
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
    let text = std::fs::read_to_string(case.root("jail_probe").join("report")).unwrap();
    let r = report(&text);
    assert_eq!(r["sid"], r["pid"], "a new session led by the program");
    assert_eq!(r["stdio"], "chr1:3,chr1:3,chr1:3", "stdio on /dev/null");
}

#[test]
fn a_v1_memory_limit_stops_the_jailed_program() {
    let Some(mut case) = Case::new("a_v1_memory_limit_stops_the_jailed_program") else {
        return;
    };
    // Nest under this test's own memory cgroup, so the program stays inside whatever limits and
    // accounting the test itself runs under.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let Some(own) = own
        .lines()
        .find(|l| l.split(':').nth(1) == Some("memory"))
        .and_then(|l| l.split(':').nth(2))
        .map(|p| p.trim_start_matches('/').to_string())
    else {
        eprintln!("skipped: no v1 memory controller here");
        return;
    };
    if !own.is_empty() {
        case.parent_cgroup = format!("{own}/{}", case.parent_cgroup);
    }
    let out = case
        .jailer(Path::new(PROBE), 1000, 1000)
        .args(["--cgroup", "memory.limit_in_bytes=32M"])
        .args(["--", "--alloc", "256"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("uid=1000"),
        "the probe did start: {stdout}"
    );
    assert!(
        !stdout.contains("alloc=done"),
        "256 MiB fit in a 32 MiB limit"
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "killed by the OOM killer");
    let oom = std::fs::read_to_string(
        Path::new("/sys/fs/cgroup/memory")
            .join(&case.parent_cgroup)
            .join(&case.id)
            .join("memory.oom_control"),
    )
    .unwrap();
    assert!(oom.contains("oom_kill 1"), "{oom}");
}
