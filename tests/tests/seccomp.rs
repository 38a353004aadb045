//! Seccomp on the real `veil`: every thread of a running guest is filtered, the probe guest runs
//! to PROBE PASS under the filters (`on` is the default), and `log` and `off` behave as named.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use veil_tests::{bin, veil};

/// A probe that comes online on every vCPU, then spins for minutes (the test kills it).
const LONG_RUN: &str = "probe.run=boot,smp,loop probe.loop=200000000000";

/// A `veil run` that is killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `veil run --cpus <cpus> <extra>` on the long-running probe and returns once every vCPU
/// is online (the probe printed `PROBE ok smp`).
fn start_long_probe(cpus: u32, extra: &[&str]) -> Running {
    let mut child = Command::new(bin("veil"))
        .args(["run", "--cpus", &cpus.to_string(), "--memory", "128M"])
        .args(["--cmdline", LONG_RUN])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("veil starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let running = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("PROBE ok smp") || line.starts_with("PROBE FAIL") {
                let _ = tx.send(seen.clone());
            }
        }
    });
    let seen = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the probe reports its vCPUs within 60 s");
    assert!(
        seen.contains(&format!("PROBE ok smp: {cpus} cpus online")),
        "{seen}"
    );
    running
}

/// `PF_USER_WORKER` in /proc/<pid>/task/<tid>/stat: a kernel worker in the process (such as
/// KVM's `kvm-nx-lpage-recovery`), which never runs user code.
const PF_USER_WORKER: u64 = 0x4000;

/// (thread name, value of the `Seccomp:` line) of every thread of `pid`: user threads, then
/// the kernel's workers.
type Modes = Vec<(String, String)>;

fn all_thread_seccomp_modes(pid: u32) -> (Modes, Modes) {
    let mut modes = Vec::new();
    let mut workers = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process is alive") {
        let dir = task.expect("a task entry").path();
        let status = std::fs::read_to_string(dir.join("status")).expect("its status is readable");
        let stat = std::fs::read_to_string(dir.join("stat")).expect("its stat is readable");
        let flags: u64 = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(6))
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("no flags in {stat}"));
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} line in {status}"))
        };
        let entry = (field("Name:"), field("Seccomp:"));
        if flags & PF_USER_WORKER != 0 {
            workers.push(entry);
        } else {
            modes.push(entry);
        }
    }
    modes.sort();
    (modes, workers)
}

/// The user threads' modes of a `veil` process; its kernel workers must have the same mode.
fn thread_seccomp_modes(pid: u32) -> Modes {
    let (modes, workers) = all_thread_seccomp_modes(pid);
    for (name, mode) in &workers {
        assert!(
            modes.iter().all(|(_, m)| m == mode),
            "kernel worker {name} has seccomp mode {mode}, the threads {modes:?}"
        );
    }
    modes
}

fn expected_threads(cpus: u32) -> Vec<String> {
    let mut names: Vec<String> = (0..cpus).map(|i| format!("vcpu{i}")).collect();
    names.push("veil".into());
    names.sort();
    names
}

#[test]
fn every_thread_of_a_running_guest_is_filtered() {
    let cpus = 4;
    let vm = start_long_probe(cpus, &[]);
    let modes = thread_seccomp_modes(vm.0.id());
    let names: Vec<String> = modes.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(names, expected_threads(cpus), "{modes:?}");
    for (name, mode) in &modes {
        assert_eq!(
            mode, "2",
            "thread {name} is not in seccomp filter mode: {modes:?}"
        );
    }
    // The VMM and vCPU threads hold exactly their own role's filter (none inherited from another
    // role), where the kernel reports the count. (Device workers will hold two: the VMM
    // thread's, inherited, and their own.)
    for task in std::fs::read_dir(format!("/proc/{}/task", vm.0.id())).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let name = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .unwrap_or("");
        let count = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp_filters:"));
        if let Some(count) = count.filter(|_| name.trim() == "veil" || name.contains("vcpu")) {
            assert_eq!(count.trim(), "1", "{status}");
        }
    }
}

/// Runs a 2-vCPU probe with `--seccomp level` and asserts that each of its three threads is in
/// seccomp `mode` (the `Seccomp:` field of its status: 0 none, 2 filter).
fn every_thread_in_mode(level: &str, mode: &str) {
    let vm = start_long_probe(2, &["--seccomp", level]);
    let modes = thread_seccomp_modes(vm.0.id());
    assert_eq!(modes.len(), 3, "{modes:?}");
    assert!(modes.iter().all(|(_, m)| m == mode), "{modes:?}");
}

#[test]
fn log_level_filters_every_thread_too() {
    every_thread_in_mode("log", "2");
}

#[test]
fn off_leaves_every_thread_unfiltered() {
    every_thread_in_mode("off", "0");
}

#[test]
fn the_probe_passes_under_every_level() {
    // The default is `on`; the probe's full run (boot, RAM, SMP bring-up through the IOAPIC and
    // LAPICs, ring 3, serial output, debug exit) then completes under the filters.
    for args in [
        &["run", "--cpus", "4"][..],
        &["run", "--cpus", "2", "--seccomp", "on"],
        &["run", "--cpus", "2", "--seccomp", "log"],
        &["run", "--cpus", "2", "--seccomp", "off"],
    ] {
        let out = veil(args);
        out.expect_status(0);
        assert!(
            out.stdout.trim_end().ends_with("PROBE PASS"),
            "{args:?}: {out:#?}"
        );
    }
}

#[test]
fn a_crashing_guest_is_reported_under_the_filters() {
    // The crash path reads the registers (KVM_GET_REGS/SREGS) on the vCPU thread and the main
    // thread prints them: both must be allowed.
    let out = veil_tests::run_tiny("seccomp-crash", veil_tests::code::TRIPLE_FAULT);
    out.expect_status(1);
    assert!(out.stderr.contains("triple fault"), "{out:#?}");
    assert!(out.stderr.contains("rip"), "{out:#?}");
}

#[test]
fn a_bad_level_is_a_usage_error() {
    veil_tests::veil_fails(&["run", "--seccomp", "strict"], 2, &["--seccomp", "strict"]);
}

#[test]
fn the_library_filters_the_threads_it_starts_but_not_its_caller() {
    use veil_vmm::{Kernel, SeccompLevel, SerialOutput, VmConfig, launch};
    let config = VmConfig::builder(Kernel::probe())
        .cpus(2)
        .memory(64 << 20)
        .cmdline(LONG_RUN)
        .serial(SerialOutput::Off)
        .build()
        .expect("a valid config");
    assert_eq!(config.seccomp(), SeccompLevel::On, "the library default");
    let vm = launch(&config).expect("the probe launches");
    // launch returns once every vCPU thread has its filter; the caller keeps none.
    let (modes, _) = all_thread_seccomp_modes(std::process::id());
    let vcpus: Vec<_> = modes
        .iter()
        .filter(|(n, _)| n.starts_with("vcpu"))
        .collect();
    assert_eq!(vcpus.len(), 2, "{modes:?}");
    assert!(vcpus.iter().all(|(_, m)| m == "2"), "{modes:?}");
    // SAFETY: gettid takes no arguments.
    let me = unsafe { libc::syscall(libc::SYS_gettid) };
    let mine = std::fs::read_to_string(format!("/proc/self/task/{me}/status"))
        .expect("this thread's status");
    assert!(mine.contains("Seccomp:\t0"), "{mine}");
    vm.stop();
}
