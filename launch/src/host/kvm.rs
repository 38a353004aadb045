//! `/dev/kvm` and what KVM reports through `KVM_CHECK_EXTENSION` on the system fd.

use kvm_bindings::{
    KVM_CAP_EXIT_HYPERCALL, KVM_CAP_GUEST_MEMFD, KVM_CAP_MEMORY_ATTRIBUTES, KVM_CAP_USER_MEMORY2,
    KVM_CAP_VM_TYPES, KVM_MEMORY_ATTRIBUTE_PRIVATE,
};
use kvm_ioctls::Kvm;
use serde::Serialize;

use super::Feature;
use super::sysfs::kernel_reason;

/// `KVM_HC_MAP_GPA_RANGE`: the hypercall through which SNP and TDX guests convert memory
/// between private and shared (not in kvm-bindings).
const KVM_HC_MAP_GPA_RANGE: u32 = 12;

/// A KVM x86 VM type (`KVM_CREATE_VM` argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmType {
    /// `KVM_X86_DEFAULT_VM` (0): a plain VM.
    Default = 0,
    /// `KVM_X86_SW_PROTECTED_VM` (1): private memory without hardware protection, for testing.
    SwProtected = 1,
    /// `KVM_X86_SEV_VM` (2).
    Sev = 2,
    /// `KVM_X86_SEV_ES_VM` (3).
    SevEs = 3,
    /// `KVM_X86_SNP_VM` (4).
    Snp = 4,
    /// `KVM_X86_TDX_VM` (5).
    Tdx = 5,
}

impl VmType {
    /// Every VM type Linux defines for x86, in id order.
    pub const ALL: [VmType; 6] = [
        VmType::Default,
        VmType::SwProtected,
        VmType::Sev,
        VmType::SevEs,
        VmType::Snp,
        VmType::Tdx,
    ];

    /// The `KVM_CREATE_VM` type number.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Short name, as in `veil host-check` output.
    pub fn name(self) -> &'static str {
        match self {
            VmType::Default => "default",
            VmType::SwProtected => "sw-protected",
            VmType::Sev => "sev",
            VmType::SevEs => "sev-es",
            VmType::Snp => "sev-snp",
            VmType::Tdx => "tdx",
        }
    }
}

/// Whether KVM offers one VM type.
#[derive(Debug, Clone, Serialize)]
pub struct VmTypeFact {
    /// The `KVM_CREATE_VM` type number.
    pub id: u32,
    /// Its short name.
    pub name: &'static str,
    /// Offered or not, and why.
    #[serde(flatten)]
    pub support: Feature,
}

/// KVM's answers on this host; numbers are `None` when `/dev/kvm` could not be opened.
#[derive(Debug, Clone, Serialize)]
pub struct KvmFacts {
    /// Opening `/dev/kvm`.
    pub device: Feature,
    /// Loaded KVM modules (`kvm`, `kvm_amd`, `kvm_intel`, ...).
    pub modules: Vec<String>,
    /// `KVM_GET_API_VERSION` (12 on every kernel since 2.6.22).
    pub api_version: Option<i32>,
    /// `KVM_CAP_NR_VCPUS`: recommended maximum vCPUs per VM.
    pub recommended_vcpus: Option<usize>,
    /// `KVM_CAP_MAX_VCPUS`: hard maximum vCPUs per VM.
    pub max_vcpus: Option<usize>,
    /// `KVM_CAP_MAX_VCPU_ID`.
    pub max_vcpu_id: Option<usize>,
    /// `KVM_CAP_NR_MEMSLOTS`: memory slots per address space.
    pub memslots: Option<usize>,
    /// `KVM_CAP_VM_TYPES` as KVM returned it (a bit per offered type); `None` without KVM.
    pub vm_types_mask: Option<u32>,
    /// Each x86 VM type, offered or not.
    pub vm_types: Vec<VmTypeFact>,
    /// `KVM_CAP_USER_MEMORY2` (`KVM_SET_USER_MEMORY_REGION2`).
    pub user_memory2: Feature,
    /// `KVM_CAP_GUEST_MEMFD` (`KVM_CREATE_GUEST_MEMFD`).
    pub guest_memfd: Feature,
    /// `KVM_CAP_MEMORY_ATTRIBUTES` with `KVM_MEMORY_ATTRIBUTE_PRIVATE`.
    pub memory_attributes: Feature,
    /// `KVM_CAP_EXIT_HYPERCALL` with `KVM_HC_MAP_GPA_RANGE` (page-state changes to userspace).
    pub exit_hypercall_map_gpa: Feature,
}

impl KvmFacts {
    /// Opens `/dev/kvm` and asks it; `modules` are the loaded KVM modules, `kernel` the
    /// running kernel's `(major, minor)` (for reasons).
    pub fn probe(modules: &[String], kernel: Option<(u32, u32)>) -> Self {
        match Kvm::new() {
            Ok(kvm) => Self::from_kvm(&kvm, modules, kernel),
            Err(e) => Self::without_kvm(open_failure(e.errno()), modules),
        }
    }

    fn from_kvm(kvm: &Kvm, modules: &[String], kernel: Option<(u32, u32)>) -> Self {
        let since_6_8 = |otherwise: &str| kernel_reason(kernel, (6, 8), otherwise);
        let cap = |c: u32| kvm.check_extension_raw(c.into());
        let raw_types = cap(KVM_CAP_VM_TYPES);
        let mask = u32::try_from(raw_types).unwrap_or(0);
        let vm_types = VmType::ALL
            .iter()
            .map(|&t| VmTypeFact {
                id: t.id(),
                name: t.name(),
                support: vm_type_support(t, mask, &since_6_8("KVM is not x86 KVM")),
            })
            .collect();

        let memory2 = cap(KVM_CAP_USER_MEMORY2);
        let gmem = cap(KVM_CAP_GUEST_MEMFD);
        let attrs = u32::try_from(cap(KVM_CAP_MEMORY_ATTRIBUTES)).unwrap_or(0);
        let hypercalls = u32::try_from(cap(KVM_CAP_EXIT_HYPERCALL)).unwrap_or(0);
        KvmFacts {
            device: Feature::present("/dev/kvm opens read-write"),
            modules: modules.to_vec(),
            api_version: Some(kvm.get_api_version()),
            recommended_vcpus: Some(kvm.get_nr_vcpus()),
            max_vcpus: Some(kvm.get_max_vcpus()),
            max_vcpu_id: Some(kvm.get_max_vcpu_id()),
            memslots: Some(kvm.get_nr_memslots()),
            vm_types_mask: Some(mask),
            vm_types,
            user_memory2: if memory2 > 0 {
                Feature::present("KVM_CAP_USER_MEMORY2 offered")
            } else {
                Feature::absent(format!(
                    "KVM_CAP_USER_MEMORY2 not offered ({})",
                    since_6_8("unexpected on this kernel")
                ))
            },
            guest_memfd: if gmem > 0 {
                Feature::present("KVM_CAP_GUEST_MEMFD offered")
            } else {
                Feature::absent(format!(
                    "KVM_CAP_GUEST_MEMFD not offered ({})",
                    since_6_8("kernel built without guest_memfd support")
                ))
            },
            memory_attributes: if attrs & KVM_MEMORY_ATTRIBUTE_PRIVATE != 0 {
                Feature::present(format!(
                    "KVM_CAP_MEMORY_ATTRIBUTES = {attrs:#x} includes PRIVATE"
                ))
            } else {
                Feature::absent(format!(
                    "KVM_CAP_MEMORY_ATTRIBUTES = {attrs:#x} lacks PRIVATE ({})",
                    since_6_8(
                        "kernel built without KVM_GENERIC_MEMORY_ATTRIBUTES, which SEV-SNP, \
                         TDX or SW_PROTECTED_VM support selects"
                    )
                ))
            },
            exit_hypercall_map_gpa: if hypercalls & (1 << KVM_HC_MAP_GPA_RANGE) != 0 {
                Feature::present(format!(
                    "KVM_CAP_EXIT_HYPERCALL = {hypercalls:#x} includes KVM_HC_MAP_GPA_RANGE"
                ))
            } else {
                Feature::absent(format!(
                    "KVM_CAP_EXIT_HYPERCALL = {hypercalls:#x} lacks KVM_HC_MAP_GPA_RANGE \
                     (bit 12)"
                ))
            },
        }
    }

    fn without_kvm(reason: String, modules: &[String]) -> Self {
        let absent = || Feature::absent(format!("no KVM: {reason}"));
        KvmFacts {
            device: Feature::absent(reason.clone()),
            modules: modules.to_vec(),
            api_version: None,
            recommended_vcpus: None,
            max_vcpus: None,
            max_vcpu_id: None,
            memslots: None,
            vm_types_mask: None,
            vm_types: VmType::ALL
                .iter()
                .map(|&t| VmTypeFact {
                    id: t.id(),
                    name: t.name(),
                    support: absent(),
                })
                .collect(),
            user_memory2: absent(),
            guest_memfd: absent(),
            memory_attributes: absent(),
            exit_hypercall_map_gpa: absent(),
        }
    }

    /// The fact for one VM type.
    pub fn vm_type(&self, t: VmType) -> &VmTypeFact {
        self.vm_types
            .iter()
            .find(|f| f.id == t.id())
            .expect("vm_types lists every VmType")
    }
}

/// Whether `KVM_CAP_VM_TYPES` = `mask` offers `t`; `no_cap` says why a zero mask is zero.
fn vm_type_support(t: VmType, mask: u32, no_cap: &str) -> Feature {
    if mask == 0 {
        // Kernels before 6.8 lack the capability; they create only default VMs.
        return if t == VmType::Default {
            Feature::present(format!(
                "KVM_CAP_VM_TYPES not reported ({no_cap}): only the default type exists"
            ))
        } else {
            Feature::absent(format!("KVM_CAP_VM_TYPES not reported ({no_cap})"))
        };
    }
    if mask & (1 << t.id()) != 0 {
        Feature::present(format!(
            "KVM_CAP_VM_TYPES = {mask:#x} includes type {}",
            t.id()
        ))
    } else {
        Feature::absent(format!(
            "KVM_CAP_VM_TYPES = {mask:#x} does not include type {}",
            t.id()
        ))
    }
}

/// Why `/dev/kvm` did not open.
fn open_failure(errno: i32) -> String {
    match errno {
        libc::ENOENT => "/dev/kvm does not exist (KVM not loaded, or no hardware \
                         virtualization enabled)"
            .to_string(),
        libc::EACCES | libc::EPERM => {
            "/dev/kvm: permission denied (run as root or join the kvm group)".to_string()
        }
        e => format!(
            "/dev/kvm cannot be opened: {}",
            std::io::Error::from_raw_os_error(e)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_type_mask_decoding() {
        assert!(vm_type_support(VmType::Default, 0x1, "").available);
        let snp = vm_type_support(VmType::Snp, 0x1, "");
        assert_eq!(
            snp,
            Feature::absent("KVM_CAP_VM_TYPES = 0x1 does not include type 4")
        );
        assert!(vm_type_support(VmType::Snp, 0x1d, "").available);
        assert!(vm_type_support(VmType::Default, 0, "old").available);
        assert_eq!(
            vm_type_support(VmType::Tdx, 0, "kernel 6.1 is older than 6.8"),
            Feature::absent("KVM_CAP_VM_TYPES not reported (kernel 6.1 is older than 6.8)")
        );
    }

    #[test]
    fn missing_kvm_makes_everything_absent_with_the_reason() {
        let facts = KvmFacts::without_kvm(open_failure(libc::ENOENT), &[]);
        assert!(!facts.device.available);
        assert!(facts.vm_types.iter().all(|t| !t.support.available));
        assert!(
            facts
                .guest_memfd
                .detail
                .starts_with("no KVM: /dev/kvm does not exist")
        );
    }
}
