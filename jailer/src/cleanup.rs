//! Taking back what a failed jailing made: every directory, file and cgroup the jailer creates is
//! recorded here as it is made, and undone in reverse order if a later step fails.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A cleanup step that did not work (printed after the error that caused the cleanup).
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("could not remove {path}: {source}")]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not move back to cgroup {path}: {source}")]
    Leave {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
enum Action {
    /// A directory the jailer created on the way to the jail (shared with other jails, so it goes
    /// only if empty).
    RemoveDirIfEmpty(PathBuf),
    /// The jail directory and everything in it.
    RemoveTree(PathBuf),
    /// A cgroup directory the jailer created.
    RemoveCgroup(PathBuf),
    /// Move this process back to its original cgroup (a `cgroup.procs` file) so the new one
    /// can be removed.
    LeaveCgroup(PathBuf),
}

/// The record of what has been made so far.
#[derive(Debug, Default)]
pub struct Undo {
    actions: Vec<Action>,
}

impl Undo {
    /// Records a created directory that other jails may share (removed only if empty).
    pub fn remove_dir_if_empty(&mut self, path: PathBuf) {
        self.actions.push(Action::RemoveDirIfEmpty(path));
    }

    /// Records the jail directory (removed with all it holds).
    pub fn remove_tree(&mut self, path: PathBuf) {
        self.actions.push(Action::RemoveTree(path));
    }

    /// Records a created cgroup directory.
    pub fn remove_cgroup(&mut self, path: PathBuf) {
        self.actions.push(Action::RemoveCgroup(path));
    }

    /// Records that this process joined a cgroup and came from the one whose `cgroup.procs`
    /// is `procs`.
    pub fn leave_cgroup(&mut self, procs: PathBuf) {
        self.actions.push(Action::LeaveCgroup(procs));
    }

    /// What would be removed: the paths a failure leaves behind if cleanup cannot run.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                Action::RemoveTree(p) | Action::RemoveCgroup(p) => Some(p.clone()),
                Action::RemoveDirIfEmpty(_) | Action::LeaveCgroup(_) => None,
            })
            .collect()
    }

    /// Undoes everything recorded, newest first; returns what could not be undone.
    pub fn run(self) -> Vec<CleanupError> {
        let mut problems = Vec::new();
        for action in self.actions.into_iter().rev() {
            let result = match &action {
                Action::RemoveDirIfEmpty(p) => match std::fs::remove_dir(p) {
                    Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => Ok(()),
                    other => other.map_err(|source| (p, source)),
                },
                Action::RemoveTree(p) => std::fs::remove_dir_all(p).map_err(|source| (p, source)),
                Action::RemoveCgroup(p) => remove_cgroup(p).map_err(|source| (p, source)),
                Action::LeaveCgroup(p) => {
                    if let Err(source) = std::fs::write(p, std::process::id().to_string()) {
                        problems.push(CleanupError::Leave {
                            path: p.clone(),
                            source,
                        });
                    }
                    Ok(())
                }
            };
            if let Err((path, source)) = result {
                if source.kind() != ErrorKind::NotFound {
                    problems.push(CleanupError::Remove {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        problems
    }
}

/// Removes a cgroup directory; a cgroup whose last task just exited can report busy for a moment.
fn remove_cgroup(path: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(path) {
            Err(e) if e.kind() == ErrorKind::ResourceBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undoes_in_reverse_and_keeps_shared_dirs_in_use() {
        let base = std::env::temp_dir().join(format!("veil-undo-{}", std::process::id()));
        let shared = base.join("shared");
        let jail = shared.join("jail");
        let other = shared.join("other");
        let mut undo = Undo::default();
        std::fs::create_dir(&base).unwrap();
        undo.remove_dir_if_empty(base.clone());
        std::fs::create_dir(&shared).unwrap();
        undo.remove_dir_if_empty(shared.clone());
        std::fs::create_dir_all(jail.join("root/dev")).unwrap();
        std::fs::write(jail.join("root/file"), b"x").unwrap();
        undo.remove_tree(jail.clone());
        assert_eq!(undo.leftovers(), std::slice::from_ref(&jail));
        std::fs::create_dir(&other).unwrap();

        assert!(undo.run().is_empty());
        assert!(!jail.exists());
        assert!(other.exists(), "a directory another jail uses must stay");
        std::fs::remove_dir_all(&base).unwrap();
    }
}
