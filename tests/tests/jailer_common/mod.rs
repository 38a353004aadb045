//! Shared helpers for the `veil-jailer` tests: a unique scratch directory, jail id and parent
//! cgroup per test, removed afterwards, and the probe program's report.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The statically linked probe program built by tests/build.rs.
pub const PROBE: &str = env!("JAIL_PROBE");

static NEXT: AtomicU32 = AtomicU32::new(0);

/// `true` when running as root (jailing needs it); otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(String::from))
        })
        .unwrap_or_default();
    if uid != "0" {
        eprintln!("skipped {test}: veil-jailer needs root (uid is {uid})");
        return false;
    }
    true
}

/// One test's jail: a scratch directory (the chroot base is inside it), an id and a parent cgroup
/// no other test uses. Dropping it removes the scratch directory and the cgroups.
#[derive(Debug)]
pub struct Case {
    /// Scratch directory (holds `base` and host-side files for the test).
    pub scratch: PathBuf,
    /// `--chroot-base-dir` (not created by the test: the jailer makes it).
    pub base: PathBuf,
    /// `--id`.
    pub id: String,
    /// `--parent-cgroup`.
    pub parent_cgroup: String,
}

impl Case {
    /// A fresh case; `None` (test skipped) when not root.
    pub fn new(test: &str) -> Option<Case> {
        if !root_or_skip(test) {
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let scratch = std::env::temp_dir().join(format!("veil-jailer-test-{tag}"));
        std::fs::create_dir_all(&scratch).unwrap();
        Some(Case {
            base: scratch.join("base"),
            scratch,
            id: format!("t-{tag}"),
            parent_cgroup: format!("veil-jailer-test-{tag}"),
        })
    }

    /// `veil-jailer` with this case's id, base dir and parent cgroup, running `exec` as uid/gid.
    pub fn jailer(&self, exec: &Path, uid: u32, gid: u32) -> Command {
        let mut c = Command::new(veil_tests::bin("veil-jailer"));
        c.arg("--id")
            .arg(&self.id)
            .arg("--exec-file")
            .arg(exec)
            .args(["--uid", &uid.to_string(), "--gid", &gid.to_string()])
            .arg("--chroot-base-dir")
            .arg(&self.base)
            .arg("--parent-cgroup")
            .arg(&self.parent_cgroup);
        c
    }

    /// The jail's root as the host sees it, for an exec file named `exec_name`.
    pub fn root(&self, exec_name: &str) -> PathBuf {
        self.base.join(exec_name).join(&self.id).join("root")
    }

    /// The parent cgroup's directory in every mounted hierarchy (v1 controllers and cgroup2).
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        cgroup_mounts()
            .into_iter()
            .map(|m| m.join(&self.parent_cgroup))
            .collect()
    }

    /// Asserts a failed run left nothing: no chroot base (the jailer would have made it) and no
    /// cgroup under this case's parent in any hierarchy.
    pub fn assert_nothing_left(&self) {
        assert!(
            !self.base.exists(),
            "{} was left behind: {:?}",
            self.base.display(),
            walk(&self.base)
        );
        for p in self.cgroup_parents() {
            assert!(!p.exists(), "cgroup {} was left behind", p.display());
        }
    }
}

impl Drop for Case {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
        for parent in self.cgroup_parents() {
            let _ = std::fs::remove_dir(parent.join(&self.id));
            let _ = std::fs::remove_dir(&parent);
        }
    }
}

/// Every cgroup hierarchy mounted under /sys/fs/cgroup (each v1 controller and cgroup2).
pub fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let fstype = right.split(' ').next()?;
            let mount_point = left.split(' ').nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// Paths below `dir` (for failure messages).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(e.path());
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

/// The probe's `key=value` report.
pub fn report(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The host's /dev/<name> exists (optional nodes such as /dev/sev).
pub fn host_has(dev: &str) -> bool {
    Path::new("/dev").join(dev).exists()
}

/// Runs a jailer command to completion, fails the test with its stderr unless it succeeded, and
/// returns the probe's report from stdout.
pub fn report_of(cmd: &mut Command) -> HashMap<String, String> {
    let out = cmd.output().expect("the jailer starts");
    veil_tests::assert_success(&out);
    report(&String::from_utf8_lossy(&out.stdout))
}

/// Starts a jailer command whose probe runs with `--wait` (stdin and stdout piped: the probe
/// waits until stdin closes) and reads its report up to the first line starting with `until`
/// (`""`: just the first line). The caller closes stdin and waits for the child; the rest of
/// stdout stays with the child.
pub fn start_waiting(cmd: &mut Command, until: &str) -> (Child, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the jailer starts");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut text = String::new();
    for line in (&mut stdout).lines() {
        let line = line.expect("the probe's report is text");
        text += &line;
        text += "\n";
        if line.starts_with(until) {
            break;
        }
    }
    // Keep the pipe open: the probe may write more before it exits.
    child.stdout = Some(stdout.into_inner());
    (child, text)
}
