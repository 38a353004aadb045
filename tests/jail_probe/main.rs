//! `jail_probe`: a tiny statically linked program the jailer tests run inside a jail. It reports
//! what it sees, one `key=value` per line, on stdout (or into a file with `--out`).
//!
//! Usage: `jail_probe [--check PATH]... [--forks N] [--out FILE] [--wait]`
//! - `--check PATH`: report whether PATH exists (as `exists:PATH=true|false`);
//! - `--forks N`: try to start N children (that wait for the parent), report how many started;
//! - `--out FILE`: write the report to FILE instead of stdout;
//! - `--wait`: after the report, wait until stdin reaches EOF (so a test can inspect the process);
//! - `--alloc MIB`: after the report, allocate and touch MIB MiB, then print `alloc=done`.
//!
//! Built by tests/build.rs with `-C target-feature=+crt-static`, without the libc crate: the few C
//! functions it needs are declared here.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::io::{Read, Write};
use std::path::Path;

#[repr(C)]
struct Rlimit {
    cur: u64,
    max: u64,
}

#[repr(C)]
struct IfNameIndex {
    index: c_uint,
    name: *mut c_char,
}

unsafe extern "C" {
    fn getuid() -> u32;
    fn geteuid() -> u32;
    fn getgid() -> u32;
    fn getegid() -> u32;
    fn getgroups(size: c_int, list: *mut u32) -> c_int;
    fn getpid() -> c_int;
    fn getsid(pid: c_int) -> c_int;
    fn getrlimit(resource: c_int, rlim: *mut Rlimit) -> c_int;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn fork() -> c_int;
    fn pipe(fds: *mut c_int) -> c_int;
    fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize;
    fn close(fd: c_int) -> c_int;
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn _exit(code: c_int) -> !;
    fn if_nameindex() -> *mut IfNameIndex;
    fn if_freenameindex(p: *mut IfNameIndex);
}

const RLIMIT_FSIZE: c_int = 1;
const RLIMIT_NOFILE: c_int = 7;
const F_GETFD: c_int = 1;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut checks = Vec::new();
    let mut forks = None;
    let mut out = None;
    let mut wait = false;
    let mut alloc = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => checks.push(it.next().expect("--check PATH").clone()),
            "--forks" => forks = Some(it.next().expect("--forks N").parse::<u32>().expect("N")),
            "--out" => out = Some(it.next().expect("--out FILE").clone()),
            "--wait" => wait = true,
            "--alloc" => {
                alloc = Some(
                    it.next()
                        .expect("--alloc MIB")
                        .parse::<usize>()
                        .expect("MIB"),
                )
            }
            other => panic!("jail_probe: unknown argument {other}"),
        }
    }

    let mut r = String::new();
    // SAFETY: plain libc calls with valid pointers to local buffers; the interface list is walked
    // up to its zero-index terminator and freed once.
    unsafe {
        r += &format!("uid={} euid={}\n", getuid(), geteuid());
        r += &format!("gid={} egid={}\n", getgid(), getegid());
        let mut groups = [0u32; 64];
        let n = getgroups(64, groups.as_mut_ptr());
        r += &format!("groups={:?}\n", &groups[..n.max(0) as usize]);
        r += &format!("pid={}\n", getpid());
        r += &format!("sid={}\n", getsid(0));
        for (name, res) in [("nofile", RLIMIT_NOFILE), ("fsize", RLIMIT_FSIZE)] {
            let mut l = Rlimit { cur: 0, max: 0 };
            getrlimit(res, &mut l);
            r += &format!("rlimit:{name}={} {}\n", l.cur, l.max);
        }
        let fds: Vec<c_int> = (0..4096).filter(|&fd| fcntl(fd, F_GETFD) >= 0).collect();
        r += &format!("fds={fds:?}\n");
        let mut ifs = Vec::new();
        let list = if_nameindex();
        if !list.is_null() {
            let mut p = list;
            while (*p).index != 0 {
                ifs.push(CStr::from_ptr((*p).name).to_string_lossy().into_owned());
                p = p.add(1);
            }
            if_freenameindex(list);
        }
        r += &format!("interfaces={}\n", ifs.join(","));
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let stdio: Vec<String> = (0..3)
        .map(|fd| {
            // The jail has no /proc: fstat through a duplicate File of the descriptor.
            let f = std::mem::ManuallyDrop::new(unsafe_file(fd));
            match f.metadata() {
                Ok(m) if m.file_type().is_char_device() => {
                    format!("chr{}:{}", m.rdev() >> 8 & 0xfff, m.rdev() & 0xff)
                }
                Ok(m) if m.file_type().is_fifo() => "fifo".to_string(),
                Ok(_) => "other".to_string(),
                Err(_) => "closed".to_string(),
            }
        })
        .collect();
    r += &format!("stdio={}\n", stdio.join(","));
    r += &format!(
        "cwd={}\n",
        std::env::current_dir()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|e| format!("error {e}"))
    );
    let mut files = Vec::new();
    list_tree(Path::new("/"), &mut files);
    r += &format!("files={}\n", files.join(","));
    for c in &checks {
        r += &format!("exists:{c}={}\n", Path::new(c).exists());
    }
    if let Some(n) = forks {
        r += &format!("forks={}\n", try_forks(n));
    }
    match &out {
        Some(path) => std::fs::write(path, &r).expect("writing --out"),
        None => {
            let mut so = std::io::stdout();
            so.write_all(r.as_bytes()).expect("stdout");
            so.flush().expect("stdout");
        }
    }
    if let Some(mib) = alloc {
        let mut v = vec![0u8; mib << 20];
        for page in v.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&v);
        println!("alloc=done");
    }
    if wait {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
    }
}

/// A `File` over descriptor `fd` (never dropped by the caller, so `fd` stays open).
fn unsafe_file(fd: c_int) -> std::fs::File {
    use std::os::fd::FromRawFd;
    // SAFETY: wrapped in ManuallyDrop by the caller, so the descriptor is not closed; a closed
    // descriptor only makes metadata() fail.
    unsafe { std::fs::File::from_raw_fd(fd) }
}

/// Every path under `dir`, depth first, sorted (at most 200: a jail holds a handful).
fn list_tree(dir: &Path, out: &mut Vec<String>) {
    if out.len() >= 200 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if out.len() >= 200 {
            out.push("...".into());
            return;
        }
        out.push(p.display().to_string());
        if p.is_dir() && !p.is_symlink() {
            list_tree(&p, out);
        }
    }
}

/// Starts up to `n` children that block until the parent closes a pipe; returns how many started.
fn try_forks(n: u32) -> u32 {
    let mut fds = [0 as c_int; 2];
    // SAFETY: fds is a two-int array; the children only read and exit.
    unsafe {
        if pipe(fds.as_mut_ptr()) != 0 {
            return 0;
        }
        let mut started = Vec::new();
        for _ in 0..n {
            match fork() {
                0 => {
                    close(fds[1]);
                    let mut b = 0u8;
                    read(fds[0], (&mut b as *mut u8).cast(), 1);
                    _exit(0);
                }
                pid if pid > 0 => started.push(pid),
                _ => break,
            }
        }
        close(fds[1]);
        close(fds[0]);
        for pid in &started {
            let mut st = 0;
            waitpid(*pid, &mut st, 0);
        }
        started.len() as u32
    }
}
