//! SEV-SNP: `KVM_MEMORY_ENCRYPT_OP` command ids and structs (from kvm-bindings), page types, and
//! the firmware's status codes.

pub use kvm_bindings::{
    kvm_sev_cmd, kvm_sev_init, kvm_sev_snp_launch_finish, kvm_sev_snp_launch_start,
    kvm_sev_snp_launch_update,
};

/// `KVM_SEV_INIT2`.
pub const KVM_SEV_INIT2: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_INIT2;
/// `KVM_SEV_SNP_LAUNCH_START`.
pub const KVM_SEV_SNP_LAUNCH_START: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_START;
/// `KVM_SEV_SNP_LAUNCH_UPDATE`.
pub const KVM_SEV_SNP_LAUNCH_UPDATE: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_UPDATE;
/// `KVM_SEV_SNP_LAUNCH_FINISH`.
pub const KVM_SEV_SNP_LAUNCH_FINISH: u32 = kvm_bindings::sev_cmd_id_KVM_SEV_SNP_LAUNCH_FINISH;

/// `SNP_LAUNCH_UPDATE` page types (the firmware's PAGE_TYPE).
pub mod page_type {
    /// Measured data.
    pub const NORMAL: u8 = 1;
    /// A VMSA: only KVM creates these (at `LAUNCH_FINISH`); userspace may not.
    pub const VMSA: u8 = 2;
    /// A zero page, measured as such.
    pub const ZERO: u8 = 3;
    /// Data that is not measured.
    pub const UNMEASURED: u8 = 4;
    /// The secrets page.
    pub const SECRETS: u8 = 5;
    /// The CPUID page.
    pub const CPUID: u8 = 6;

    /// The firmware's name of a page type.
    pub fn name(t: u8) -> &'static str {
        match t {
            NORMAL => "NORMAL",
            VMSA => "VMSA",
            ZERO => "ZERO",
            UNMEASURED => "UNMEASURED",
            SECRETS => "SECRETS",
            CPUID => "CPUID",
            _ => "unknown",
        }
    }
}

/// `SVM_SEV_FEAT_SNP_ACTIVE`: KVM sets it itself for SNP VMs; it is not a valid
/// `vmsa_features` bit in `KVM_SEV_INIT2`.
pub const SEV_FEAT_SNP_ACTIVE: u64 = 1;
/// `SVM_SEV_FEAT_DEBUG_SWAP`, the feature KVM offers through `KVM_SEV_INIT2`.
pub const SEV_FEAT_DEBUG_SWAP: u64 = 1 << 5;

/// Guest policy bit that must be one (`SNP_POLICY_MASK_RSVD_MBO`).
pub const POLICY_RSVD_MBO: u64 = 1 << 17;
/// Policy bits KVM accepts (`SNP_POLICY_MASK_VALID`: ABI minor/major, SMT, RSVD_MBO, DEBUG,
/// SINGLE_SOCKET).
pub const POLICY_VALID: u64 = 0xffff | (1 << 16) | POLICY_RSVD_MBO | (1 << 19) | (1 << 20);
/// QEMU's default policy: SMT allowed, reserved bit set.
pub const DEFAULT_POLICY: u64 = 0x30000;
/// GHCB protocol version used for SNP guests.
pub const GHCB_VERSION: u16 = 2;

/// SEV firmware status: `INVALID_PARAM` (e.g. a CPUID page the firmware rejects).
pub const SEV_RET_INVALID_PARAM: u32 = 0x16;
/// SEV firmware status: `BAD_SIGNATURE`.
pub const SEV_RET_BAD_SIGNATURE: u32 = 0x0a;
/// SEV firmware status: `BAD_MEASUREMENT`.
pub const SEV_RET_BAD_MEASUREMENT: u32 = 0x0b;
/// SEV firmware status: `POLICY_FAILURE`.
pub const SEV_RET_POLICY_FAILURE: u32 = 0x07;

/// The name of a SEV firmware status code (SEV-SNP firmware ABI, "Status Codes").
pub fn fw_error_name(code: u32) -> &'static str {
    match code {
        0x00 => "SUCCESS",
        0x01 => "INVALID_PLATFORM_STATE",
        0x02 => "INVALID_GUEST_STATE",
        0x03 => "INVALID_CONFIG",
        0x04 => "INVALID_LENGTH",
        0x05 => "ALREADY_OWNED",
        0x06 => "INVALID_CERTIFICATE",
        0x07 => "POLICY_FAILURE",
        0x08 => "INACTIVE",
        0x09 => "INVALID_ADDRESS",
        0x0a => "BAD_SIGNATURE",
        0x0b => "BAD_MEASUREMENT",
        0x0c => "ASID_OWNED",
        0x0d => "INVALID_ASID",
        0x0e => "WBINVD_REQUIRED",
        0x0f => "DF_FLUSH_REQUIRED",
        0x10 => "INVALID_GUEST",
        0x11 => "INVALID_COMMAND",
        0x12 => "ACTIVE",
        0x13 => "HWERROR_PLATFORM",
        0x14 => "HWERROR_UNSAFE",
        0x15 => "UNSUPPORTED",
        0x16 => "INVALID_PARAM",
        0x17 => "RESOURCE_LIMIT",
        0x18 => "SECURE_DATA_INVALID",
        0x19 => "INVALID_PAGE_SIZE",
        0x1a => "INVALID_PAGE_STATE",
        0x1b => "INVALID_MDATA_ENTRY",
        0x1c => "INVALID_PAGE_OWNER",
        0x1d => "AEAD_OFLOW",
        0x1f => "RMP_INIT_REQUIRED",
        0x20 => "BAD_SVN",
        0x21 => "BAD_VERSION",
        0x22 => "SHUTDOWN_REQUIRED",
        0x23 => "UPDATE_FAILED",
        0x24 => "RESTORE_REQUIRED",
        0x25 => "RMP_INITIALIZATION_FAILED",
        0x26 => "INVALID_KEY",
        _ => "unknown",
    }
}

// Layouts of Linux's uapi (platform.md lists the sizes; offsets from the kernel header).
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<kvm_sev_cmd>() == 24);
    assert!(offset_of!(kvm_sev_cmd, data) == 8);
    assert!(offset_of!(kvm_sev_cmd, error) == 16);
    assert!(offset_of!(kvm_sev_cmd, sev_fd) == 20);
    assert!(size_of::<kvm_sev_init>() == 48);
    assert!(offset_of!(kvm_sev_init, ghcb_version) == 12);
    assert!(size_of::<kvm_sev_snp_launch_start>() == 64);
    assert!(offset_of!(kvm_sev_snp_launch_start, gosvw) == 8);
    assert!(offset_of!(kvm_sev_snp_launch_start, flags) == 24);
    assert!(size_of::<kvm_sev_snp_launch_update>() == 64);
    assert!(offset_of!(kvm_sev_snp_launch_update, len) == 16);
    assert!(offset_of!(kvm_sev_snp_launch_update, type_) == 24);
    assert!(offset_of!(kvm_sev_snp_launch_update, flags) == 26);
    assert!(size_of::<kvm_sev_snp_launch_finish>() == 88);
    assert!(offset_of!(kvm_sev_snp_launch_finish, id_block_en) == 16);
    assert!(offset_of!(kvm_sev_snp_launch_finish, host_data) == 19);
    assert!(offset_of!(kvm_sev_snp_launch_finish, flags) == 54);
};
