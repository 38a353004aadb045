//! Host input for the guest: what Veil reads on stdin goes to the virtio-console when its
//! output is stdio (`--console stdio`), else to COM1 when the serial port's is
//! (`--serial stdio`, the default), else nowhere (stdin is not read).
//!
//! One thread, `veil-stdin` ([`reader`]), reads stdin and waits for room: COM1's 64-byte FIFO
//! signals an eventfd when the guest empties it; the console reads a pipe whose other end this
//! thread writes, and the console worker stops reading it while the guest posts no buffers. A
//! full target stops the reading of stdin: nothing is dropped. A terminal on stdin is put in raw
//! mode for the run ([`terminal`]) and restored when the guest ends, when the launch fails, and
//! when the [`crate::VmHandle`] is dropped.
//!
//! Stdin that is closed or already at its end when the guest is launched (`/dev/null`, as under
//! the jailer's `--daemonize`) starts no thread; a later end of input stops the thread quietly.

mod reader;
mod terminal;

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use veil_devices::legacy::Serial;
use vmm_sys_util::eventfd::EventFd;

use crate::config::{SerialOutput, VmConfig};
use crate::virtio_config::{ConsoleOutput, VirtioDeviceConfig};
use reader::{Reader, Target};
use terminal::RawTerminal;

/// The reader thread's name.
pub const THREAD_NAME: &str = "veil-stdin";
/// Stack of the reader thread: one poll loop and a 4 KiB buffer on the heap.
const STACK: usize = 64 << 10;

/// Errors from setting up the input.
#[derive(Debug, thiserror::Error)]
pub enum StdinError {
    /// An eventfd or the console's input pipe could not be created.
    #[error("stdin input: creating the {what}: {source}")]
    Create {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The reader thread could not be started.
    #[error("starting the {THREAD_NAME} thread: {0}")]
    Thread(#[source] io::Error),
}

/// Whether a guest of this process has stdin (one at a time: two readers would split the input
/// and race on the terminal's settings).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Holds [`TAKEN`] until dropped.
#[derive(Debug)]
struct Claim;

impl Claim {
    fn take() -> Option<Self> {
        TAKEN
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| Claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        TAKEN.store(false, Ordering::Release);
    }
}

thread_local! {
    /// The read end of the console's input pipe, between [`Input::claim`] and the console's
    /// creation ([`console_input`]), both on the thread that runs `launch`.
    static CONSOLE_INPUT: RefCell<Option<OwnedFd>> = const { RefCell::new(None) };
}

/// The input the virtio-console with output `out` reads: stdin's pipe for `--console stdio`
/// (once), nothing otherwise.
pub(crate) fn console_input(out: &ConsoleOutput) -> Option<OwnedFd> {
    if *out != ConsoleOutput::Stdout {
        return None;
    }
    CONSOLE_INPUT.with_borrow_mut(Option::take)
}

/// Which device takes stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taker {
    Console,
    Serial,
}

fn taker(config: &VmConfig) -> Option<Taker> {
    let console = config
        .devices()
        .iter()
        .any(|d| matches!(d, VirtioDeviceConfig::Console(ConsoleOutput::Stdout)));
    if console {
        Some(Taker::Console)
    } else if *config.serial() == SerialOutput::Stdout {
        Some(Taker::Serial)
    } else {
        None
    }
}

/// What stdin holds right now: `None` when it is closed or at its end, else the bytes already
/// waiting (possibly none), read without blocking.
fn first_bytes() -> Option<Vec<u8>> {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: polls one entry we own, without waiting.
    let r = unsafe { libc::poll(&mut fd, 1, 0) };
    if r < 0 || fd.revents & libc::POLLNVAL != 0 {
        return None;
    }
    if fd.revents == 0 {
        return Some(Vec::new());
    }
    let mut buf = vec![0u8; 4096];
    // SAFETY: reads into the live buffer we own; poll said this read does not block.
    let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => None,
        n if n < 0 => match io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EINTR) => Some(Vec::new()),
            _ => None,
        },
        n => {
            buf.truncate(n as usize);
            Some(buf)
        }
    }
}

/// Stdin claimed for one device, before its reader runs.
#[derive(Debug)]
pub(crate) struct Input {
    claim: Claim,
    first: Vec<u8>,
    target: TargetSpec,
    wake: Arc<EventFd>,
    terminal: Option<RawTerminal>,
}

#[derive(Debug)]
enum TargetSpec {
    Serial(Arc<Mutex<Serial>>),
    Pipe(OwnedFd),
}

impl Input {
    /// Decides who takes stdin under `config` and prepares it: COM1 is `serial`, whose
    /// FIFO-emptied eventfd is `serial_room` (present when its output is stdio); for the
    /// console, the pipe's read end is left for [`console_input`]. `None` when no device takes
    /// stdin, another guest of this process has it, or it is closed or at its end.
    pub(crate) fn claim(
        config: &VmConfig,
        serial: &Arc<Mutex<Serial>>,
        serial_room: Option<&Arc<EventFd>>,
    ) -> Result<Option<Self>, StdinError> {
        // A launch that failed before creating its console leaves nothing for this one.
        CONSOLE_INPUT.set(None);
        let Some(taker) = taker(config) else {
            return Ok(None);
        };
        let Some(claim) = Claim::take() else {
            log::debug!("stdin is another guest's: this one gets no host input");
            return Ok(None);
        };
        let Some(first) = first_bytes() else {
            return Ok(None);
        };
        let (target, wake) = match (taker, serial_room) {
            (Taker::Serial, Some(room)) => (TargetSpec::Serial(serial.clone()), room.clone()),
            (Taker::Serial, None) => return Ok(None),
            (Taker::Console, _) => {
                let (rd, wr) = pipe()?;
                CONSOLE_INPUT.set(Some(rd));
                let wake =
                    EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(|source| {
                        StdinError::Create {
                            what: "reader's wake-up eventfd",
                            source,
                        }
                    })?;
                (TargetSpec::Pipe(wr), Arc::new(wake))
            }
        };
        let terminal = match RawTerminal::enter(io::stdin().as_fd()) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("stdin is a terminal that cannot be put in raw mode: {e}");
                None
            }
        };
        Ok(Some(Self {
            claim,
            first,
            target,
            wake,
            terminal,
        }))
    }

    /// Starts the reader thread; it calls `enter` first (install its seccomp filter, wait for
    /// the launch) and returns at once if that fails.
    pub(crate) fn spawn(
        self,
        enter: impl FnOnce() -> bool + Send + 'static,
    ) -> Result<StdinReader, StdinError> {
        let stop = Arc::new(AtomicBool::new(false));
        let entered = Arc::new(AtomicBool::new(false));
        let passed = entered.clone();
        let reader = Reader {
            input: libc::STDIN_FILENO,
            target: match self.target {
                TargetSpec::Serial(s) => Target::Serial(s),
                TargetSpec::Pipe(fd) => Target::Pipe(fd),
            },
            wake: self.wake.clone(),
            stop: stop.clone(),
            pending: self.first,
            taken: 0,
        };
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .stack_size(STACK)
            .spawn(move || {
                let ok = enter();
                passed.store(true, Ordering::Release);
                if ok {
                    reader.run();
                }
            })
            .map_err(StdinError::Thread)?;
        Ok(StdinReader {
            stop,
            entered,
            wake: self.wake,
            thread: Mutex::new(Some(thread)),
            terminal: Mutex::new(self.terminal),
            claim: Mutex::new(Some(self.claim)),
        })
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd), StdinError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(StdinError::Create {
            what: "virtio-console's input pipe",
            source: io::Error::last_os_error(),
        });
    }
    use std::os::fd::FromRawFd;
    // SAFETY: both descriptors were just created and belong to nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The running reader: stopping it joins the thread and restores the terminal.
#[derive(Debug)]
pub(crate) struct StdinReader {
    stop: Arc<AtomicBool>,
    /// Set once the thread is past its start gate (a launch that failed before opening the
    /// gate leaves it waiting there: it is then not joined, and returns if the gate opens).
    entered: Arc<AtomicBool>,
    wake: Arc<EventFd>,
    thread: Mutex<Option<JoinHandle<()>>>,
    terminal: Mutex<Option<RawTerminal>>,
    claim: Mutex<Option<Claim>>,
}

impl StdinReader {
    /// Stops the reader (bytes not yet taken by the guest are dropped with it) and restores the
    /// terminal; later calls do nothing.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        // Only fails when the counter would overflow, and then a wake-up is pending anyway.
        let _ = self.wake.write(1);
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            if self.entered.load(Ordering::Acquire) {
                // The reader catches nothing; a panic in it has been reported on stderr.
                let _ = t.join();
            }
        }
        if let Some(mut t) = self
            .terminal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.restore();
        }
        drop(self.claim.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

impl Drop for StdinReader {
    fn drop(&mut self) {
        self.stop();
    }
}
