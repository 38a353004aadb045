//! vCPU threads: `KVM_RUN` and the handling of its exits (port and MMIO devices on the buses,
//! which write the serial console and signal interrupts through the IOAPIC), plus, only for VMs
//! whose RAM is guest_memfd slots, the private/shared conversions of the guest's page-state
//! exits and, only for TDX guests with a quote service, forwarding GetQuote to it.

use kvm_bindings::{KVMIO, kvm_memory_attributes};
use vmm_sys_util::ioctl_iow_nr;

use super::{Ioctl, Rules, arg_eq, arg_null, common, ioctl, sys};
use crate::seccomp::VcpuNeeds;

ioctl_iow_nr!(
    kvm_set_memory_attributes,
    KVMIO,
    0xd2,
    kvm_memory_attributes
);

/// `KVM_SET_MEMORY_ATTRIBUTES` (private/shared conversions).
fn set_memory_attributes() -> Ioctl {
    Ioctl {
        nr: kvm_set_memory_attributes(),
        name: "KVM_SET_MEMORY_ATTRIBUTES",
    }
}

/// Rules of a vCPU thread of a VM that needs `needs`.
pub(crate) fn rules(needs: VcpuNeeds) -> Rules {
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
    if needs.memory_conversions {
        // KVM_HC_MAP_GPA_RANGE and memory-fault exits: the range's attributes change on the VM
        // fd, then the backing it stops using is freed - a hole punched in the guest_memfd
        // (exactly PUNCH_HOLE | KEEP_SIZE) or MADV_REMOVE on the shared view (`madvise` is in
        // the common rules).
        r.ioctls(&[set_memory_attributes()]);
        r.allow_if(
            sys!(SYS_fallocate),
            vec![arg_eq(
                1,
                (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE) as u64,
            )],
        );
    }
    if needs.quote_socket {
        // TDX GetQuote: a Unix stream to the quote generation service per request, with send
        // and receive timeouts; std sends with send(MSG_NOSIGNAL) and receives with recv
        // (sendto and recvfrom without an address).
        r.allow_if(sys!(SYS_socket), vec![arg_eq(0, libc::AF_UNIX as u64)]);
        r.allow(&[sys!(SYS_connect)]);
        r.allow_if(
            sys!(SYS_setsockopt),
            vec![arg_eq(1, libc::SOL_SOCKET as u64)],
        );
        r.allow_if(sys!(SYS_sendto), vec![arg_null(4)]);
        r.allow_if(sys!(SYS_recvfrom), vec![arg_null(4)]);
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn set_memory_attributes_number_matches_the_kernel_abi() {
        // _IOW(KVMIO, 0xd2, struct kvm_memory_attributes) in <linux/kvm.h>.
        assert_eq!(super::set_memory_attributes().nr, 0x4020_aed2);
    }
}
