//! Intel TDX on upstream KVM (Linux 6.16+): the platform interface at the ioctl boundary, its
//! KVM implementation, its software model, the TD HOB for TDVF, and the launch driver.

pub mod hob;
pub mod kvm;
pub mod launch;
pub mod model;
pub mod quote;

use kvm_bindings::kvm_cpuid_entry2;

use crate::platform::{CommandError, PrivateMemory};

/// What `KVM_TDX_CAPABILITIES` reports.
#[derive(Debug, Clone, Default)]
pub struct TdxCapabilities {
    /// TD attributes that may be set.
    pub supported_attrs: u64,
    /// XFAM bits that may be set.
    pub supported_xfam: u64,
    /// TDVMCALLs (leaf 1, R11) KVM forwards to userspace.
    pub user_tdvmcallinfo_1_r11: u64,
    /// TDVMCALLs (leaf 1, R12) KVM forwards to userspace.
    pub user_tdvmcallinfo_1_r12: u64,
    /// CPUID bits the VMM may configure (each entry: the configurable bits of a leaf).
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

/// The answer to `KVM_TDX_CAPABILITIES`.
#[derive(Debug, Clone)]
pub enum CapabilitiesReply {
    /// The capabilities.
    Caps(TdxCapabilities),
    /// `-E2BIG`: the CPUID array needs `needed` entries.
    TooSmall {
        /// Entries the kernel needs room for.
        needed: u32,
    },
}

/// `KVM_TDX_INIT_VM` arguments.
#[derive(Debug, Clone)]
pub struct InitVm {
    /// TD attributes.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRCONFIGID, MROWNER, MROWNEROWNERCONFIG (48 bytes each).
    pub mrconfigid: [u8; 48],
    #[allow(missing_docs)]
    pub mrowner: [u8; 48],
    #[allow(missing_docs)]
    pub mrownerconfig: [u8; 48],
    /// The TD's CPUID configuration.
    pub cpuid: Vec<kvm_cpuid_entry2>,
}

/// The TDX commands, one method per ioctl.
pub trait TdxPlatform: PrivateMemory {
    /// `KVM_TDX_CAPABILITIES` with room for `room` CPUID entries.
    fn capabilities(&mut self, room: u32) -> Result<CapabilitiesReply, CommandError>;

    /// The CPUID KVM supports (`KVM_GET_SUPPORTED_CPUID`).
    fn supported_cpuid(&mut self) -> Result<Vec<kvm_cpuid_entry2>, CommandError>;

    /// `KVM_TDX_INIT_VM` (before any vCPU). `-EAGAIN` asks the caller to retry.
    fn init_vm(&mut self, init: &InitVm) -> Result<(), CommandError>;

    /// `KVM_SET_CPUID2` on a vCPU.
    fn set_vcpu_cpuid(&mut self, id: u32, cpuid: &[kvm_cpuid_entry2]) -> Result<(), CommandError>;

    /// `KVM_TDX_INIT_VCPU` with the TD HOB's GPA.
    fn init_vcpu(&mut self, id: u32, hob_gpa: u64) -> Result<(), CommandError>;

    /// `KVM_TDX_INIT_MEM_REGION` on vCPU `vcpu`: adds `pages` pages at `gpa` from `src`,
    /// extending MRTD with them when `measure`. Returns the pages done (the kernel may stop
    /// early; the caller continues).
    fn init_mem_region(
        &mut self,
        vcpu: u32,
        src: &[u8],
        gpa: u64,
        pages: u64,
        measure: bool,
    ) -> Result<u64, CommandError>;

    /// `KVM_TDX_FINALIZE_VM`: MRTD is final, the TD can run.
    fn finalize(&mut self) -> Result<(), CommandError>;
}
