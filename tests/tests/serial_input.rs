//! Host input reaches the guest: bytes written to the real `veil`'s stdin come back from the
//! probe guest exactly, through COM1's receive interrupt (`serial_in`) or the virtio-console's
//! receive queue on both transports (`console_in`), including more than the UART's 64-byte FIFO
//! holds (backpressure: nothing lost). Stdin at its end starts no reader; the reader thread is
//! filtered; a terminal on stdin is raw during the run and restored after it, a guest crash and
//! a failed launch. All under the default seccomp filters.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use veil_tests::{Output, bin};

/// Most a test waits for `veil` to end.
const LIMIT: Duration = Duration::from_secs(60);

/// Waits for `child` (stdout and stderr piped) to end within [`LIMIT`], killing it otherwise.
fn collect(child: Child) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(LIMIT) {
        Ok(out) => out.expect("waiting for veil"),
        Err(_) => {
            // SAFETY: plain kill(2) of the child we started, which has not been reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("veil did not end within {LIMIT:?}");
        }
    };
    Output {
        status: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn veil_cmd(args: &[&str], stdin: Stdio) -> Command {
    let mut cmd = Command::new(bin("veil"));
    cmd.arg("run")
        .args(["--memory", "128M"])
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `veil run <args>` with `input` written to its stdin pipe, which is closed right after
/// (`close`) or only once `veil` ended.
fn run_fed(args: &[&str], input: &[u8], close: bool) -> Output {
    let mut child = veil_cmd(args, Stdio::piped()).spawn().expect("veil starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let written = stdin.write_all(&input);
        (written, (!close).then_some(stdin))
    });
    let out = collect(child);
    let (written, _open_until_now) = writer.join().expect("the writer thread");
    written.unwrap_or_else(|e| panic!("writing veil's stdin: {e}; {out:#?}"));
    out
}

/// `len` bytes of every value but the newline, in a pattern that is not a multiple of 64.
fn binary_input(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 % 251) as u8)
        .map(|b| if b == b'\n' { 0xff } else { b })
        .collect()
}

fn with_newline(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.push(b'\n');
    v
}

/// Asserts the probe passed and reported `want` (hex) under `<check>` and `<check>_bytes`.
fn assert_echoed(out: &Output, check: &str, want: &[u8]) {
    out.expect_status(0);
    assert!(
        out.stdout
            .contains(&format!("PROBE ok {check}: {} bytes", want.len())),
        "{out:#?}"
    );
    assert_eq!(
        out.probe_info(check).as_deref(),
        Some(hex::encode(want).as_str()),
        "{out:#?}"
    );
    assert_eq!(
        out.probe_info(&format!("{check}_bytes")),
        Some(want.len().to_string())
    );
}

#[test]
fn serial_input_reaches_the_guest_through_its_interrupt() {
    // The console exists but writes a file: COM1 takes stdin.
    let dir = veil_tests::temp_dir("serial-input");
    let console = format!("file={}", dir.join("console.txt").display());
    let line = b"hello from the host, via COM1";
    let out = run_fed(
        &["--console", &console, "--cmdline", "probe.run=serial_in"],
        &with_newline(line),
        false,
    );
    assert_echoed(&out, "serial_in", line);
    let interrupts: u64 = out
        .probe_info("serial_in_interrupts")
        .and_then(|v| v.parse().ok())
        .expect("serial_in_interrupts");
    assert!(interrupts >= 1, "{out:#?}");
}

#[test]
fn serial_input_sent_after_the_guest_waits_interrupts_it() {
    // Written only once the probe has enabled the receive interrupt: the arrival itself must
    // raise it.
    let mut child = veil_cmd(&["--cmdline", "probe.run=serial_in"], Stdio::piped())
        .spawn()
        .expect("veil starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    let lines = std::thread::spawn(move || {
        let mut seen = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("PROBE info serial_in_ready=1") {
                let _ = tx.send(());
            }
            seen.push_str(&line);
            seen.push('\n');
        }
        seen
    });
    let ready = rx.recv_timeout(LIMIT);
    // Written either way, so that the guest ends.
    stdin
        .write_all(b"late line\n")
        .expect("writing veil's stdin");
    let mut out = collect(child);
    // `collect` saw no stdout: it was taken above.
    out.stdout = lines.join().expect("the stdout reader");
    ready.unwrap_or_else(|_| panic!("no serial_in_ready line; {out:#?}"));
    assert_echoed(&out, "serial_in", b"late line");
}

#[test]
fn serial_input_longer_than_the_fifo_arrives_whole_before_stdin_ends() {
    // 1000 bytes through a 64-byte FIFO, and stdin ends right after them: every byte read
    // before the end still reaches the guest.
    let input = binary_input(1000);
    let out = run_fed(
        &["--cmdline", "probe.run=serial_in"],
        &with_newline(&input),
        true,
    );
    assert_echoed(&out, "serial_in", &input);
}

fn console_input(transport: &str) {
    // The console is stdio too, so it, not COM1, takes stdin. 300 bytes span several of the
    // probe's 64-byte receive buffers.
    let input = binary_input(300);
    let out = run_fed(
        &[
            "--console",
            "stdio",
            "--transport",
            transport,
            "--cmdline",
            "probe.run=console_in",
        ],
        &with_newline(&input),
        false,
    );
    assert_echoed(&out, "console_in", &input);
    assert_eq!(
        out.probe_info("console_in_transport").as_deref(),
        Some(transport)
    );
}

#[test]
fn console_input_reaches_the_guest_pci() {
    console_input("pci");
}

#[test]
fn console_input_reaches_the_guest_mmio() {
    console_input("mmio");
}

/// A probe that reports its boot, then spins for minutes (the test kills it).
const LONG_RUN: &str = "probe.run=boot,loop probe.loop=200000000000";

/// Runs `check` on a `veil run` of the long-running probe with `stdin`, once the probe printed
/// `PROBE ok boot`; the process is killed afterwards, whether `check` passed or not.
fn while_running(stdin: Stdio, check: impl FnOnce(u32)) {
    let mut child = veil_cmd(&["--cmdline", LONG_RUN], stdin)
        .stderr(Stdio::null())
        .spawn()
        .expect("veil starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("PROBE ok boot") {
                let _ = tx.send(());
            }
        }
    });
    let pid = child.id();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        rx.recv_timeout(LIMIT)
            .expect("the probe boots within the limit");
        check(pid);
    }));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// The `/proc` status text of each thread of `pid`.
fn thread_statuses(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("veil is alive")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("status")).ok())
        .collect()
}

fn field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

fn is_reader(status: &str) -> bool {
    field(status, "Name:") == Some("veil-stdin")
}

#[test]
fn stdin_at_its_end_starts_no_reader_and_changes_nothing() {
    while_running(Stdio::null(), |pid| {
        let threads = thread_statuses(pid);
        assert!(!threads.iter().any(|s| is_reader(s)), "{threads:#?}");
    });
    // The console and COM1 work as without input.
    let out = collect(
        veil_cmd(
            &["--console", "stdio", "--cmdline", "probe.run=console"],
            Stdio::null(),
        )
        .spawn()
        .expect("veil starts"),
    );
    out.expect_status(0);
    assert!(
        out.stdout
            .contains("virtio-console: hello from the probe\n")
    );
    assert!(out.stdout.ends_with("PROBE PASS\r\n"), "{out:#?}");
}

#[test]
fn the_reader_thread_runs_under_its_filter() {
    // The probe waits for a line on COM1; meanwhile the reader's filter is checked.
    let mut child = veil_cmd(&["--cmdline", "probe.run=serial_in"], Stdio::piped())
        .spawn()
        .expect("veil starts");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // Launch returns only after the reader installed its filter; poll anyway, bounded.
    let start = Instant::now();
    let status = loop {
        if let Some(s) = thread_statuses(child.id())
            .into_iter()
            .find(|s| is_reader(s))
        {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(30) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Let the probe finish either way, so that no guest is left spinning.
    stdin
        .write_all(b"filtered\n")
        .expect("writing veil's stdin");
    let out = collect(child);
    let status = status.expect("a veil-stdin thread within 30 s");
    assert_eq!(field(&status, "Seccomp:"), Some("2"), "{status}");
    // Started before the launching thread filtered itself: its own filter only.
    if let Some(count) = field(&status, "Seccomp_filters:") {
        assert_eq!(count, "1", "{status}");
    }
    assert_echoed(&out, "serial_in", b"filtered");
}

/// A pseudo-terminal: (master, slave).
fn pty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two descriptors; the name, termios and size pointers may be NULL.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created and belong to nobody else.
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// (input, local, control, output) flags and the control characters of a terminal.
fn settings(fd: &OwnedFd) -> (u32, u32, u32, u32, Vec<u8>) {
    // SAFETY: termios is plain data that tcgetattr fills.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: a valid termios for a terminal descriptor we own.
    assert_eq!(unsafe { libc::tcgetattr(fd.as_raw_fd(), &mut t) }, 0);
    (t.c_iflag, t.c_lflag, t.c_cflag, t.c_oflag, t.c_cc.to_vec())
}

/// Runs `veil run <args>` with the slave of a new pty as stdin; `during` runs while it does,
/// with the master. Returns the output; asserts the terminal's settings are back afterwards.
fn run_on_pty(args: &[&str], during: impl FnOnce(&mut std::fs::File, &OwnedFd)) -> Output {
    let (master, slave) = pty();
    let before = settings(&slave);
    let stdin = Stdio::from(slave.try_clone().expect("dup of the pty"));
    let child = veil_cmd(args, stdin).spawn().expect("veil starts");
    let mut master = std::fs::File::from(master);
    during(&mut master, &slave);
    let out = collect(child);
    assert_eq!(
        settings(&slave),
        before,
        "terminal settings after the run; {out:#?}"
    );
    out
}

#[test]
fn a_terminal_is_raw_during_the_run_and_restored_after() {
    let out = run_on_pty(&["--cmdline", "probe.run=serial_in"], |master, slave| {
        // Wait (bounded) for raw mode, then type a line: no echo, no line editing, ^C is a byte.
        let start = Instant::now();
        while settings(slave).1 & libc::ECHO != 0 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "stdin never went raw"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let (_, lflag, ..) = settings(slave);
        assert_eq!(lflag & (libc::ICANON | libc::ISIG), 0);
        master.write_all(b"typed\x03\x7f\n").unwrap();
    });
    assert_echoed(&out, "serial_in", b"typed\x03\x7f");
}

#[test]
fn the_terminal_is_restored_after_a_guest_crash_and_a_failed_launch() {
    let dir = veil_tests::temp_dir("serial-input-tty");
    let kernel = veil_tests::write_file(
        &dir,
        "triple",
        &veil_tests::tiny_pvh_kernel(veil_tests::code::TRIPLE_FAULT),
    );
    let out = run_on_pty(&["--kernel", kernel.to_str().unwrap()], |_, _| {});
    out.expect_status(1);
    assert!(out.stderr.contains("triple fault"), "{out:#?}");
    // The disk cannot be opened: the launch fails after stdin was claimed.
    let missing = dir.join("no-such-disk.img");
    let out = run_on_pty(
        &["--disk", &format!("path={}", missing.display())],
        |_, _| {},
    );
    out.expect_status(1);
    assert!(out.stderr.contains("no-such-disk.img"), "{out:#?}");
}
