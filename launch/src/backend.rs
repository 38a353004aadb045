//! The interface the VMM drives for a confidential platform: open the backend (the host is
//! checked before anything is created), launch a plan (VM, memory, replay, vCPUs,
//! finalisation), then hand the vCPUs and the VM to the run loop, which passes the platform's
//! exits to [`crate::runtime`]. The plain platform (`none`) is the VMM's own launch.

use veil_firmware::{LaunchPlan, Platform};

use crate::error::LaunchError;
use crate::host::{HostCapabilities, PlatformMissing};
use crate::kvm_vm::KvmConfidentialVm;
use crate::platform::{CommandError, SlotSpec};
use crate::snp::kvm::KvmSnp;
use crate::snp::launch::SnpOptions;
use crate::tdx::kvm::KvmTdx;
use crate::tdx::launch::TdxOptions;

/// The launch choices of both platforms (each backend reads its own).
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// SEV-SNP choices.
    pub snp: SnpOptions,
    /// TDX choices.
    pub tdx: TdxOptions,
}

/// What a launch did, for the user's log.
#[derive(Debug, Clone)]
pub struct LaunchSummary {
    /// The platform.
    pub platform: Platform,
    /// The guest_memfd slots created.
    pub slots: Vec<SlotSpec>,
    /// Remarks (policy or attributes used, CPUID corrections).
    pub notes: Vec<String>,
}

/// Why a backend could not be opened or could not launch.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The host lacks the platform; nothing was created.
    #[error(transparent)]
    HostMissing(#[from] PlatformMissing),
    /// Creating the VM failed.
    #[error(transparent)]
    Create(#[from] CommandError),
    /// `none` has no confidential backend.
    #[error("platform {0} is not a confidential platform")]
    NotConfidential(Platform),
}

/// A confidential platform backend over KVM.
pub trait ConfidentialBackend: Send + std::fmt::Debug {
    /// The platform.
    fn platform(&self) -> Platform;

    /// Sets up memory, replays `plan`, creates and prepares the vCPUs and finalises the launch.
    fn launch(
        &mut self,
        plan: &LaunchPlan,
        opts: &LaunchOptions,
    ) -> Result<LaunchSummary, LaunchError>;

    /// The VM: its fd, slots (with their shared views) and, until taken, its vCPUs.
    fn vm(&mut self) -> &mut KvmConfidentialVm;
}

impl ConfidentialBackend for KvmSnp {
    fn platform(&self) -> Platform {
        Platform::SevSnp
    }

    fn launch(
        &mut self,
        plan: &LaunchPlan,
        opts: &LaunchOptions,
    ) -> Result<LaunchSummary, LaunchError> {
        let done = crate::snp::launch::launch(self, plan, &opts.snp)?;
        let mut notes = vec![format!("policy {:#x}", done.policy)];
        notes.extend(
            done.cpuid_corrections
                .iter()
                .map(|c| format!("the firmware corrected the CPUID page: {c}")),
        );
        Ok(LaunchSummary {
            platform: Platform::SevSnp,
            slots: done.slots,
            notes,
        })
    }

    fn vm(&mut self) -> &mut KvmConfidentialVm {
        &mut self.core
    }
}

impl ConfidentialBackend for KvmTdx {
    fn platform(&self) -> Platform {
        Platform::Tdx
    }

    fn launch(
        &mut self,
        plan: &LaunchPlan,
        opts: &LaunchOptions,
    ) -> Result<LaunchSummary, LaunchError> {
        let done = crate::tdx::launch::launch(self, plan, &opts.tdx)?;
        Ok(LaunchSummary {
            platform: Platform::Tdx,
            slots: done.slots,
            notes: vec![format!(
                "attributes {:#x}, xfam {:#x}",
                done.attributes, done.xfam
            )],
        })
    }

    fn vm(&mut self) -> &mut KvmConfidentialVm {
        &mut self.core
    }
}

/// Checks that this host can run `platform` (nothing is created when it cannot).
pub fn check_host(platform: Platform) -> Result<(), PlatformMissing> {
    HostCapabilities::probe().check(platform)
}

/// Checks the host, then creates the platform's VM.
pub fn open(platform: Platform) -> Result<Box<dyn ConfidentialBackend>, BackendError> {
    if platform == Platform::None {
        return Err(BackendError::NotConfidential(platform));
    }
    check_host(platform)?;
    Ok(match platform {
        Platform::SevSnp => Box::new(KvmSnp::create()?),
        Platform::Tdx => Box::new(KvmTdx::create()?),
        Platform::None => return Err(BackendError::NotConfidential(platform)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opening_a_platform_this_host_lacks_creates_nothing_and_names_the_gaps() {
        for p in [Platform::SevSnp, Platform::Tdx] {
            match open(p) {
                Err(BackendError::HostMissing(m)) => {
                    assert!(!m.missing.is_empty());
                    assert!(m.to_string().contains(p.name()), "{m}");
                }
                Ok(_) => eprintln!("skipped: this host runs {p} guests"),
                Err(e) => panic!("{p}: unexpected {e}"),
            }
        }
        assert!(matches!(
            open(Platform::None),
            Err(BackendError::NotConfidential(_))
        ));
    }
}
