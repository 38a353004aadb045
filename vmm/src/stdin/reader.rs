//! The `veil-stdin` thread: reads stdin and hands the bytes to COM1's receive FIFO or to the
//! virtio-console's input pipe, never reading more while earlier bytes wait for room.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use veil_devices::legacy::Serial;
use vmm_sys_util::eventfd::EventFd;

/// Bytes read from stdin at a time.
const CHUNK: usize = 4096;
/// While bytes wait for COM1, how often the FIFO is tried again without a wake-up (the guest
/// may have the UART in loopback mode, where it takes no input and signals nothing).
const SERIAL_RETRY_MS: libc::c_int = 50;

/// Where stdin's bytes go.
pub(super) enum Target {
    /// COM1's receive FIFO; the reader's wake eventfd is the UART's "FIFO emptied" signal.
    Serial(Arc<Mutex<Serial>>),
    /// The write end of the pipe the virtio-console reads (non-blocking).
    Pipe(OwnedFd),
}

/// The reader's state: bytes read but not yet taken, and how to wait.
pub(super) struct Reader {
    /// Stdin (another descriptor in tests).
    pub(super) input: RawFd,
    pub(super) target: Target,
    /// Signalled to stop, and by COM1 when the guest emptied its FIFO.
    pub(super) wake: Arc<EventFd>,
    pub(super) stop: Arc<AtomicBool>,
    /// Bytes read from stdin; `pending[taken..]` still wait for the target.
    pub(super) pending: Vec<u8>,
    pub(super) taken: usize,
}

enum Delivered {
    /// Some or none of the bytes were taken; the rest wait.
    Partly,
    /// The target is gone (the console's pipe closed): stop.
    Gone,
}

impl Reader {
    fn waiting(&self) -> bool {
        self.taken < self.pending.len()
    }

    fn deliver(&mut self) -> Delivered {
        let bytes = &self.pending[self.taken..];
        if bytes.is_empty() {
            return Delivered::Partly;
        }
        let n = match &self.target {
            Target::Serial(uart) => uart
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .enqueue_input(bytes),
            Target::Pipe(fd) => {
                // SAFETY: writes from a live slice to a pipe descriptor we own.
                let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.raw_os_error() {
                        Some(libc::EAGAIN) | Some(libc::EINTR) => 0,
                        _ => {
                            log::debug!("stdin: the console's input pipe: {e}");
                            return Delivered::Gone;
                        }
                    }
                } else {
                    n as usize
                }
            }
        };
        self.taken += n;
        if !self.waiting() {
            self.pending.clear();
            self.taken = 0;
        }
        Delivered::Partly
    }

    /// Reads one chunk of stdin into `pending`; false at its end or on an error.
    fn read_stdin(&mut self) -> bool {
        self.pending.resize(CHUNK, 0);
        // SAFETY: reads into the live buffer we own, at most its length.
        let n = unsafe { libc::read(self.input, self.pending.as_mut_ptr().cast(), CHUNK) };
        if n < 0 {
            self.pending.clear();
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // Another reader of the same terminal or pipe got there first.
                Some(libc::EAGAIN) | Some(libc::EINTR) => true,
                _ => {
                    log::warn!("reading stdin: {e}; the guest gets no more input");
                    false
                }
            };
        }
        self.pending.truncate(n as usize);
        n > 0
    }

    /// Runs until stopped, until stdin ends and every byte read was taken, or until the target
    /// is gone.
    pub(super) fn run(mut self) {
        let mut eof = false;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if let Delivered::Gone = self.deliver() {
                return;
            }
            let waiting = self.waiting();
            if eof && !waiting {
                return;
            }
            let pipe = match &self.target {
                Target::Pipe(fd) if waiting => fd.as_raw_fd(),
                _ => -1,
            };
            let stdin = if waiting || eof { -1 } else { self.input };
            // poll ignores entries with a negative descriptor.
            let mut fds = [
                libc::pollfd {
                    fd: self.wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: stdin,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pipe,
                    events: libc::POLLOUT,
                    revents: 0,
                },
            ];
            let timeout = match self.target {
                Target::Serial(_) if waiting => SERIAL_RETRY_MS,
                _ => -1,
            };
            // SAFETY: polls the array we own, of the length given.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                log::warn!("waiting for stdin: {e}; the guest gets no more input");
                return;
            }
            if fds[0].revents != 0 {
                // Non-blocking: a wake-up consumed elsewhere only means nothing to read.
                let _ = self.wake.read();
            }
            if fds[1].revents != 0 && !self.read_stdin() {
                eof = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use veil_devices::bus::BusDevice;
    use veil_devices::legacy::{Ioapic, IrqLine, MsiMessage, MsiSink};

    struct NoMsi;
    impl MsiSink for NoMsi {
        fn send_msi(&self, _: MsiMessage) {}
        fn set_routes(&self, _: &[(u32, MsiMessage)]) {}
    }

    fn reader(input: &OwnedFd, target: Target, wake: Arc<EventFd>) -> Reader {
        Reader {
            input: input.as_raw_fd(),
            target,
            wake,
            stop: Arc::new(AtomicBool::new(false)),
            pending: b"first ".to_vec(),
            taken: 0,
        }
    }

    fn input(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 13 % 256) as u8).collect()
    }

    #[test]
    fn serial_input_waits_for_the_guest_and_loses_nothing() {
        let room = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let ioapic = Arc::new(Mutex::new(Ioapic::new(0, Arc::new(NoMsi))));
        let uart = Arc::new(Mutex::new(Serial::with_input(
            IrqLine::new(ioapic, 4),
            Box::new(std::io::sink()),
            room.clone(),
        )));
        let (rd, mut wr) = std::io::pipe().unwrap();
        let rd = OwnedFd::from(rd);
        let data = input(1000);
        wr.write_all(&data).unwrap();
        drop(wr);
        let r = reader(&rd, Target::Serial(uart.clone()), room);
        let thread = std::thread::spawn(move || r.run());
        // The guest: reads whatever the FIFO holds until it has everything, bounded.
        let mut want = b"first ".to_vec();
        want.extend_from_slice(&data);
        let mut got = Vec::new();
        let start = std::time::Instant::now();
        while got.len() < want.len() {
            assert!(start.elapsed().as_secs() < 30, "got {} bytes", got.len());
            let mut u = uart.lock().unwrap();
            let mut b = [0u8];
            u.read(0x3f8, 5, &mut b);
            if b[0] & 1 != 0 {
                u.read(0x3f8, 0, &mut b);
                got.push(b[0]);
            } else {
                drop(u);
                std::thread::yield_now();
            }
        }
        assert_eq!(got, want);
        // At the end of input, with everything taken, the reader ends by itself.
        thread.join().unwrap();
    }

    #[test]
    fn console_input_waits_for_room_in_the_pipe_and_stops_on_request() {
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let (in_rd, mut in_wr) = std::io::pipe().unwrap();
        let in_rd = OwnedFd::from(in_rd);
        let (mut out_rd, out_wr) = std::io::pipe().unwrap();
        let out_wr = OwnedFd::from(out_wr);
        // SAFETY: F_SETFL on a pipe end we own.
        unsafe { libc::fcntl(out_wr.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        // More than a pipe holds (64 KiB): the reader must wait for the console to read.
        let data = input(200_000);
        let feeder = {
            let data = data.clone();
            std::thread::spawn(move || in_wr.write_all(&data).map(|()| in_wr))
        };
        let r = reader(&in_rd, Target::Pipe(out_wr), wake.clone());
        let stop = r.stop.clone();
        let thread = std::thread::spawn(move || r.run());
        let mut got = vec![0u8; 6 + data.len()];
        out_rd.read_exact(&mut got).unwrap();
        assert_eq!(&got[..6], b"first ");
        assert!(got[6..] == data[..], "the bytes differ");
        // Stdin still open: the reader waits until told to stop.
        let _open = feeder.join().unwrap().unwrap();
        stop.store(true, Ordering::Release);
        wake.write(1).unwrap();
        thread.join().unwrap();
    }
}
