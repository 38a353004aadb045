//! AMD SEV-SNP on KVM: the platform interface at the ioctl boundary, its KVM implementation,
//! its software model, and the launch driver that replays a [`veil_firmware::LaunchPlan`].

pub mod cpuid_page;
pub mod kvm;
pub mod launch;
pub mod model;
mod model_vmsa;

use kvm_bindings::kvm_cpuid_entry2;

use crate::platform::{CommandError, PrivateMemory};
use crate::regs::VcpuRegisters;

/// `KVM_SEV_INIT2` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Init2 {
    /// SEV features for every VMSA (without SNP_ACTIVE, which KVM adds).
    pub vmsa_features: u64,
    /// GHCB protocol version.
    pub ghcb_version: u16,
}

/// `SNP_LAUNCH_START` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchStart {
    /// Guest policy.
    pub policy: u64,
    /// Guest OS-visible workarounds (zero).
    pub gosvw: [u8; 16],
}

/// `SNP_LAUNCH_FINISH` arguments.
#[derive(Debug, Clone, Copy)]
pub struct LaunchFinish<'a> {
    /// The 96-byte ID block, if any.
    pub id_block: Option<&'a [u8]>,
    /// The 4096-byte ID auth block (with the ID block).
    pub id_auth: Option<&'a [u8]>,
    /// The auth block carries an author key.
    pub author_key: bool,
    /// 32 bytes the host binds to the launch (reported as HOST_DATA).
    pub host_data: [u8; 32],
}

/// The SEV-SNP commands, one method per ioctl, as narrow as the kernel's interface.
pub trait SnpPlatform: PrivateMemory {
    /// `KVM_SEV_INIT2`.
    fn init2(&mut self, init: &Init2) -> Result<(), CommandError>;

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` with `ioapic_pins` routes for a userspace IOAPIC:
    /// the local APICs live in KVM (created with each vCPU, so this comes before any vCPU), the
    /// IOAPIC in the VMM, which delivers device interrupts as MSIs (irqfds, MSI routes).
    fn enable_split_irqchip(&mut self, ioapic_pins: u32) -> Result<(), CommandError>;

    /// The CPUID KVM supports (`KVM_GET_SUPPORTED_CPUID`), the source of the CPUID page.
    fn supported_cpuid(&mut self) -> Result<Vec<kvm_cpuid_entry2>, CommandError>;

    /// `SNP_LAUNCH_START`.
    fn launch_start(&mut self, start: &LaunchStart) -> Result<(), CommandError>;

    /// One `SNP_LAUNCH_UPDATE` of `pages` pages at `gfn` with `page_type`; `src` holds the
    /// pages' bytes (`None` for ZERO pages). Returns how many pages the call did, which may be
    /// fewer than asked: the caller continues with the rest. A rejected CPUID page comes back
    /// corrected in `src` with firmware error `INVALID_PARAM`.
    fn launch_update(
        &mut self,
        gfn: u64,
        src: Option<&mut [u8]>,
        pages: u64,
        page_type: u8,
    ) -> Result<u64, CommandError>;

    /// `KVM_SET_CPUID2` on a created vCPU (KVM checks register values, e.g. CR4 bits, against
    /// the guest's CPUID, so this comes before the registers).
    fn set_vcpu_cpuid(&mut self, id: u32, cpuid: &[kvm_cpuid_entry2]) -> Result<(), CommandError>;

    /// Sets a created vCPU's registers (`KVM_SET_REGS`, `SREGS`, `FPU`, `XCRS`, `DEBUGREGS`,
    /// `MSRS`).
    fn set_vcpu_registers(&mut self, id: u32, regs: &VcpuRegisters) -> Result<(), CommandError>;

    /// `SNP_LAUNCH_FINISH`: KVM builds, encrypts and measures one VMSA per vCPU.
    fn launch_finish(&mut self, finish: &LaunchFinish<'_>) -> Result<(), CommandError>;
}
