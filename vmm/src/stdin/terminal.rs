//! Raw mode for a terminal on stdin while the guest owns it, and the way back.
//!
//! Raw input (Firecracker-like): no echo, no line editing, no signals from ^C / ^Z / ^\ (they
//! reach the guest as bytes), no flow control or CR/NL translation, 8-bit bytes. Output
//! processing (`OPOST`) stays on, so Veil's own messages on stderr keep their line breaks. The
//! saved settings come back when the guard is dropped or [`RawTerminal::restore`] is called.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// A terminal switched to raw input; restores the saved settings once.
pub(crate) struct RawTerminal {
    fd: RawFd,
    saved: Option<libc::termios>,
}

impl std::fmt::Debug for RawTerminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawTerminal")
            .field("fd", &self.fd)
            .field("restored", &self.saved.is_none())
            .finish()
    }
}

/// The raw-input version of `t` (see the module documentation).
pub(crate) fn raw(t: &libc::termios) -> libc::termios {
    let mut r = *t;
    r.c_iflag &= !(libc::IGNBRK
        | libc::BRKINT
        | libc::PARMRK
        | libc::ISTRIP
        | libc::INLCR
        | libc::IGNCR
        | libc::ICRNL
        | libc::IXON);
    r.c_lflag &= !(libc::ECHO | libc::ECHONL | libc::ICANON | libc::ISIG | libc::IEXTEN);
    r.c_cflag &= !(libc::CSIZE | libc::PARENB);
    r.c_cflag |= libc::CS8;
    r.c_cc[libc::VMIN] = 1;
    r.c_cc[libc::VTIME] = 0;
    r
}

fn get(fd: RawFd) -> io::Result<libc::termios> {
    // SAFETY: termios is plain data; tcgetattr fills it or fails.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios for tcgetattr to write.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(t)
}

fn set(fd: RawFd, t: &libc::termios) -> io::Result<()> {
    // SAFETY: `t` is a valid termios; TCSANOW applies it at once (ioctl TCSETS).
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl RawTerminal {
    /// Switches `fd` to raw input if it is a terminal: `Ok(None)` when it is not one.
    pub(crate) fn enter(fd: BorrowedFd<'_>) -> io::Result<Option<Self>> {
        let fd = fd.as_raw_fd();
        let saved = match get(fd) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => return Ok(None),
            Err(e) => return Err(e),
        };
        set(fd, &raw(&saved))?;
        Ok(Some(Self {
            fd,
            saved: Some(saved),
        }))
    }

    /// Puts the saved settings back (once; later calls do nothing).
    pub(crate) fn restore(&mut self) {
        if let Some(saved) = self.saved.take() {
            if let Err(e) = set(self.fd, &saved) {
                log::warn!("restoring the terminal settings of stdin: {e} (run `stty sane`)");
            }
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

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
        assert_eq!(r, 0, "openpty: {}", io::Error::last_os_error());
        // SAFETY: both descriptors were just created and belong to nobody else.
        unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
    }

    fn same(a: &libc::termios, b: &libc::termios) -> bool {
        a.c_iflag == b.c_iflag
            && a.c_oflag == b.c_oflag
            && a.c_cflag == b.c_cflag
            && a.c_lflag == b.c_lflag
            && a.c_cc == b.c_cc
    }

    #[test]
    fn raw_input_keeps_output_processing() {
        let (_m, s) = pty();
        let cooked = get(s.as_raw_fd()).unwrap();
        assert_ne!(cooked.c_lflag & libc::ECHO, 0, "a new pty echoes");
        let r = raw(&cooked);
        for bit in [libc::ECHO, libc::ICANON, libc::ISIG, libc::IEXTEN] {
            assert_eq!(r.c_lflag & bit, 0);
        }
        assert_eq!(r.c_iflag & (libc::ICRNL | libc::IXON), 0);
        assert_eq!(r.c_oflag, cooked.c_oflag);
        assert_eq!(r.c_cc[libc::VMIN], 1);
    }

    #[test]
    fn a_terminal_is_raw_while_held_and_restored_after() {
        let (_m, s) = pty();
        let before = get(s.as_raw_fd()).unwrap();
        let guard = RawTerminal::enter(s.as_fd())
            .unwrap()
            .expect("a pty is a terminal");
        let during = get(s.as_raw_fd()).unwrap();
        assert!(same(&during, &raw(&before)));
        assert!(!same(&during, &before));
        drop(guard);
        assert!(same(&get(s.as_raw_fd()).unwrap(), &before));
    }

    #[test]
    fn restore_happens_once() {
        let (_m, s) = pty();
        let before = get(s.as_raw_fd()).unwrap();
        let mut guard = RawTerminal::enter(s.as_fd()).unwrap().unwrap();
        guard.restore();
        assert!(same(&get(s.as_raw_fd()).unwrap(), &before));
        // Someone changes the settings after the restore: dropping the guard leaves them.
        set(s.as_raw_fd(), &raw(&before)).unwrap();
        drop(guard);
        assert!(same(&get(s.as_raw_fd()).unwrap(), &raw(&before)));
    }

    #[test]
    fn a_pipe_is_left_alone() {
        let (r, _w) = std::io::pipe().unwrap();
        assert!(RawTerminal::enter(r.as_fd()).unwrap().is_none());
    }
}
