//! The `veil-stdin` thread (vmm `stdin`): waits on stdin, its wake-up eventfd and the
//! console's input pipe, reads stdin, and hands the bytes to COM1 (raising its interrupt through
//! the IOAPIC) or writes them into the pipe. Also the one rule the VMM thread needs for stdin:
//! putting a terminal's settings back when the guest ends.

use super::{Ioctl, Rules, arg_eq, common, ioctl, sys};

/// Rules of the stdin reader thread.
pub(crate) fn rules() -> Rules {
    let mut r = common::rules();
    r.allow(&[
        // Waiting for input, for room in the target and for the stop request (glibc's poll is
        // the poll syscall on x86_64; ppoll where it is not).
        sys!(SYS_poll),
        sys!(SYS_ppoll),
        // Reading stdin and consuming the wake-up eventfd (writes are in the common rules).
        sys!(SYS_read),
    ]);
    // COM1's receive interrupt: the IOAPIC pin becomes an MSI.
    r.ioctls(&[ioctl::signal_msi()]);
    r
}

/// `vmm` plus the VMM thread's terminal restore, on stdin only: `tcsetattr(0, TCSANOW, ...)`,
/// which glibc carries out as `ioctl(0, TCSETS)` with `ioctl(0, TCGETS)` around it (it reads
/// the settings back to check them).
pub(crate) fn with_terminal_restore(mut vmm: Rules) -> Rules {
    vmm.name("ioctl");
    for req in [
        Ioctl {
            nr: libc::TCGETS,
            name: "TCGETS",
        },
        Ioctl {
            nr: libc::TCSETS,
            name: "TCSETS",
        },
    ] {
        vmm.name(req.name);
        vmm.add_rule(
            libc::SYS_ioctl,
            vec![arg_eq(0, libc::STDIN_FILENO as u64), arg_eq(1, req.nr)],
        );
    }
    vmm
}
