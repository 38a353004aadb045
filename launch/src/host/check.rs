//! Whether this host can run guests of a platform, and every piece it lacks if not.

use std::fmt;

use serde::Serialize;

use super::Platform;
use super::kvm::VmType;
use super::{Feature, HostCapabilities};

/// One thing a platform needs that this host lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    /// What is needed, e.g. `KVM VM type sev-snp (4)` or `/dev/sev`.
    pub what: String,
    /// Why it is not there, as far as the host tells.
    pub why: String,
}

/// The host cannot run guests of `platform`; `missing` lists every missing piece.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PlatformMissing {
    /// The platform asked for.
    pub platform: Platform,
    /// Every missing piece, with its reason.
    pub missing: Vec<Missing>,
}

impl fmt::Display for PlatformMissing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "this host cannot run `{}` guests; missing:",
            self.platform
        )?;
        for m in &self.missing {
            write!(f, "\n  - {}: {}", m.what, m.why)?;
        }
        Ok(())
    }
}

/// Probes the host and checks that it can run guests of `platform`.
pub fn check_platform(platform: Platform) -> Result<(), PlatformMissing> {
    HostCapabilities::probe().check(platform)
}

impl HostCapabilities {
    /// Checks these facts against what `platform` needs; the error lists every missing piece.
    pub fn check(&self, platform: Platform) -> Result<(), PlatformMissing> {
        let mut missing = Vec::new();
        let mut need = |what: &str, f: &Feature| {
            if !f.available {
                missing.push(Missing {
                    what: what.to_string(),
                    why: f.detail.clone(),
                });
            }
        };
        let kvm = &self.kvm;
        need("/dev/kvm", &kvm.device);
        let vm_type = match platform {
            Platform::None => VmType::Default,
            Platform::SevSnp => VmType::Snp,
            Platform::Tdx => VmType::Tdx,
        };
        let type_what = format!("KVM VM type {} ({})", vm_type.name(), vm_type.id());
        // Without /dev/kvm every KVM fact repeats the same reason: report it once.
        if kvm.device.available {
            if kvm.api_version != Some(12) {
                need(
                    "KVM API version 12",
                    &Feature::absent(format!("KVM reports {:?}", kvm.api_version)),
                );
            }
            need(&type_what, &kvm.vm_type(vm_type).support);
        }
        match platform {
            Platform::None => {}
            Platform::SevSnp => {
                need("SEV-SNP enabled in kvm_amd", &self.sev.sev_snp);
                need("/dev/sev", &self.sev.dev_sev);
            }
            Platform::Tdx => need("TDX enabled in kvm_intel", &self.tdx.kvm_intel_tdx),
        }
        if platform != Platform::None && kvm.device.available {
            need("guest_memfd (KVM_CAP_GUEST_MEMFD)", &kvm.guest_memfd);
            need(
                "private memory attributes (KVM_CAP_MEMORY_ATTRIBUTES)",
                &kvm.memory_attributes,
            );
            need(
                "KVM_SET_USER_MEMORY_REGION2 (KVM_CAP_USER_MEMORY2)",
                &kvm.user_memory2,
            );
            need(
                "page-state hypercalls to userspace (KVM_CAP_EXIT_HYPERCALL)",
                &kvm.exit_hypercall_map_gpa,
            );
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(PlatformMissing { platform, missing })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{CpuFacts, DeviceFacts, IoUringFacts, KvmFacts, SevFacts, TdxFacts};
    use crate::host::{VmTypeFact, kvm::VmType};

    /// Facts of an SNP-capable AMD host, built by hand (no such host is available to probe).
    fn snp_host() -> HostCapabilities {
        let yes = || Feature::present("yes");
        HostCapabilities {
            kernel_release: "6.18.0".into(),
            cpu: CpuFacts {
                vendor: "AuthenticAMD".into(),
                model: "AMD EPYC 9454".into(),
                flags: vec!["svm".into(), "sev_snp".into()],
            },
            kvm: KvmFacts {
                device: yes(),
                modules: vec!["kvm".into(), "kvm_amd".into()],
                api_version: Some(12),
                recommended_vcpus: Some(64),
                max_vcpus: Some(4096),
                max_vcpu_id: Some(4096),
                memslots: Some(32764),
                vm_types_mask: Some(0x1d),
                vm_types: VmType::ALL
                    .iter()
                    .map(|&t| VmTypeFact {
                        id: t.id(),
                        name: t.name(),
                        support: if t == VmType::Tdx || t == VmType::SwProtected {
                            Feature::absent("not offered")
                        } else {
                            yes()
                        },
                    })
                    .collect(),
                user_memory2: yes(),
                guest_memfd: yes(),
                memory_attributes: yes(),
                exit_hypercall_map_gpa: yes(),
            },
            sev: SevFacts {
                dev_sev: yes(),
                sev: yes(),
                sev_es: yes(),
                sev_snp: yes(),
            },
            tdx: TdxFacts {
                kvm_intel_tdx: Feature::absent("not an Intel CPU"),
            },
            devices: DeviceFacts {
                io_uring: IoUringFacts {
                    support: yes(),
                    features: Some(0),
                },
                tun: yes(),
                vhost_net: yes(),
                vhost_vsock: yes(),
            },
        }
    }

    #[test]
    fn capable_snp_host_passes_snp_and_none_but_not_tdx() {
        let host = snp_host();
        assert_eq!(host.check(Platform::SevSnp), Ok(()));
        assert_eq!(host.check(Platform::None), Ok(()));
        let err = host.check(Platform::Tdx).unwrap_err();
        let whats: Vec<&str> = err.missing.iter().map(|m| m.what.as_str()).collect();
        assert_eq!(whats, ["KVM VM type tdx (5)", "TDX enabled in kvm_intel"]);
    }

    #[test]
    fn every_missing_snp_piece_is_listed_with_its_reason() {
        let mut host = snp_host();
        host.sev.dev_sev = Feature::absent("/dev/sev does not exist");
        host.kvm.guest_memfd = Feature::absent("KVM_CAP_GUEST_MEMFD not offered");
        let err = host.check(Platform::SevSnp).unwrap_err();
        assert_eq!(
            err.missing,
            [
                Missing {
                    what: "/dev/sev".into(),
                    why: "/dev/sev does not exist".into()
                },
                Missing {
                    what: "guest_memfd (KVM_CAP_GUEST_MEMFD)".into(),
                    why: "KVM_CAP_GUEST_MEMFD not offered".into()
                },
            ]
        );
        assert_eq!(
            err.to_string(),
            "this host cannot run `sev-snp` guests; missing:\n  - /dev/sev: /dev/sev does not \
             exist\n  - guest_memfd (KVM_CAP_GUEST_MEMFD): KVM_CAP_GUEST_MEMFD not offered"
        );
    }

    #[test]
    fn this_host_runs_plain_guests_and_refuses_snp_and_tdx_with_reasons() {
        // The development machines: working /dev/kvm, no SEV-SNP or TDX (environment docs).
        let host = HostCapabilities::probe();
        assert_eq!(host.check(Platform::None), Ok(()));
        for p in [Platform::SevSnp, Platform::Tdx] {
            let err = host.check(p).unwrap_err();
            assert!(
                err.missing
                    .iter()
                    .any(|m| m.what.starts_with("KVM VM type")),
                "{err}"
            );
            assert!(err.missing.iter().all(|m| !m.why.is_empty()), "{err}");
        }
    }
}
