//! cgroup v2: one directory `<parent>/<id>` in the unified hierarchy, with the controllers the
//! settings use enabled in `cgroup.subtree_control` of every level above it.

use std::path::{Path, PathBuf};

use super::mountinfo::CgroupMount;
use super::{CgroupError, Setting, controllers, create_dirs, own_cgroups, write_file};
use crate::cleanup::Undo;

/// Where the v2 cgroup goes, worked out before anything is created.
#[derive(Debug)]
pub struct Plan {
    mount: PathBuf,
    dir: PathBuf,
    origin: PathBuf,
    controllers: Vec<String>,
    settings: Vec<Setting>,
}

impl Plan {
    /// Finds the cgroup2 mount and checks it offers every controller the settings use.
    pub fn new(
        mounts: &[CgroupMount],
        settings: &[Setting],
        parent: &Path,
        id: &str,
    ) -> Result<Plan, CgroupError> {
        let mount = mounts
            .iter()
            .find(|m| m.v2)
            .ok_or(CgroupError::V2NotMounted)?;
        let list = mount.mount_point.join("cgroup.controllers");
        let available = std::fs::read_to_string(&list).map_err(|source| CgroupError::Read {
            path: list.clone(),
            source,
        })?;
        let wanted = controllers(settings);
        check_available(&wanted, &available, &mount.mount_point)?;
        let own = own_cgroups()?;
        let own_path = own
            .iter()
            .find(|(id, ctrls, _)| *id == 0 && ctrls.is_empty())
            .map(|(_, _, p)| p.as_str())
            .ok_or_else(|| CgroupError::NoOwnCgroup {
                what: "the unified (v2) hierarchy (a `0::` line)".into(),
            })?;
        let rel = own_path
            .strip_prefix(mount.root.as_str())
            .unwrap_or("")
            .trim_start_matches('/');
        Ok(Plan {
            mount: mount.mount_point.clone(),
            dir: mount.mount_point.join(parent).join(id),
            origin: mount.mount_point.join(rel),
            controllers: wanted.iter().map(|c| c.to_string()).collect(),
            settings: settings.to_vec(),
        })
    }

    /// Creates the directory, enables the controllers down the path, writes the limits and moves
    /// this process in.
    pub fn apply(&self, undo: &mut Undo) -> Result<(), CgroupError> {
        create_dirs(&self.mount, &self.dir, undo)?;
        let rel = self
            .dir
            .strip_prefix(&self.mount)
            .expect("the cgroup dir is built under its mount");
        let mut level = self.mount.clone();
        for comp in rel.components() {
            enable_controllers(&level, &self.controllers)?;
            level.push(comp);
        }
        for s in &self.settings {
            write_file(&self.dir.join(&s.key), &s.value)?;
        }
        write_file(
            &self.dir.join("cgroup.procs"),
            &std::process::id().to_string(),
        )?;
        undo.leave_cgroup(self.origin.join("cgroup.procs"));
        Ok(())
    }
}

/// Fails naming the first controller in `wanted` that `available` (a `cgroup.controllers`
/// line) lacks.
fn check_available(wanted: &[&str], available: &str, mount: &Path) -> Result<(), CgroupError> {
    let have: Vec<&str> = available.split_whitespace().collect();
    match wanted.iter().find(|c| !have.contains(c)) {
        Some(missing) => Err(CgroupError::V2Unavailable {
            controller: missing.to_string(),
            mount: mount.to_path_buf(),
            available: available.trim().to_string(),
        }),
        None => Ok(()),
    }
}

/// Turns on `controllers` for the children of cgroup `dir` (those not on yet).
fn enable_controllers(dir: &Path, controllers: &[String]) -> Result<(), CgroupError> {
    let file = dir.join("cgroup.subtree_control");
    let on = std::fs::read_to_string(&file).map_err(|source| CgroupError::Read {
        path: file.clone(),
        source,
    })?;
    let on: Vec<&str> = on.split_whitespace().collect();
    for c in controllers {
        if !on.contains(&c.as_str()) {
            write_file(&file, &format!("+{c}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_names_the_missing_controller() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        assert!(check_available(&["hugetlb"], "hugetlb\n", mount).is_ok());
        assert!(check_available(&["cpu", "pids"], "cpu io memory pids\n", mount).is_ok());
        let err = check_available(&["hugetlb", "pids"], "hugetlb\n", mount)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"pids\"") && err.contains("/sys/fs/cgroup/unified"),
            "{err}"
        );
        assert!(err.contains("--cgroup-version 1"), "{err}");
    }
}
