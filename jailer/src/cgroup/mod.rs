//! Cgroup limits for the jailed process: parsing `--cgroup KEY=VALUE`, the keys each cgroup version
//! knows, and placing the jailer (and so what it execs) in `<parent-cgroup>/<id>` with the limits set.
//!
//! v1 ([`v1`]) puts one directory per controller under that controller's own mount; v2 ([`v2`])
//! one directory under the unified mount, with the controllers enabled down the path.

pub mod mountinfo;
pub mod v1;
pub mod v2;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::cleanup::Undo;

/// Which cgroup hierarchy the limits go to (`--cgroup-version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// One hierarchy per controller (`/sys/fs/cgroup/<controller>`).
    V1,
    /// The unified hierarchy (`cgroup2`).
    V2,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Version::V1 => f.write_str("cgroup v1"),
            Version::V2 => f.write_str("cgroup v2"),
        }
    }
}

/// Keys accepted for cgroup v1 (besides `hugetlb.<size>.limit_in_bytes`).
pub const V1_KEYS: &[&str] = &[
    "cpu.shares",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpuset.cpus",
    "cpuset.mems",
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "pids.max",
];

/// Keys accepted for cgroup v2 (besides `hugetlb.<size>.max`).
pub const V2_KEYS: &[&str] = &[
    "cpu.max",
    "cpu.weight",
    "cpuset.cpus",
    "cpuset.mems",
    "memory.high",
    "memory.low",
    "memory.max",
    "memory.min",
    "memory.swap.max",
    "pids.max",
];

/// Errors from parsing and applying cgroup settings.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("--cgroup {arg:?}: expected KEY=VALUE, e.g. pids.max=64")]
    Syntax { arg: String },
    #[error("--cgroup {arg:?}: the value is empty")]
    EmptyValue { arg: String },
    #[error("--cgroup {arg:?}: the value holds a newline or NUL byte")]
    BadValue { arg: String },
    #[error("--cgroup {arg:?}: {key:?} is not a known {version} key{hint}; known keys: {known}")]
    UnknownKey {
        arg: String,
        key: String,
        version: Version,
        hint: String,
        known: String,
    },
    #[error("--cgroup {key}: given twice")]
    Duplicate { key: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cgroup v1 controller {controller:?} is not mounted (no cgroup mount with that option in \
         /proc/self/mountinfo)"
    )]
    V1NotMounted { controller: String },
    #[error("no cgroup2 file system is mounted (none in /proc/self/mountinfo)")]
    V2NotMounted,
    #[error(
        "cgroup v2 controller {controller:?} is not available at {mount} (its cgroup.controllers \
         lists: {available:?}); a controller bound to a v1 hierarchy cannot be used on v2 at the \
         same time: use --cgroup-version 1"
    )]
    V2Unavailable {
        controller: String,
        mount: PathBuf,
        available: String,
    },
    #[error("cgroup {path} already exists: another jail with this id may be running")]
    Exists { path: PathBuf },
    #[error("creating cgroup {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("/proc/self/cgroup has no line for {what}")]
    NoOwnCgroup { what: String },
}

/// One `--cgroup KEY=VALUE` setting, checked against the keys of its cgroup version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The controller the key belongs to (`pids` for `pids.max`).
    pub controller: String,
    /// The cgroup file written (`pids.max`).
    pub key: String,
    /// What is written to it.
    pub value: String,
}

impl Setting {
    /// Parses `KEY=VALUE` and checks KEY is a known key of `version`.
    pub fn parse(arg: &str, version: Version) -> Result<Setting, CgroupError> {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(CgroupError::Syntax { arg: arg.into() });
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(CgroupError::Syntax { arg: arg.into() });
        }
        if value.is_empty() {
            return Err(CgroupError::EmptyValue { arg: arg.into() });
        }
        if value.contains(['\n', '\0']) {
            return Err(CgroupError::BadValue { arg: arg.into() });
        }
        if !is_known(key, version) {
            let other = match version {
                Version::V1 => Version::V2,
                Version::V2 => Version::V1,
            };
            let hint = if is_known(key, other) {
                format!(
                    " (it is a {other} key; did you mean --cgroup-version {}?)",
                    {
                        match other {
                            Version::V1 => 1,
                            Version::V2 => 2,
                        }
                    }
                )
            } else {
                String::new()
            };
            let (keys, huge) = match version {
                Version::V1 => (V1_KEYS, "hugetlb.<size>.limit_in_bytes"),
                Version::V2 => (V2_KEYS, "hugetlb.<size>.max"),
            };
            return Err(CgroupError::UnknownKey {
                arg: arg.into(),
                key: key.into(),
                version,
                hint,
                known: format!("{}, {huge}", keys.join(", ")),
            });
        }
        let controller = key
            .split_once('.')
            .map(|(c, _)| c)
            .expect("known keys hold a dot")
            .to_string();
        Ok(Setting {
            controller,
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

/// Whether `key` is a cgroup file this jailer may write for `version`.
fn is_known(key: &str, version: Version) -> bool {
    let keys = match version {
        Version::V1 => V1_KEYS,
        Version::V2 => V2_KEYS,
    };
    if keys.contains(&key) {
        return true;
    }
    let suffix = match version {
        Version::V1 => ".limit_in_bytes",
        Version::V2 => ".max",
    };
    key.strip_prefix("hugetlb.")
        .and_then(|rest| rest.strip_suffix(suffix))
        .is_some_and(is_hugepage_size)
}

/// `2MB`, `1GB`, `64KB`: the hugepage size names the kernel uses in hugetlb file names.
fn is_hugepage_size(s: &str) -> bool {
    let Some(digits) = s
        .strip_suffix("KB")
        .or_else(|| s.strip_suffix("MB"))
        .or_else(|| s.strip_suffix("GB"))
    else {
        return false;
    };
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Checks that no key is given twice.
pub fn check_duplicates(settings: &[Setting]) -> Result<(), CgroupError> {
    for (i, s) in settings.iter().enumerate() {
        if settings[..i].iter().any(|o| o.key == s.key) {
            return Err(CgroupError::Duplicate { key: s.key.clone() });
        }
    }
    Ok(())
}

/// The controllers named by `settings`, in first-seen order, each once.
pub fn controllers(settings: &[Setting]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for s in settings {
        if !out.contains(&s.controller.as_str()) {
            out.push(&s.controller);
        }
    }
    out
}

/// A cgroup placement worked out before anything is created, so a missing controller fails early.
#[derive(Debug)]
pub enum Plan {
    /// No `--cgroup` given: the process stays where it is.
    None,
    /// v1: one directory per controller.
    V1(v1::Plan),
    /// v2: one directory in the unified hierarchy.
    V2(v2::Plan),
}

impl Plan {
    /// Resolves where `settings` go: `<mount>/<parent>/<id>` per controller (v1) or once (v2).
    pub fn new(
        version: Version,
        settings: &[Setting],
        parent: &Path,
        id: &str,
    ) -> Result<Plan, CgroupError> {
        if settings.is_empty() {
            return Ok(Plan::None);
        }
        let mounts = mountinfo::read()?;
        Ok(match version {
            Version::V1 => Plan::V1(v1::Plan::new(&mounts, settings, parent, id)?),
            Version::V2 => Plan::V2(v2::Plan::new(&mounts, settings, parent, id)?),
        })
    }

    /// Creates the cgroup directories, writes the limits and moves this process in; every step
    /// is recorded in `undo` so a later failure can take it back.
    pub fn apply(&self, undo: &mut Undo) -> Result<(), CgroupError> {
        match self {
            Plan::None => Ok(()),
            Plan::V1(p) => p.apply(undo),
            Plan::V2(p) => p.apply(undo),
        }
    }
}

/// Writes `value` to the cgroup file `path` (one write, as the kernel expects).
pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

/// Creates `dir` and any missing ancestors below `mount`, recording each one created in `undo`
/// (as a cgroup to remove). `dir` itself must not exist yet.
pub(crate) fn create_dirs(mount: &Path, dir: &Path, undo: &mut Undo) -> Result<(), CgroupError> {
    if dir.exists() {
        return Err(CgroupError::Exists {
            path: dir.to_path_buf(),
        });
    }
    let rel = dir
        .strip_prefix(mount)
        .expect("cgroup dirs are built under their mount");
    let mut cur = mount.to_path_buf();
    for comp in rel.components() {
        cur.push(comp);
        match std::fs::create_dir(&cur) {
            Ok(()) => undo.remove_cgroup(cur.clone()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && cur != dir => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CgroupError::Exists { path: cur });
            }
            Err(source) => return Err(CgroupError::Create { path: cur, source }),
        }
    }
    Ok(())
}

/// This process's cgroup paths from `/proc/self/cgroup`: `(hierarchy id, controllers, path)`.
pub(crate) fn own_cgroups() -> Result<Vec<(u32, Vec<String>, String)>, CgroupError> {
    let path = Path::new("/proc/self/cgroup");
    let text = std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.into(),
        source,
    })?;
    Ok(parse_proc_cgroup(&text))
}

/// Parses the text of `/proc/<pid>/cgroup`.
pub(crate) fn parse_proc_cgroup(text: &str) -> Vec<(u32, Vec<String>, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let id = parts.next()?.parse().ok()?;
            let ctrls = parts.next()?;
            let path = parts.next()?;
            let ctrls = ctrls
                .split(',')
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect();
            Some((id, ctrls, path.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_keys_per_version() {
        let s = Setting::parse("pids.max=64", Version::V1).unwrap();
        assert_eq!((s.controller.as_str(), s.value.as_str()), ("pids", "64"));
        assert!(Setting::parse("cpu.max=50000 100000", Version::V2).is_ok());
        assert!(Setting::parse("hugetlb.2MB.max=0", Version::V2).is_ok());
        assert!(Setting::parse("hugetlb.1GB.limit_in_bytes=0", Version::V1).is_ok());
        assert!(Setting::parse("memory.limit_in_bytes=1G", Version::V1).is_ok());
    }

    #[test]
    fn refuses_bad_syntax_and_unknown_keys() {
        for bad in ["pids.max", "=5", "pids.max=", "pids.max=1\n2"] {
            assert!(Setting::parse(bad, Version::V1).is_err(), "{bad:?}");
        }
        let err = Setting::parse("memory.max=1G", Version::V1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"memory.max\""), "{err}");
        assert!(err.contains("--cgroup-version 2"), "{err}");
        let err = Setting::parse("foo.bar=1", Version::V2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a known cgroup v2 key"), "{err}");
        assert!(Setting::parse("hugetlb.2XB.max=0", Version::V2).is_err());
        assert!(Setting::parse("cpu.shares=1", Version::V2).is_err());
        assert!(Setting::parse("cgroup.procs=1", Version::V2).is_err());
    }

    #[test]
    fn duplicates_and_controller_order() {
        let s: Vec<_> = ["pids.max=1", "cpu.shares=2", "cpu.cfs_quota_us=3"]
            .iter()
            .map(|a| Setting::parse(a, Version::V1).unwrap())
            .collect();
        assert_eq!(controllers(&s), ["pids", "cpu"]);
        assert!(check_duplicates(&s).is_ok());
        let mut d = s.clone();
        d.push(s[0].clone());
        assert!(check_duplicates(&d).is_err());
    }

    #[test]
    fn parses_proc_self_cgroup() {
        let got = parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/x\n");
        assert_eq!(got[0], (4, vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(got[1].1, ["cpu", "cpuacct"]);
        assert_eq!(got[2], (0, vec![], "/x".to_string()));
    }
}
