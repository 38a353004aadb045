//! vCPU threads: `KVM_RUN` and the handling of its exits (port and MMIO devices on the buses,
//! which write the serial console and signal interrupts through the IOAPIC).

use super::{Rules, common, ioctl};

/// Rules of a vCPU thread.
pub(crate) fn rules() -> Rules {
    let mut r = common::rules();
    r.ioctls(&[
        // Running the guest.
        ioctl::run(),
        // The register dump of a crash report (KVM_EXIT_SHUTDOWN, internal errors).
        ioctl::get_regs(),
        ioctl::get_sregs(),
        // The userspace IOAPIC: a serial (or other level/edge) interrupt becomes an MSI to the
        // in-kernel LAPICs, and the guest's writes to the redirection table update the routes.
        ioctl::signal_msi(),
        ioctl::set_gsi_routing(),
    ]);
    r
}
