//! Creating the KVM VM: memory slots, the in-kernel irqchip (PIC, IOAPIC, per-vCPU LAPICs) and
//! the in-kernel PIT.
//!
//! Veil uses KVM's full in-kernel irqchip rather than a split one: the legacy PIC and IOAPIC are
//! what the MP table and MADT describe, interrupt delivery never leaves the kernel, and nothing in
//! Veil has to emulate them. (A split irqchip would matter for a userspace IOAPIC with more pins
//! or for confidential guests with their own interrupt rules; neither applies to plain guests.)

use kvm_bindings::{KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// Where KVM puts its three-page TSS (needed on Intel; inside the MMIO hole, below the BIOS).
const TSS_ADDR: usize = 0xfffb_d000;

/// Errors from creating the VM; each names the KVM call that failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// KVM_CREATE_VM failed.
    #[error("KVM_CREATE_VM: {0}")]
    Create(#[source] kvm_ioctls::Error),
    /// KVM_SET_TSS_ADDR failed.
    #[error("KVM_SET_TSS_ADDR: {0}")]
    Tss(#[source] kvm_ioctls::Error),
    /// KVM_SET_USER_MEMORY_REGION failed.
    #[error("KVM_SET_USER_MEMORY_REGION for {size:#x} bytes at {gpa:#x}: {source}")]
    MemorySlot {
        /// Guest address of the slot.
        gpa: u64,
        /// Slot size.
        size: u64,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_CREATE_IRQCHIP failed.
    #[error("KVM_CREATE_IRQCHIP: {0}")]
    Irqchip(#[source] kvm_ioctls::Error),
    /// KVM_CREATE_PIT2 failed.
    #[error("KVM_CREATE_PIT2: {0}")]
    Pit(#[source] kvm_ioctls::Error),
}

/// Creates the VM with its memory slots, irqchip and PIT.
pub fn create(kvm: &Kvm, mem: &GuestMemoryMmap) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(VmError::Create)?;
    vm.set_tss_address(TSS_ADDR).map_err(VmError::Tss)?;
    for (slot, region) in mem.iter().enumerate() {
        let gpa = region.start_addr().0;
        let size = region.len();
        let host = mem
            .get_host_address(region.start_addr())
            .expect("a region's start address is inside guest memory");
        let slot_region = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host as u64,
        };
        // SAFETY: the host range is a live mapping owned by `mem`, which the caller keeps alive as
        // long as the VM (both are dropped together in `Vm`); slots do not overlap.
        unsafe { vm.set_user_memory_region(slot_region) }
            .map_err(|source| VmError::MemorySlot { gpa, size, source })?;
    }
    vm.create_irq_chip().map_err(VmError::Irqchip)?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(VmError::Pit)?;
    Ok(vm)
}
