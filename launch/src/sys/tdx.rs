//! TDX on upstream KVM (Linux 6.16): Veil's own bindings of `struct kvm_tdx_cmd` and the
//! structs its sub-commands take, with the kernel's sizes and offsets asserted at compile time.

/// The header of `struct kvm_cpuid2` (`nent`, `padding`); the entries follow it in memory.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Cpuid2Header {
    /// Number of entries.
    pub nent: u32,
    /// Padding.
    pub padding: u32,
}

/// `KVM_TDX_CAPABILITIES` (VM fd).
pub const KVM_TDX_CAPABILITIES: u32 = 0;
/// `KVM_TDX_INIT_VM` (VM fd).
pub const KVM_TDX_INIT_VM: u32 = 1;
/// `KVM_TDX_INIT_VCPU` (vCPU fd; `data` is the TD HOB's GPA).
pub const KVM_TDX_INIT_VCPU: u32 = 2;
/// `KVM_TDX_INIT_MEM_REGION` (vCPU fd).
pub const KVM_TDX_INIT_MEM_REGION: u32 = 3;
/// `KVM_TDX_FINALIZE_VM` (VM fd).
pub const KVM_TDX_FINALIZE_VM: u32 = 4;
/// `KVM_TDX_GET_CPUID` (vCPU fd).
pub const KVM_TDX_GET_CPUID: u32 = 5;

/// The name of a TDX sub-command, for logs and errors.
pub fn cmd_name(id: u32) -> &'static str {
    match id {
        KVM_TDX_CAPABILITIES => "KVM_TDX_CAPABILITIES",
        KVM_TDX_INIT_VM => "KVM_TDX_INIT_VM",
        KVM_TDX_INIT_VCPU => "KVM_TDX_INIT_VCPU",
        KVM_TDX_INIT_MEM_REGION => "KVM_TDX_INIT_MEM_REGION",
        KVM_TDX_FINALIZE_VM => "KVM_TDX_FINALIZE_VM",
        KVM_TDX_GET_CPUID => "KVM_TDX_GET_CPUID",
        _ => "KVM_TDX_(unknown)",
    }
}

/// `KVM_TDX_MEASURE_MEMORY_REGION`: `INIT_MEM_REGION` also extends MRTD with the pages.
pub const KVM_TDX_MEASURE_MEMORY_REGION: u32 = 1;

/// TD attribute `SEPT_VE_DISABLE` (bit 28): EPT violations on pending pages are not #VE.
pub const TD_ATTR_SEPT_VE_DISABLE: u64 = 1 << 28;
/// TD attribute `DEBUG` (bit 0): an off-TD debugger may read the TD.
pub const TD_ATTR_DEBUG: u64 = 1;
/// XFAM bits every TD must have: x87 and SSE state.
pub const XFAM_FIXED1: u64 = 0x3;

/// `KVM_EXIT_TDX`: a TDVMCALL KVM forwards to userspace.
pub const KVM_EXIT_TDX: u32 = 40;
/// `KVM_SYSTEM_EVENT_TDX_FATAL`: the TD reported a fatal error (`data[0..16]` are its GPRs).
pub const KVM_SYSTEM_EVENT_TDX_FATAL: u32 = 7;

/// TDVMCALL sub-functions (GHCI) that reach userspace through `KVM_EXIT_TDX`.
pub mod tdvmcall {
    /// `GetTdVmCallInfo`.
    pub const GET_TD_VM_CALL_INFO: u64 = 0x10000;
    /// `MapGPA` (arrives as `KVM_EXIT_HYPERCALL` with `KVM_HC_MAP_GPA_RANGE` instead).
    pub const MAP_GPA: u64 = 0x10001;
    /// `GetQuote`.
    pub const GET_QUOTE: u64 = 0x10002;
    /// `ReportFatalError` (arrives as `KVM_SYSTEM_EVENT_TDX_FATAL`).
    pub const REPORT_FATAL_ERROR: u64 = 0x10003;
    /// `SetupEventNotifyInterrupt`.
    pub const SETUP_EVENT_NOTIFY_INTERRUPT: u64 = 0x10004;
    /// TDVMCALL status: success.
    pub const SUCCESS: u64 = 0;
    /// TDVMCALL status: invalid operand.
    pub const INVALID_OPERAND: u64 = 0x8000_0000_0000_0000;
    /// TDVMCALL status: the operation is not supported / unavailable.
    pub const SUBFUNC_UNSUPPORTED: u64 = 0x8000_0000_0000_0003;
}

/// `struct kvm_tdx_cmd`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmTdxCmd {
    /// `enum kvm_tdx_cmd_id`.
    pub id: u32,
    /// Sub-command flags.
    pub flags: u32,
    /// An immediate or a pointer to the sub-command's struct.
    pub data: u64,
    /// The TDX module's SEAMCALL status, when the module failed.
    pub hw_error: u64,
}

/// `struct kvm_tdx_capabilities` (the fixed part; a `kvm_cpuid2` of configurable bits follows).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct KvmTdxCapabilities {
    /// TD attributes the module and KVM allow.
    pub supported_attrs: u64,
    /// XFAM bits the module and KVM allow.
    pub supported_xfam: u64,
    /// TDVMCALLs KVM handles itself (leaf 1, R11).
    pub kernel_tdvmcallinfo_1_r11: u64,
    /// TDVMCALLs KVM forwards to userspace (leaf 1, R11).
    pub user_tdvmcallinfo_1_r11: u64,
    /// TDVMCALLs KVM handles itself (leaf 1, R12).
    pub kernel_tdvmcallinfo_1_r12: u64,
    /// TDVMCALLs KVM forwards to userspace (leaf 1, R12).
    pub user_tdvmcallinfo_1_r12: u64,
    /// Reserved, zero.
    pub reserved: [u64; 250],
    /// Configurable CPUID bits (header; entries follow).
    pub cpuid: Cpuid2Header,
}

impl Default for KvmTdxCapabilities {
    fn default() -> Self {
        KvmTdxCapabilities {
            supported_attrs: 0,
            supported_xfam: 0,
            kernel_tdvmcallinfo_1_r11: 0,
            user_tdvmcallinfo_1_r11: 0,
            kernel_tdvmcallinfo_1_r12: 0,
            user_tdvmcallinfo_1_r12: 0,
            reserved: [0; 250],
            cpuid: Cpuid2Header::default(),
        }
    }
}

/// `struct kvm_tdx_init_vm` (the fixed 256 bytes of TD_PARAMS; a `kvm_cpuid2` follows).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KvmTdxInitVm {
    /// TD attributes.
    pub attributes: u64,
    /// Extended features the TD may use (XCR0 | IA32_XSS bits).
    pub xfam: u64,
    /// MRCONFIGID (SHA-384 sized, software defined).
    pub mrconfigid: [u64; 6],
    /// MROWNER.
    pub mrowner: [u64; 6],
    /// MROWNERCONFIG.
    pub mrownerconfig: [u64; 6],
    /// Reserved, zero.
    pub reserved: [u64; 12],
    /// The TD's CPUID configuration (header; entries follow).
    pub cpuid: Cpuid2Header,
}

/// `struct kvm_tdx_init_mem_region`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmTdxInitMemRegion {
    /// Userspace address of the source pages.
    pub source_addr: u64,
    /// First GPA.
    pub gpa: u64,
    /// Number of 4 KiB pages.
    pub nr_pages: u64,
}

/// The TDX fields of `struct kvm_run` for `KVM_EXIT_TDX` (at the exit union, offset 32).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KvmRunTdx {
    /// Reserved flags.
    pub flags: u64,
    /// The TDVMCALL sub-function.
    pub nr: u64,
    /// The return code for the guest (first word of every union member).
    pub ret: u64,
    /// Sub-function arguments (`get_quote`: gpa, size; `get_tdvmcall_info`: leaf, r11..r14;
    /// `setup_event_notify`: vector).
    pub args: [u64; 5],
}

// Layouts from Linux 6.16 arch/x86/include/uapi/asm/kvm.h.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<KvmTdxCmd>() == 24);
    assert!(offset_of!(KvmTdxCmd, data) == 8);
    assert!(offset_of!(KvmTdxCmd, hw_error) == 16);
    assert!(size_of::<Cpuid2Header>() == size_of::<kvm_bindings::kvm_cpuid2>());
    assert!(offset_of!(KvmTdxCapabilities, kernel_tdvmcallinfo_1_r11) == 16);
    assert!(offset_of!(KvmTdxCapabilities, user_tdvmcallinfo_1_r12) == 40);
    assert!(offset_of!(KvmTdxCapabilities, reserved) == 48);
    assert!(offset_of!(KvmTdxCapabilities, cpuid) == 2048);
    assert!(size_of::<KvmTdxCapabilities>() == 2056);
    assert!(offset_of!(KvmTdxInitVm, mrconfigid) == 16);
    assert!(offset_of!(KvmTdxInitVm, mrowner) == 64);
    assert!(offset_of!(KvmTdxInitVm, mrownerconfig) == 112);
    assert!(offset_of!(KvmTdxInitVm, reserved) == 160);
    assert!(offset_of!(KvmTdxInitVm, cpuid) == 256);
    assert!(size_of::<KvmTdxInitVm>() == 264);
    assert!(size_of::<KvmTdxInitMemRegion>() == 24);
    assert!(offset_of!(KvmTdxInitMemRegion, nr_pages) == 16);
    assert!(size_of::<KvmRunTdx>() == 64);
    // kvm_run: exit union at 32 (the TDX member sits there).
    assert!(offset_of!(kvm_bindings::kvm_run, __bindgen_anon_1) == 32);
};
