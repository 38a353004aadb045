//! Veil's benchmark harness: run a program as a child, measure its exec-to-exit wall time and
//! peak RSS, and summarize runs by their median. Used by `boot_bench` (see benches/run-boot.sh).

use std::fs::File;
use std::io::{Read, Write as _};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod disk_floor;

/// One finished child process.
#[derive(Debug, Clone)]
pub struct Measured {
    /// From just before `fork`/`exec` to `wait4` returning.
    pub wall: Duration,
    /// The child's peak resident set (`ru_maxrss` from `wait4`), in KiB.
    pub max_rss_kib: u64,
    /// The child's CPU time, user plus system (`ru_utime + ru_stime` from `wait4`).
    pub cpu: Duration,
    /// How it ended.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

/// Writes a raw image of `mib` MiB filled with a non-zero pattern (written, so it is in the page
/// cache).
pub fn make_image(path: &Path, mib: u64) -> Result<()> {
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut chunk = vec![0u8; 1 << 20];
    for m in 0..mib {
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (i as u64 ^ m) as u8 | 1;
        }
        f.write_all(&chunk)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    f.sync_all()
        .with_context(|| format!("syncing {}", path.display()))
}

/// The value `v` of a count flag such as `--runs`: a whole number, at least 1.
pub fn count_arg(flag: &str, v: &str) -> Result<usize> {
    let n: usize = v.parse().with_context(|| format!("{flag} {v}"))?;
    if n == 0 {
        bail!("{flag} must be at least 1");
    }
    Ok(n)
}

/// Runs `f` in a fresh scratch directory `$TMPDIR/veil-<name>-<pid>`, removed afterwards
/// whatever `f` returns.
pub fn in_scratch_dir<T>(name: &str, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
    let scratch = std::env::temp_dir().join(format!("veil-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let result = f(&scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

/// Runs `cmd` to its end with stdin empty and stdout/stderr captured in files under `scratch`,
/// and measures it with `wait4`.
///
/// The child is started with `fork`, not `vfork`/`posix_spawn`: at `exec` the kernel folds the
/// peak RSS of the address space being replaced into the child's `ru_maxrss`, and after `vfork`
/// that is the harness's own address space (its whole peak, ~2.5 MiB). After `fork` it is a copy
/// holding only the harness's anonymous pages (see [`harness_anon_rss_kib`]), which is the
/// smallest RSS this method can report.
pub fn run_measured(mut cmd: Command, scratch: &Path) -> Result<Measured> {
    let out_path = scratch.join("stdout");
    let err_path = scratch.join("stderr");
    let out =
        File::create(&out_path).with_context(|| format!("creating {}", out_path.display()))?;
    let err =
        File::create(&err_path).with_context(|| format!("creating {}", err_path.display()))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: the hook does nothing (so nothing async-signal-unsafe runs between fork and exec);
    // its presence makes std fork instead of using posix_spawn, for the reason above.
    unsafe { cmd.pre_exec(|| Ok(())) };
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = i32::try_from(child.id()).context("child pid out of range")?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child `pid`; `status` and `usage` are valid for writes. `child`
    // is not waited on through std afterwards (it is only dropped, which does not wait).
    let ret = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    if ret != pid {
        bail!("wait4 for {cmd:?}: {}", std::io::Error::last_os_error());
    }
    drop(child);
    let read = |p: &Path| -> Result<String> {
        let mut s = String::new();
        File::open(p)
            .and_then(|mut f| f.read_to_string(&mut s))
            .with_context(|| format!("reading {}", p.display()))?;
        Ok(s)
    };
    Ok(Measured {
        wall,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        cpu: timeval(usage.ru_utime) + timeval(usage.ru_stime),
        status: ExitStatus::from_raw(status),
        stdout: read(&out_path)?,
        stderr: read(&err_path)?,
    })
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
        + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
}

/// This process's anonymous resident memory (`RssAnon` in `/proc/self/status`), KiB: the
/// least `ru_maxrss` that [`run_measured`] can report for a child.
pub fn harness_anon_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    })
}

/// The first number after `key` in `text` (e.g. `start_to_guest_ms=4.21` or
/// `start_to_guest_ms: 4.21 ms`), if any line names it.
pub fn number_after(text: &str, key: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = &line[line.find(key)? + key.len()..];
        let start = rest.find(|c: char| c.is_ascii_digit())?;
        let num: String = rest[start..]
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        num.parse().ok()
    })
}

/// A three-instruction PVH guest as an ELF64 file: at 1 MiB, `out 0x80, al`, then
/// `xor eax, eax; out 0xf4, al` (debug exit with status 0), then `hlt`. The smallest guest that
/// marks its start and ends the VMM; the reference guest of the performance docs.
pub fn tiny_pvh_elf() -> Vec<u8> {
    const LOAD: u64 = 0x10_0000;
    const CODE: [u8; 7] = [0xe6, 0x80, 0x31, 0xc0, 0xe6, 0xf4, 0xf4];
    let ehdr = 64u64;
    let phdrs = 2 * 56u64;
    let note_off = ehdr + phdrs;
    // Note: namesz 4, descsz 4, type 18 (XEN_ELFNOTE_PHYS32_ENTRY), "Xen\0", entry.
    let mut note = Vec::new();
    for v in [4u32, 4, 18] {
        note.extend_from_slice(&v.to_le_bytes());
    }
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&(LOAD as u32).to_le_bytes());
    let code_off = 0x1000u64;

    let mut f = Vec::new();
    f.extend_from_slice(b"\x7fELF\x02\x01\x01");
    f.resize(16, 0);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    f.extend_from_slice(&LOAD.to_le_bytes()); // e_entry
    f.extend_from_slice(&ehdr.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for v in [64u16, 56, 2, 64, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        f.extend_from_slice(&v.to_le_bytes());
    }
    let phdr = |f: &mut Vec<u8>, kind: u32, flags: u32, off: u64, addr: u64, size: u64| {
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&flags.to_le_bytes());
        for v in [off, addr, addr, size, size, 4] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(&mut f, 1, 5, code_off, LOAD, CODE.len() as u64); // PT_LOAD, R+X
    phdr(&mut f, 4, 4, note_off, 0, note.len() as u64); // PT_NOTE
    f.extend_from_slice(&note);
    f.resize(code_off as usize, 0);
    f.extend_from_slice(&CODE);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn numbers_after_keys() {
        let text = "PROBE PASS\nveil: start_to_guest_ms=4.25\n";
        assert_eq!(number_after(text, "start_to_guest_ms"), Some(4.25));
        assert_eq!(
            number_after("boot timer: start_to_guest_ms: 12 ms", "start_to_guest_ms"),
            Some(12.0)
        );
        assert_eq!(number_after("nothing here", "start_to_guest_ms"), None);
    }

    #[test]
    fn measures_a_real_child() {
        let dir = std::env::temp_dir().join(format!("veil-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let m = run_measured(cmd, &dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(m.status.code(), Some(3));
        assert_eq!((m.stdout.as_str(), m.stderr.as_str()), ("out\n", "err\n"));
        assert!(m.max_rss_kib > 0);
    }

    #[test]
    fn child_rss_is_its_own_not_the_harness_peak() {
        // Grow this process's peak by 64 MiB of file-backed-free anonymous memory, release it,
        // then measure a tiny child: it must not inherit that peak.
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        drop(big);
        let dir = std::env::temp_dir();
        let m = run_measured(Command::new("true"), &dir).unwrap();
        assert!(
            m.max_rss_kib < 16 << 10,
            "true measured at {} KiB",
            m.max_rss_kib
        );
    }

    #[test]
    fn tiny_guest_is_a_pvh_elf() {
        let elf = tiny_pvh_elf();
        assert_eq!(&elf[..4], b"\x7fELF");
        let note = &elf[64 + 112..64 + 112 + 20];
        assert_eq!(&note[12..16], b"Xen\0");
        assert_eq!(
            u32::from_le_bytes(note[16..20].try_into().unwrap()),
            0x10_0000
        );
        assert_eq!(&elf[0x1000..], [0xe6, 0x80, 0x31, 0xc0, 0xe6, 0xf4, 0xf4]);
    }
}
