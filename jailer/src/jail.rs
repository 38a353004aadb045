//! The order of the jailing steps, and what happens when one fails.
//!
//! Everything that can be checked is checked before anything is made; everything made is recorded
//! in an [`Undo`] and taken back if a later step fails, so a failed jailing leaves nothing behind.
//! Once the process has pivoted into the jail and dropped to the target uid, host paths are out of
//! reach: a failure there (only the final exec can realistically fail) reports what was left.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

use crate::args::Config;
use crate::cgroup::{self, CgroupError};
use crate::cleanup::{CleanupError, Undo};
use crate::devices::{self, DeviceError};
use crate::exec::{self, ExecError};
use crate::fs::{FsError, Layout};
use crate::namespaces::{self, NsError};
use crate::rlimit::{self, RlimitError};

/// A failed step, named.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("checking the exec file: {0}")]
    ExecFile(#[source] ExecError),
    #[error("planning cgroups: {0}")]
    CgroupPlan(#[source] CgroupError),
    #[error("network namespace: {0}")]
    Netns(#[source] NsError),
    #[error("opening /dev/null (for --daemonize): {0}")]
    DevNull(#[source] std::io::Error),
    #[error("building the jail directory: {0}")]
    Fs(#[source] FsError),
    #[error("making device nodes: {0}")]
    Devices(#[source] DeviceError),
    #[error("cgroups: {0}")]
    Cgroup(#[source] CgroupError),
    #[error("resource limits: {0}")]
    Rlimit(#[source] RlimitError),
    #[error("new pid namespace: {0}")]
    PidNs(#[source] NsError),
    #[error("status pipe to the jailed child: {0}")]
    Pipe(#[source] std::io::Error),
    #[error("entering the jail: {0}")]
    Pivot(#[source] NsError),
    #[error("dropping privileges: {0}")]
    Drop(#[source] ExecError),
    #[error("daemonizing: {0}")]
    Daemonize(#[source] ExecError),
    #[error("{0}")]
    Exec(#[source] ExecError),
    #[error("the jailed child (pid {pid}) failed: {message}")]
    Child { pid: i32, message: String },
    #[error("writing pid file {path}: {source}")]
    PidFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A failed jailing: the error, what cleanup could not undo, and what could not even be tried.
#[derive(Debug)]
pub struct Failure {
    /// The step that failed.
    pub error: JailError,
    /// Cleanup steps that failed.
    pub cleanup: Vec<CleanupError>,
    /// Paths left behind because cleanup could not reach them (after the pivot).
    pub left_behind: Vec<PathBuf>,
}

fn fail(error: JailError, undo: Undo) -> Box<Failure> {
    Box::new(Failure {
        error,
        cleanup: undo.run(),
        left_behind: Vec::new(),
    })
}

fn early(error: JailError) -> Box<Failure> {
    Box::new(Failure {
        error,
        cleanup: Vec::new(),
        left_behind: Vec::new(),
    })
}

/// Builds the jail and execs the exec file in it. Returns only on failure, or, with
/// `--new-pid-ns`, in the parent once the child has exec'd (with the child's pid).
pub fn run(cfg: &Config) -> Result<libc::pid_t, Box<Failure>> {
    exec::check_static(&cfg.exec_file).map_err(|e| early(JailError::ExecFile(e)))?;
    rlimit::check(&cfg.rlimits).map_err(|e| early(JailError::Rlimit(e)))?;
    let layout = Layout::new(&cfg.base, &cfg.exec_name, &cfg.id);
    let plan = cgroup::Plan::new(
        cfg.cgroup_version,
        &cfg.cgroups,
        &cfg.parent_cgroup,
        &cfg.id,
    )
    .map_err(|e| early(JailError::CgroupPlan(e)))?;
    if let Some(netns) = &cfg.netns {
        namespaces::join_netns(netns).map_err(|e| early(JailError::Netns(e)))?;
    }
    let dev_null = if cfg.daemonize {
        exec::new_session().map_err(|e| early(JailError::Daemonize(e)))?;
        let f = File::options()
            .read(true)
            .write(true)
            .open("/dev/null")
            .map_err(|e| early(JailError::DevNull(e)))?;
        Some(f)
    } else {
        None
    };

    let mut undo = Undo::default();
    if let Err(e) = build(cfg, &layout, &plan, &mut undo) {
        return Err(fail(e, undo));
    }
    if cfg.new_pid_ns {
        return spawn_in_pid_ns(cfg, &layout, undo, dev_null.as_ref());
    }
    if let Err(e) = namespaces::pivot_into(&layout.root) {
        return Err(fail(JailError::Pivot(e), undo));
    }
    let left_behind = undo.leftovers();
    let error = finish(cfg, &layout, dev_null.as_ref());
    Err(Box::new(Failure {
        error,
        cleanup: Vec::new(),
        left_behind,
    }))
}

/// The steps that make things on the host: files, device nodes, cgroups.
fn build(
    cfg: &Config,
    layout: &Layout,
    plan: &cgroup::Plan,
    undo: &mut Undo,
) -> Result<(), JailError> {
    layout
        .create(cfg.uid, cfg.gid, undo)
        .map_err(JailError::Fs)?;
    layout.copy_exec(&cfg.exec_file).map_err(JailError::Fs)?;
    devices::make_nodes(&layout.root, cfg.uid, cfg.gid).map_err(JailError::Devices)?;
    plan.apply(undo).map_err(JailError::Cgroup)
}

/// Inside the jail: resource limits (checked in advance), drop privileges, detach if asked, exec.
/// Returns the error if any step fails.
fn finish(cfg: &Config, layout: &Layout, dev_null: Option<&File>) -> JailError {
    if let Err(e) = rlimit::apply(&cfg.rlimits) {
        return JailError::Rlimit(e);
    }
    if let Err(e) = exec::drop_privileges(cfg.uid, cfg.gid) {
        return JailError::Drop(e);
    }
    if let Some(null) = dev_null {
        if let Err(e) = exec::redirect_stdio(null) {
            return JailError::Daemonize(e);
        }
    }
    let args: &[OsString] = &cfg.exec_args;
    JailError::Exec(exec::exec(&layout.exec_in_jail(), args))
}

/// `--new-pid-ns`: the child (pid 1 of a new pid namespace) pivots and execs; this process stays
/// outside, writes `<root>/<exec-name>.pid` before letting the child go on, learns whether the
/// exec worked (a close-on-exec pipe reaches EOF with no message) and returns the child's pid, or
/// cleans up after it.
fn spawn_in_pid_ns(
    cfg: &Config,
    layout: &Layout,
    undo: Undo,
    dev_null: Option<&File>,
) -> Result<libc::pid_t, Box<Failure>> {
    if let Err(e) = namespaces::unshare_pid() {
        return Err(fail(JailError::PidNs(e), undo));
    }
    let (mut reader, mut writer) = match pipe() {
        Ok(p) => p,
        Err(e) => return Err(fail(JailError::Pipe(e), undo)),
    };
    let (mut go_reader, mut go_writer) = match pipe() {
        Ok(p) => p,
        Err(e) => return Err(fail(JailError::Pipe(e), undo)),
    };
    let pid = match namespaces::fork() {
        Ok(pid) => pid,
        Err(e) => return Err(fail(JailError::PidNs(e), undo)),
    };
    if pid == 0 {
        drop((reader, go_writer));
        // Wait for the parent's go-ahead (sent once the pid file exists); EOF means it died.
        let mut go = [0u8; 1];
        let error = if go_reader.read(&mut go).is_ok_and(|n| n == 1) {
            match namespaces::pivot_into(&layout.root) {
                Err(e) => JailError::Pivot(e),
                Ok(()) => finish(cfg, layout, dev_null),
            }
        } else {
            JailError::Child {
                pid: 0,
                message: "the jailer exited before the go-ahead".into(),
            }
        };
        // Best effort: the parent reports a child that died silently too.
        let _ = writer.write_all(error.to_string().as_bytes());
        // SAFETY: ends the child without running the parent's exit handlers twice.
        unsafe { libc::_exit(1) };
    }
    drop((writer, go_reader));
    // The pid file is written before the program runs, so it cannot be a link the program planted.
    let path = layout.root.join(format!("{}.pid", layout.exec_name));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{pid}\n").as_bytes()));
    if let Err(source) = written {
        drop(go_writer);
        reap(pid);
        return Err(fail(JailError::PidFile { path, source }, undo));
    }
    let go = go_writer.write_all(b"g");
    drop(go_writer);
    let mut message = String::new();
    let read = reader.read_to_string(&mut message);
    if go.is_ok() && read.is_ok() && message.is_empty() {
        return Ok(pid);
    }
    reap(pid);
    if message.is_empty() {
        message = "exited before exec without saying why".into();
    }
    Err(fail(JailError::Child { pid, message }, undo))
}

fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: blocking wait on our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// A close-on-exec pipe.
fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-int array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two descriptors; each is owned once.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}
