//! Creating the KVM VM: memory slots and KVM's split irqchip.
//!
//! Veil uses the split irqchip (`KVM_CAP_SPLIT_IRQCHIP`): the local APICs live in the kernel
//! (so INIT/SIPI, IPIs, the APIC timer and EOIs never leave it), the IOAPIC is Veil's own model
//! (veil-devices) delivering MSIs through `KVM_SIGNAL_MSI`, and there is no 8259 PIC and no PIT.
//! Why not the full in-kernel irqchip: on the KVM hosts Veil targets, tearing down the in-kernel
//! PIC/IOAPIC/PIT costs 10-20 ms per VM (measured here: a minimal KVM program takes ~12 ms with
//! them and ~5 ms without), which is more than Veil's whole start-up budget. Guests lose nothing
//! they need: timekeeping uses the TSC (its frequency is in CPUID leaf 0x40000010) and the LAPIC
//! timer, and the MP table and MADT describe a machine without a PIC.

use std::sync::Arc;

use crate::device_manager::routing::GsiRoutes;
use kvm_bindings::{KVM_CAP_SPLIT_IRQCHIP, kvm_enable_cap, kvm_msi, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use veil_devices::legacy::ioapic::IOAPIC_PINS;
use veil_devices::legacy::{MsiMessage, MsiSink};
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
    /// KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP) failed.
    #[error("KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP): {0}")]
    SplitIrqchip(#[source] kvm_ioctls::Error),
}

/// Creates the VM with its memory slots and the split irqchip.
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
        // long as the VM (both are dropped together in `VmHandle`); slots do not overlap.
        unsafe { vm.set_user_memory_region(slot_region) }
            .map_err(|source| VmError::MemorySlot { gpa, size, source })?;
    }
    split_irqchip(&vm)?;
    Ok(vm)
}

/// The TSS address and the split irqchip, for a VM whose memory slots someone else created
/// (guest_memfd slots, `--guest-memfd`).
pub fn prepare(vm: &VmFd) -> Result<(), VmError> {
    vm.set_tss_address(TSS_ADDR).map_err(VmError::Tss)?;
    split_irqchip(vm)
}

fn split_irqchip(vm: &VmFd) -> Result<(), VmError> {
    let mut cap = kvm_enable_cap {
        cap: KVM_CAP_SPLIT_IRQCHIP,
        ..Default::default()
    };
    cap.args[0] = IOAPIC_PINS as u64; // routes reserved for the userspace IOAPIC
    vm.enable_cap(&cap).map_err(VmError::SplitIrqchip)
}

/// Interrupt delivery to the in-kernel local APICs, for the userspace IOAPIC.
#[derive(Debug)]
pub struct KvmMsi {
    /// The VM.
    pub vm: Arc<VmFd>,
    /// The GSI routing table the IOAPIC's pin routes go into.
    pub routes: Arc<GsiRoutes>,
}

impl MsiSink for KvmMsi {
    fn send_msi(&self, msg: MsiMessage) {
        let msi = kvm_msi {
            address_lo: msg.address as u32,
            address_hi: (msg.address >> 32) as u32,
            data: msg.data,
            ..Default::default()
        };
        if let Err(e) = self.vm.signal_msi(msi) {
            log::warn!("KVM_SIGNAL_MSI {msg:x?}: {e}");
        }
    }

    fn set_routes(&self, routes: &[(u32, MsiMessage)]) {
        self.routes.set_pins(routes);
    }
}
