//! What both confidential platforms share at the ioctl boundary: the command error, private
//! guest memory (guest_memfd slots and memory attributes) and vCPU creation.
//!
//! The launch drivers ([`crate::snp::launch`], [`crate::tdx::launch`]) talk to the platform only
//! through these traits. Two implementations sit below: the real one over KVM ioctls and the
//! software model (the `--dry-run` and the tests' oracle).

use std::fmt;

/// A rule of the platform's launch sequence, as the model enforces it (KVM and the firmware /
/// TDX module enforce the same rules on hardware).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// A command came in a state where the platform does not accept it (e.g. before INIT2).
    Order,
    /// Launch data must go into private (guest_memfd-backed) memory set PRIVATE beforehand.
    NotPrivate,
    /// Addresses and lengths are 4 KiB aligned and non-empty.
    Alignment,
    /// Userspace may not import VMSA pages; KVM builds them at `SNP_LAUNCH_FINISH`.
    VmsaFromUserspace,
    /// Nothing is imported, created or changed after the launch is finished.
    AfterFinish,
    /// The SNP CPUID page breaks the firmware's CPUID policy.
    CpuidPage,
    /// A page is imported (SNP) or added (TDX) twice.
    PageTwice,
    /// TDX: `INIT_VM` comes before any vCPU, and only once.
    InitVmBeforeVcpus,
    /// A value is outside what the platform supports (policy, features, attributes, XFAM).
    Unsupported,
    /// A memory slot is malformed or overlaps another.
    Slot,
    /// A vCPU's state cannot be launched (e.g. DR7 bits set, unknown vCPU).
    VcpuState,
    /// The SNP ID block does not verify, or names another digest or policy than the launch's.
    IdBlock,
}

/// A platform command failed: which command, the errno, the firmware / TDX module status where
/// there is one, and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// The command, e.g. `SNP_LAUNCH_UPDATE`.
    pub command: &'static str,
    /// The errno KVM returned (or would return).
    pub errno: i32,
    /// The SEV firmware status (`kvm_sev_cmd.error`) or TDX SEAMCALL status (`hw_error`).
    pub fw_error: Option<u64>,
    /// The launch rule broken, when the model (or Veil's own checks) know it.
    pub rule: Option<Rule>,
    /// What happened, in words.
    pub detail: String,
}

impl CommandError {
    /// An error of `command` with `errno` and a description.
    pub fn new(command: &'static str, errno: i32, detail: impl Into<String>) -> Self {
        CommandError {
            command,
            errno,
            fw_error: None,
            rule: None,
            detail: detail.into(),
        }
    }

    /// A broken launch rule.
    pub fn rule(command: &'static str, errno: i32, rule: Rule, detail: impl Into<String>) -> Self {
        CommandError {
            rule: Some(rule),
            ..CommandError::new(command, errno, detail)
        }
    }

    /// The same error with a firmware status.
    pub fn with_fw(mut self, fw: u64) -> Self {
        self.fw_error = Some(fw);
        self
    }

    /// An error from the last OS error of a real ioctl.
    pub fn last_os(command: &'static str, err: &std::io::Error, detail: impl Into<String>) -> Self {
        CommandError::new(command, err.raw_os_error().unwrap_or(0), detail)
    }

    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match (self.command, self.errno) {
            (_, libc::ENOTTY) | (_, libc::ENOSYS) => {
                "the running kernel lacks this interface; SEV-SNP needs Linux 6.11+, TDX 6.16+"
            }
            (_, libc::EPERM) | (_, libc::EACCES) => {
                "run as a user with access to /dev/kvm and /dev/sev (or root)"
            }
            (_, libc::ENOMEM) | (_, libc::ENOSPC) => {
                "the host is out of memory or of encrypted-VM slots (ASIDs / TDX KeyIDs); stop \
                 other confidential guests or lower --memory"
            }
            ("KVM_SEV_INIT2" | "SNP_LAUNCH_START", _) => {
                "check that SEV-SNP is enabled in the firmware and kvm_amd (sev_snp=1), and that \
                 --policy and the guest features are ones this platform supports"
            }
            ("SNP_LAUNCH_UPDATE", _) => {
                "check the payload's page layout (4 KiB aligned, inside guest memory, each page once)"
            }
            ("SNP_LAUNCH_FINISH", _) => {
                "check the ID block and ID auth block (they must sign this launch digest and \
                 policy) and --host-data"
            }
            ("KVM_TDX_INIT_VM", _) => {
                "check the TD attributes and XFAM against KVM_TDX_CAPABILITIES (veil host-check)"
            }
            ("KVM_CREATE_VM", _) => "run `veil host-check` to see which VM types this host offers",
            _ => "run `veil host-check` and compare with docs/launch.md",
        }
    }
}

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.command, self.detail)?;
        write!(f, " (errno {}", errno_name(self.errno))?;
        if let Some(fw) = self.fw_error {
            if self.command.starts_with("KVM_TDX") {
                write!(f, ", TDX module status {fw:#018x}")?;
            } else {
                write!(
                    f,
                    ", firmware error {fw:#x} {}",
                    crate::sys::snp::fw_error_name(fw as u32)
                )?;
            }
        }
        write!(f, "); {}", self.hint())
    }
}

impl std::error::Error for CommandError {}

/// The symbolic name of an errno value.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EINVAL => "EINVAL",
        libc::EIO => "EIO",
        libc::EAGAIN => "EAGAIN",
        libc::EFAULT => "EFAULT",
        libc::EEXIST => "EEXIST",
        libc::E2BIG => "E2BIG",
        libc::ENOTTY => "ENOTTY",
        libc::ENOMEM => "ENOMEM",
        libc::EPERM => "EPERM",
        libc::EBUSY => "EBUSY",
        libc::EINTR => "EINTR",
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        _ => return format!("{e}"),
    };
    name.to_string()
}

/// A guest-physical memory slot backed by guest_memfd (private) plus a shared view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotSpec {
    /// KVM slot number.
    pub slot: u32,
    /// First GPA (4 KiB aligned).
    pub gpa: u64,
    /// Size in bytes (multiple of 4 KiB).
    pub size: u64,
}

/// Private guest memory and vCPUs: the part of the ioctl boundary both platforms share.
pub trait PrivateMemory {
    /// Creates a guest_memfd of `spec.size`, maps a shared view for devices and registers both
    /// with `KVM_SET_USER_MEMORY_REGION2` (`KVM_MEM_GUEST_MEMFD`).
    fn add_slot(&mut self, spec: SlotSpec) -> Result<(), CommandError>;

    /// `KVM_SET_MEMORY_ATTRIBUTES` over `[gpa, gpa + size)`: private or shared.
    fn set_memory_attributes(
        &mut self,
        gpa: u64,
        size: u64,
        private: bool,
    ) -> Result<(), CommandError>;

    /// Frees the backing of a range that just changed kind: the private (guest_memfd) pages of
    /// a range made shared, or the shared view's pages of a range made private.
    fn discard(&mut self, gpa: u64, size: u64, private_backing: bool) -> Result<(), CommandError>;

    /// Turns on `KVM_CAP_EXIT_HYPERCALL` for `KVM_HC_MAP_GPA_RANGE`, so that the guest's
    /// page-state changes come to userspace.
    fn enable_page_state_exits(&mut self) -> Result<(), CommandError>;

    /// `KVM_CREATE_VCPU` with `id`.
    fn create_vcpu(&mut self, id: u32) -> Result<(), CommandError>;
}
