//! The command line (Firecracker jailer's flags) and its validation into a [`Config`].

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use clap::Parser;

use crate::cgroup::{self, CgroupError, Setting, Version};
use crate::id::{self, IdError};
use crate::rlimit::{self, Limit, RlimitError};

/// `veil-jailer --id ID --exec-file PATH --uid N --gid N [options] -- [veil arguments]`
#[derive(Debug, Parser)]
#[command(
    name = "veil-jailer",
    version,
    about = "Builds a jail (chroot, namespaces, cgroups, uid/gid, rlimits, device nodes) and execs \
             the given file (veil) inside it",
    after_help = "The jail is <chroot-base-dir>/<exec-file name>/<id>/root. See docs/jailer.md."
)]
pub struct Args {
    /// Jail id: 1-64 characters from [A-Za-z0-9-]; names the jail directory and cgroups.
    #[arg(long)]
    pub id: String,
    /// The (statically linked) program to copy into the jail and run there.
    #[arg(long, value_name = "PATH")]
    pub exec_file: PathBuf,
    /// User id the jailed process runs as.
    #[arg(long)]
    pub uid: u32,
    /// Group id the jailed process runs as.
    #[arg(long)]
    pub gid: u32,
    /// Directory under which jails are built.
    #[arg(long, value_name = "DIR", default_value = "/srv/jailer")]
    pub chroot_base_dir: PathBuf,
    /// Network namespace to join (e.g. /var/run/netns/NAME).
    #[arg(long, value_name = "PATH")]
    pub netns: Option<PathBuf>,
    /// A cgroup limit such as pids.max=64 or cpu.shares=512 (repeatable).
    #[arg(long = "cgroup", value_name = "KEY=VALUE")]
    pub cgroups: Vec<String>,
    /// Which cgroup hierarchy to use: 1 (per-controller mounts) or 2 (unified).
    #[arg(long, value_name = "1|2", default_value = "1", value_parser = parse_version)]
    pub cgroup_version: Version,
    /// Cgroup path (below each controller's mount) under which <id> is created; default: the
    /// exec file's name.
    #[arg(long, value_name = "PATH")]
    pub parent_cgroup: Option<String>,
    /// A resource limit: fsize=BYTES or no-file=COUNT (repeatable; no-file defaults to 2048).
    #[arg(long = "resource-limit", value_name = "KEY=VALUE")]
    pub resource_limits: Vec<String>,
    /// Detach: new session, stdin/stdout/stderr to /dev/null.
    #[arg(long)]
    pub daemonize: bool,
    /// Run the exec file as pid 1 of a new pid namespace (the jailer writes <exec-name>.pid into
    /// the jail root and exits).
    #[arg(long)]
    pub new_pid_ns: bool,
    /// Arguments for the exec file, after `--`.
    #[arg(last = true, value_name = "ARGS")]
    pub exec_args: Vec<OsString>,
}

fn parse_version(s: &str) -> Result<Version, String> {
    match s {
        "1" => Ok(Version::V1),
        "2" => Ok(Version::V2),
        _ => Err(format!("{s:?} is not a cgroup version; use 1 or 2")),
    }
}

/// Errors in arguments that clap's syntax check lets through.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("--exec-file {path}: {source}")]
    ExecFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--exec-file {path}: the file name must be plain UTF-8 without '/'")]
    ExecName { path: PathBuf },
    #[error("--chroot-base-dir {path}: must be an absolute path without '..'")]
    Base { path: PathBuf },
    #[error(
        "--parent-cgroup {path:?}: must be a relative path of plain names (no '..', '.', or leading '/')"
    )]
    ParentCgroup { path: String },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Rlimit(#[from] RlimitError),
}

/// Validated settings for one jail.
#[derive(Debug)]
pub struct Config {
    /// The jail id (checked by [`id::validate`]).
    pub id: String,
    /// The exec file, made absolute with symlinks resolved (what is copied).
    pub exec_file: PathBuf,
    /// The file name of `--exec-file` as given (its name inside the jail).
    pub exec_name: String,
    /// Target uid.
    pub uid: u32,
    /// Target gid.
    pub gid: u32,
    /// Where jails go.
    pub base: PathBuf,
    /// Network namespace to join.
    pub netns: Option<PathBuf>,
    /// Cgroup hierarchy.
    pub cgroup_version: Version,
    /// Cgroup settings, keys checked for `cgroup_version`.
    pub cgroups: Vec<Setting>,
    /// Where `<id>` goes in each hierarchy.
    pub parent_cgroup: PathBuf,
    /// Resource limits (with the `no-file` default).
    pub rlimits: Vec<Limit>,
    /// Detach from the terminal.
    pub daemonize: bool,
    /// New pid namespace.
    pub new_pid_ns: bool,
    /// Arguments for the exec file.
    pub exec_args: Vec<OsString>,
}

impl Config {
    /// Checks everything that can be checked without touching the system beyond reading.
    pub fn from_args(a: Args) -> Result<Config, ArgsError> {
        id::validate(&a.id)?;
        let exec_file =
            std::fs::canonicalize(&a.exec_file).map_err(|source| ArgsError::ExecFile {
                path: a.exec_file.clone(),
                source,
            })?;
        // The name as given (a symlink `veil -> veil-1.2` keeps the name `veil` in the jail).
        let exec_name = a
            .exec_file
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ArgsError::ExecName {
                path: a.exec_file.clone(),
            })?
            .to_string();
        if !plain_path(&a.chroot_base_dir, true) {
            return Err(ArgsError::Base {
                path: a.chroot_base_dir,
            });
        }
        let parent_cgroup = match a.parent_cgroup {
            Some(p) if plain_path(Path::new(&p), false) && !p.is_empty() => PathBuf::from(p),
            Some(p) => return Err(ArgsError::ParentCgroup { path: p }),
            None => PathBuf::from(&exec_name),
        };
        let cgroups = a
            .cgroups
            .iter()
            .map(|s| Setting::parse(s, a.cgroup_version))
            .collect::<Result<Vec<_>, _>>()?;
        cgroup::check_duplicates(&cgroups)?;
        let rlimits = rlimit::parse_all(&a.resource_limits)?;
        Ok(Config {
            id: a.id,
            exec_file,
            exec_name,
            uid: a.uid,
            gid: a.gid,
            base: a.chroot_base_dir,
            netns: a.netns,
            cgroup_version: a.cgroup_version,
            cgroups,
            parent_cgroup,
            rlimits,
            daemonize: a.daemonize,
            new_pid_ns: a.new_pid_ns,
            exec_args: a.exec_args,
        })
    }
}

/// `true` if `p` has only plain names (after a leading `/` when `absolute`).
fn plain_path(p: &Path, absolute: bool) -> bool {
    let mut comps = p.components().peekable();
    if absolute != matches!(comps.peek(), Some(Component::RootDir)) {
        return false;
    }
    if absolute {
        comps.next();
    }
    comps.all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["veil-jailer", "--id", "t1", "--exec-file", "/bin/true"];
        argv.extend(["--uid", "1000", "--gid", "1000"]);
        argv.extend(extra);
        let a = Args::try_parse_from(argv).map_err(|e| e.to_string())?;
        Config::from_args(a).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_trailing_args() {
        let c = args(&["--", "run", "--memory", "64"]).unwrap();
        assert_eq!(c.base, Path::new("/srv/jailer"));
        assert_eq!(c.cgroup_version, Version::V1);
        assert_eq!(c.parent_cgroup, Path::new(&c.exec_name));
        assert_eq!(c.exec_args, ["run", "--memory", "64"]);
        assert_eq!(c.rlimits.len(), 1);
    }

    #[test]
    fn exec_name_is_the_given_name() {
        let dir = std::env::temp_dir().join(format!("veil-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("veil");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("/bin/true", &link).unwrap();
        let a = Args::try_parse_from([
            "j",
            "--id",
            "x",
            "--exec-file",
            link.to_str().unwrap(),
            "--uid",
            "0",
            "--gid",
            "0",
        ])
        .unwrap();
        let c = Config::from_args(a).unwrap();
        assert_eq!(c.exec_name, "veil");
        assert_eq!(c.exec_file, std::fs::canonicalize("/bin/true").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn checks_each_input() {
        assert!(
            args(&["--cgroup-version", "3"])
                .unwrap_err()
                .contains("use 1 or 2")
        );
        assert!(
            args(&["--chroot-base-dir", "rel"])
                .unwrap_err()
                .contains("absolute")
        );
        assert!(args(&["--chroot-base-dir", "/a/../b"]).is_err());
        assert!(
            args(&["--parent-cgroup", "../x"])
                .unwrap_err()
                .contains("--parent-cgroup")
        );
        assert!(args(&["--parent-cgroup", "/x"]).is_err());
        assert!(args(&["--parent-cgroup", "a/b"]).is_ok());
        assert!(
            args(&["--cgroup", "nope.x=1"])
                .unwrap_err()
                .contains("nope.x")
        );
        assert!(args(&["--cgroup", "pids.max=1", "--cgroup", "pids.max=2"]).is_err());
        assert!(
            args(&["--resource-limit", "no-file"])
                .unwrap_err()
                .contains("KEY=VALUE")
        );
        assert!(args(&["--uid", "-1"]).is_err());
        let e = Config::from_args(
            Args::try_parse_from([
                "j",
                "--id",
                "x",
                "--exec-file",
                "/no/such",
                "--uid",
                "0",
                "--gid",
                "0",
            ])
            .unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/no/such"), "{e}");
    }
}
