//! cgroup v1: a directory `<parent>/<id>` in each controller's own hierarchy.

use std::path::{Path, PathBuf};

use super::mountinfo::CgroupMount;
use super::{CgroupError, Setting, create_dirs, own_cgroups, write_file};
use crate::cleanup::Undo;

/// One v1 hierarchy the jail joins, with the settings for its controllers.
#[derive(Debug)]
struct Hierarchy {
    mount: PathBuf,
    dir: PathBuf,
    /// Where this process sits now in this hierarchy (to move back on failure).
    origin: PathBuf,
    has_cpuset: bool,
    settings: Vec<Setting>,
}

/// Where each controller's cgroup goes, worked out before anything is created.
#[derive(Debug)]
pub struct Plan {
    hierarchies: Vec<Hierarchy>,
}

impl Plan {
    /// Finds the mount of every controller the settings use and this process's place in it.
    pub fn new(
        mounts: &[CgroupMount],
        settings: &[Setting],
        parent: &Path,
        id: &str,
    ) -> Result<Plan, CgroupError> {
        let own = own_cgroups()?;
        let mut hierarchies: Vec<Hierarchy> = Vec::new();
        for s in settings {
            let mount = mounts
                .iter()
                .find(|m| !m.v2 && m.options.contains(&s.controller))
                .ok_or_else(|| CgroupError::V1NotMounted {
                    controller: s.controller.clone(),
                })?;
            if let Some(h) = hierarchies
                .iter_mut()
                .find(|h| h.mount == mount.mount_point)
            {
                h.settings.push(s.clone());
                continue;
            }
            let own_path = own
                .iter()
                .find(|(_, ctrls, _)| ctrls.contains(&s.controller))
                .map(|(_, _, p)| p.clone())
                .ok_or_else(|| CgroupError::NoOwnCgroup {
                    what: format!("the v1 controller {:?}", s.controller),
                })?;
            hierarchies.push(Hierarchy {
                mount: mount.mount_point.clone(),
                dir: mount.mount_point.join(parent).join(id),
                origin: origin_dir(mount, &own_path),
                has_cpuset: mount.options.iter().any(|o| o == "cpuset"),
                settings: vec![s.clone()],
            });
        }
        Ok(Plan { hierarchies })
    }

    /// Creates the directories, writes the limits and moves this process into each.
    pub fn apply(&self, undo: &mut Undo) -> Result<(), CgroupError> {
        for h in &self.hierarchies {
            create_dirs(&h.mount, &h.dir, undo)?;
            if h.has_cpuset {
                inherit_cpuset(&h.mount, &h.dir)?;
            }
            for s in &h.settings {
                write_file(&h.dir.join(&s.key), &s.value)?;
            }
            write_file(&h.dir.join("cgroup.procs"), &std::process::id().to_string())?;
            undo.leave_cgroup(h.origin.join("cgroup.procs"));
        }
        Ok(())
    }
}

/// The directory of this process's current cgroup in the hierarchy mounted at `mount`.
fn origin_dir(mount: &CgroupMount, own_path: &str) -> PathBuf {
    let rel = own_path
        .strip_prefix(mount.root.as_str())
        .unwrap_or("")
        .trim_start_matches('/');
    mount.mount_point.join(rel)
}

/// A new cpuset cgroup starts with no CPUs and memory nodes and takes no tasks until given some:
/// copy them down from the parent for every level below the mount that has none.
fn inherit_cpuset(mount: &Path, dir: &Path) -> Result<(), CgroupError> {
    let rel = dir
        .strip_prefix(mount)
        .expect("cgroup dirs are built under their mount");
    let mut parent = mount.to_path_buf();
    for comp in rel.components() {
        let cur = parent.join(comp);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let mine = read_trimmed(&cur.join(file))?;
            if mine.is_empty() {
                let theirs = read_trimmed(&parent.join(file))?;
                write_file(&cur.join(file), &theirs)?;
            }
        }
        parent = cur;
    }
    Ok(())
}

fn read_trimmed(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| CgroupError::Read {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_is_relative_to_the_mounted_root() {
        let m = CgroupMount {
            mount_point: "/sys/fs/cgroup/memory".into(),
            root: "/".into(),
            v2: false,
            options: vec!["memory".into()],
        };
        assert_eq!(
            origin_dir(&m, "/a/b"),
            Path::new("/sys/fs/cgroup/memory/a/b")
        );
        assert_eq!(origin_dir(&m, "/"), Path::new("/sys/fs/cgroup/memory"));
        let sub = CgroupMount {
            root: "/a".into(),
            ..m
        };
        assert_eq!(
            origin_dir(&sub, "/a/b"),
            Path::new("/sys/fs/cgroup/memory/b")
        );
    }
}
