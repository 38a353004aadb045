//! Helpers for Veil's integration tests: locate the built binaries, run them as processes with a
//! time limit (and the common checks on what they print: refusals, digests, the independent
//! `sev-snp-measure`), make temporary files, and build tiny test kernels.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The directory holding the workspace's built binaries (`target/<profile>`).
///
/// Test executables live in `target/<profile>/deps`; the binaries one level up. Build them first
/// with `cargo build --workspace --bins` (the README's test command does).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("a test knows its own executable path");
    let deps = exe
        .parent()
        .expect("test executables live in target/<profile>/deps");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// Path of a workspace binary such as `veil` or `veil-jailer`; fails the test if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

/// What a finished process did.
#[derive(Debug)]
pub struct Output {
    /// Exit status (None if killed by a signal).
    pub status: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Panics with the whole output unless the status is `want`.
    pub fn expect_status(&self, want: i32) -> &Self {
        assert_eq!(
            self.status,
            Some(want),
            "unexpected status; output: {self:#?}"
        );
        self
    }

    /// The value of `PROBE info <key>=<value>` on stdout.
    pub fn probe_info(&self, key: &str) -> Option<String> {
        let prefix = format!("PROBE info {key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(|v| v.trim().to_string()))
    }
}

/// Runs `cmd` to completion, killing it (and failing the test) after `limit`.
pub fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    let mut out = child.stdout.take().expect("stdout is piped");
    let mut err = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish within {limit:?}; stdout so far: {}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status: status.code(),
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Runs `veil` with `args` (60 s limit).
pub fn veil<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    let mut cmd = Command::new(bin("veil"));
    cmd.args(args);
    run_with_limit(cmd, Duration::from_secs(60))
}

/// Runs `veil <args>` and asserts that it exits with `status` and names every one of `words` on
/// stderr; a failure shows the arguments and the whole output. Returns the output.
pub fn veil_fails(args: &[&str], status: i32, words: &[&str]) -> Output {
    let out = veil(args);
    assert_eq!(out.status, Some(status), "veil {args:?}: {out:#?}");
    for w in words {
        assert!(
            out.stderr.contains(w),
            "veil {args:?}: stderr lacks {w:?}: {out:#?}"
        );
    }
    out
}

/// The digest `veil measure <args>` prints; fails the test, showing the arguments and the
/// output, unless it succeeds.
pub fn veil_measure(args: &[&str]) -> String {
    let mut all = vec!["measure"];
    all.extend_from_slice(args);
    let out = veil(&all);
    assert_eq!(out.status, Some(0), "veil {all:?} failed: {out:#?}");
    out.stdout.trim().to_string()
}

/// The digest `sev-snp-measure --mode snp <args>` prints (the independent oracle); fails the
/// test, showing the arguments and stderr, unless it succeeds. Check [`have_tool`] first.
pub fn sev_snp_measure(args: &[&str]) -> String {
    let out = Command::new("sev-snp-measure")
        .args(["--mode", "snp"])
        .args(args)
        .output()
        .expect("sev-snp-measure starts");
    assert!(
        out.status.success(),
        "sev-snp-measure {args:?} failed: {out:?}"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Panics with its stderr unless a finished process exited successfully.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Debian's OVMF, the firmware the confidential-launch tests measure.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";

/// `--platform sev-snp` on [`OVMF`] with the plain EPYC CPU type: the base of many runs.
pub const SNP_OVMF_EPYC: [&str; 6] = [
    "--platform",
    "sev-snp",
    "--firmware",
    OVMF,
    "--cpu-type",
    "EPYC",
];

/// Whether [`OVMF`] is installed; prints why the test is skipped when it is not.
pub fn ovmf_present() -> bool {
    if Path::new(OVMF).is_file() {
        return true;
    }
    eprintln!("skipped: {OVMF} is missing (apt-get install ovmf)");
    false
}

/// A test path as the `&str` an argument list wants (test paths are UTF-8).
pub fn utf8(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// A temporary directory, removed when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty temporary directory for one test.
pub fn temp_dir(name: &str) -> TempDir {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "veil-test-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    TempDir(dir)
}

/// Writes `bytes` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("writing a test file");
    path
}

/// Runs `veil run --kernel <kernel> <flags>`.
pub fn run_kernel(kernel: &Path, flags: &[&str]) -> Output {
    veil(&[&["run", "--kernel", utf8(kernel)][..], flags].concat())
}

/// Runs `veil run` on a [`tiny_pvh_kernel`] running `code32`, written into a fresh temporary
/// directory named after `name`.
pub fn run_tiny(name: &str, code32: &[u8]) -> Output {
    let dir = temp_dir(name);
    run_kernel(&write_file(&dir, "kernel", &tiny_pvh_kernel(code32)), &[])
}

/// Where [`tiny_pvh_kernel`] loads its code.
pub const TINY_LOAD_ADDR: u64 = 0x10_0000;

/// A minimal ELF64 kernel with a PVH note whose 32-bit entry runs `code32` at 1 MiB (flat
/// protected mode, paging off). Used to make guests that reset, triple-fault, and so on.
pub fn tiny_pvh_kernel(code32: &[u8]) -> Vec<u8> {
    const CODE_OFF: u64 = 0x1000;
    let mut f = Vec::new();
    // ELF header.
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // x86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&TINY_LOAD_ADDR.to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&2u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // no sections
    let note_off = 64 + 2 * 56u64;
    let mut phdr = |ty: u32, flags: u32, off: u64, addr: u64, size: u64, align: u64| {
        f.extend_from_slice(&ty.to_le_bytes());
        f.extend_from_slice(&flags.to_le_bytes());
        for v in [off, addr, addr, size, size, align] {
            f.extend_from_slice(&v.to_le_bytes());
        }
    };
    phdr(1, 5, CODE_OFF, TINY_LOAD_ADDR, code32.len() as u64, 0x1000); // PT_LOAD
    phdr(4, 4, note_off, 0, 20, 4); // PT_NOTE
    // Note: name "Xen", type 18 (XEN_ELFNOTE_PHYS32_ENTRY), 4-byte entry address.
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&4u32.to_le_bytes());
    f.extend_from_slice(&18u32.to_le_bytes());
    f.extend_from_slice(b"Xen\0");
    f.extend_from_slice(&(TINY_LOAD_ADDR as u32).to_le_bytes());
    f.resize(CODE_OFF as usize, 0);
    f.extend_from_slice(code32);
    f
}

/// 32-bit code snippets for [`tiny_pvh_kernel`].
pub mod code {
    /// `hlt; jmp .-1`: wait forever.
    pub const HALT: &[u8] = &[0xf4, 0xeb, 0xfd];
    /// Writes `v` to the debug-exit port 0xf4, then halts.
    pub fn debug_exit(v: u8) -> Vec<u8> {
        let mut c = vec![0xb0, v, 0xe6, 0xf4];
        c.extend_from_slice(HALT);
        c
    }
    /// Pulses the i8042 reset line (`0xfe` to port 0x64), then halts.
    pub fn i8042_reset() -> Vec<u8> {
        let mut c = vec![0xb0, 0xfe, 0xe6, 0x64];
        c.extend_from_slice(HALT);
        c
    }
    /// Writes `text` to COM1 with one `rep outsb` (string I/O), then exits with status 0.
    pub fn print_rep_outsb(text: &[u8]) -> Vec<u8> {
        const MSG_OFF: u32 = 0x80;
        let mut c = vec![0xbe]; // mov esi, msg
        c.extend_from_slice(&(super::TINY_LOAD_ADDR as u32 + MSG_OFF).to_le_bytes());
        c.push(0xb9); // mov ecx, len
        c.extend_from_slice(&(text.len() as u32).to_le_bytes());
        c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
        c.extend_from_slice(&[0xf3, 0x6e]); // rep outsb
        c.extend(debug_exit(0));
        c.resize(MSG_OFF as usize, 0x90);
        c.extend_from_slice(text);
        c
    }
    /// Writes SLP_TYP 5 with SLP_EN to the ACPI sleep control register (port 0x600): power off.
    pub const ACPI_POWER_OFF: &[u8] = &[0x66, 0xba, 0x00, 0x06, 0xb0, 0x34, 0xee, 0xf4, 0xeb, 0xfd];
    /// `ud2` with an empty IDT: #UD -> #GP -> #DF -> triple fault.
    pub const TRIPLE_FAULT: &[u8] = &[0x0f, 0x0b];
    /// Jumps into the MMIO hole, where there is no memory to fetch instructions from.
    pub const EXECUTE_MMIO: &[u8] = &[0xb8, 0x00, 0x00, 0x00, 0xd0, 0xff, 0xe0];
    /// Writes `text` to COM1 byte by byte, then exits with status 0 through port 0xf4.
    pub fn print(text: &[u8]) -> Vec<u8> {
        let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
        for b in text {
            c.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
        }
        c.extend(debug_exit(0));
        c
    }

    /// Takes an interrupt from the serial port through the IOAPIC and the local APIC: sets a
    /// stack, enables the LAPIC, routes IOAPIC pin 4 to vector 0x30 (edge, physical, APIC 0), installs an IDT
    /// gate for it, enables the UART's THR-empty interrupt, sends `!` and halts with interrupts
    /// on. The handler writes 0x33 to the debug-exit port.
    pub fn serial_interrupt() -> Vec<u8> {
        let mut c = vec![0xbc, 0x00, 0x00, 0x09, 0x00]; // mov esp, 0x90000
        let mov_mem = |c: &mut Vec<u8>, addr: u32, v: u32| {
            c.extend_from_slice(&[0xc7, 0x05]);
            c.extend_from_slice(&addr.to_le_bytes());
            c.extend_from_slice(&v.to_le_bytes());
        };
        mov_mem(&mut c, 0xfee0_00f0, 0x1ff); // LAPIC SVR: software enable
        mov_mem(&mut c, 0xfec0_0000, 0x18); // IOREGSEL: pin 4, low dword
        mov_mem(&mut c, 0xfec0_0010, 0x30); // vector 0x30, fixed, edge, unmasked
        mov_mem(&mut c, 0x0010_1180, 0x0008_0100); // IDT[0x30]: offset 0x100100, CS 0x08
        mov_mem(&mut c, 0x0010_1184, 0x0010_8e00); // present, 32-bit interrupt gate
        c.extend_from_slice(&[0x0f, 0x01, 0x1d, 0x00, 0x02, 0x10, 0x00]); // lidt [0x100200]
        c.extend_from_slice(&[0x66, 0xba, 0xf9, 0x03, 0xb0, 0x02, 0xee]); // IER = THR empty
        c.push(0xfb); // sti
        c.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03, 0xb0, b'!', 0xee]); // send '!'
        c.extend_from_slice(HALT);
        c.resize(0x100, 0x90);
        c.extend_from_slice(&[0xb0, 0x33, 0xe6, 0xf4]); // handler: exit 0x33
        c.extend_from_slice(HALT);
        c.resize(0x200, 0x90);
        c.extend_from_slice(&[0xff, 0x01, 0x00, 0x10, 0x10, 0x00]); // IDTR: limit, base 0x101000
        c
    }
}

pub mod ovmf_image;

/// Whether an external tool runs (`tool --version` or, as openssl wants, `tool version` exits
/// 0); tests that compare against it are skipped with a printed reason when it does not.
pub fn have_tool(tool: &str) -> bool {
    ["--version", "version"].iter().any(|arg| {
        std::process::Command::new(tool)
            .arg(arg)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp directory is writable");
    dir
}
