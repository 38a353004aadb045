//! What this host offers a VMM: KVM and its VM types, confidential-computing support (SEV-SNP,
//! TDX), private guest memory, io_uring, tap and vhost devices.
//!
//! [`HostCapabilities::probe`] gathers the facts without creating a VM, so that `veil host-check`
//! can print them and `veil run --platform ...` can refuse an incapable host (through
//! [`check_platform`]) before it creates anything. Probing never fails: whatever is absent is
//! recorded as absent, with the reason when one is known.

mod check;
mod cpu;
mod devices;
mod kvm;
mod sysfs;

pub use check::{Missing, PlatformMissing, check_platform};
pub use cpu::CpuFacts;
pub use devices::{DeviceFacts, IoUringFacts};
pub use kvm::{KvmFacts, VmType, VmTypeFact};
pub use sysfs::{SevFacts, TdxFacts};
/// The platform enum is the launch plan's own, so host checks and plans never disagree on names.
pub use veil_firmware::plan::Platform;

use serde::Serialize;

/// One capability: whether it is there, and what was found or why it is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// True when the capability can be used.
    pub available: bool,
    /// What was found when available; the reason when absent.
    pub detail: String,
}

impl Feature {
    /// A capability that is there.
    pub fn present(detail: impl Into<String>) -> Self {
        Feature {
            available: true,
            detail: detail.into(),
        }
    }

    /// A capability that is not there, and why.
    pub fn absent(reason: impl Into<String>) -> Self {
        Feature {
            available: false,
            detail: reason.into(),
        }
    }
}

/// Everything `veil host-check` reports about this host.
#[derive(Debug, Clone, Serialize)]
pub struct HostCapabilities {
    /// `uname -r` of the running kernel.
    pub kernel_release: String,
    /// The CPU as `/proc/cpuinfo` describes it.
    pub cpu: CpuFacts,
    /// `/dev/kvm` and what KVM reports through `KVM_CHECK_EXTENSION`.
    pub kvm: KvmFacts,
    /// AMD SEV, SEV-ES and SEV-SNP host support.
    pub sev: SevFacts,
    /// Intel TDX host support.
    pub tdx: TdxFacts,
    /// io_uring, tap and vhost.
    pub devices: DeviceFacts,
}

impl HostCapabilities {
    /// Probes this host. Creates no VM; opens and closes `/dev/kvm`, `/dev/sev`,
    /// `/dev/net/tun`, the vhost devices and one io_uring instance.
    pub fn probe() -> Self {
        let cpu = CpuFacts::probe();
        let kvm_modules = sysfs::kvm_modules();
        let kernel_release = sysfs::kernel_release();
        let version = sysfs::kernel_version(&kernel_release);
        HostCapabilities {
            kvm: KvmFacts::probe(&kvm_modules, version),
            sev: SevFacts::probe(&cpu, &kvm_modules, version),
            tdx: TdxFacts::probe(&cpu, &kvm_modules, version),
            kernel_release,
            devices: DeviceFacts::probe(),
            cpu,
        }
    }

    /// The facts as pretty-printed JSON (the output of `veil host-check --json`).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .expect("HostCapabilities holds only strings, numbers, booleans and lists")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_finds_this_hosts_kvm_and_serializes() {
        let caps = HostCapabilities::probe();
        // The development machines and CI have a working /dev/kvm (see environment docs).
        assert!(caps.kvm.device.available, "{}", caps.kvm.device.detail);
        assert_eq!(caps.kvm.api_version, Some(12));
        let json: serde_json::Value = serde_json::from_str(&caps.to_json()).unwrap();
        assert_eq!(json["kvm"]["api_version"], 12);
        assert_eq!(json["kvm"]["vm_types"][0]["name"], "default");
    }
}
