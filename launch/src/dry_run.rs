//! `veil run --dry-run`: the real launch sequence replayed through the platform model, on any
//! host. The result is the command log and the digest the platform would report - a check a
//! CI without SNP or TDX hardware can run. It is never a substitute launch.

use veil_firmware::{LaunchPlan, Platform};

use crate::error::LaunchError;
use crate::snp::launch as snp_launch;
use crate::snp::model::{SnpModel, SnpModelConfig};
use crate::tdx::launch as tdx_launch;
use crate::tdx::model::{TdxModel, TdxModelConfig};

/// What a dry run saw and computed.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The platform modelled.
    pub platform: Platform,
    /// Every command, in order, as it crossed the platform interface.
    pub log: Vec<String>,
    /// SNP launch digest or TDX MRTD, computed by the model.
    pub digest: [u8; 48],
    /// Remarks for the user (CPUID corrections, the policy used, ...).
    pub notes: Vec<String>,
}

/// Options of both platforms (the same a real launch takes).
pub type DryRunOptions = crate::backend::LaunchOptions;

/// Replays `plan` through the model of its platform.
pub fn run(plan: &LaunchPlan, opts: &DryRunOptions) -> Result<DryRun, LaunchError> {
    match plan.platform {
        Platform::SevSnp => {
            let mut m = SnpModel::new(SnpModelConfig::default());
            let done = snp_launch::launch(&mut m, plan, &opts.snp)?;
            let digest = m
                .launch_digest()
                .expect("launch() returned Ok only after SNP_LAUNCH_FINISH succeeded");
            let mut notes = vec![format!("policy {:#x}", done.policy)];
            notes.extend(
                done.cpuid_corrections
                    .iter()
                    .map(|c| format!("CPUID corrected: {c}")),
            );
            Ok(DryRun {
                platform: Platform::SevSnp,
                log: m.log().to_vec(),
                digest,
                notes,
            })
        }
        Platform::Tdx => {
            let mut m = TdxModel::new(TdxModelConfig::default());
            let done = tdx_launch::launch(&mut m, plan, &opts.tdx)?;
            let digest = m
                .mrtd()
                .expect("launch() returned Ok only after KVM_TDX_FINALIZE_VM succeeded");
            Ok(DryRun {
                platform: Platform::Tdx,
                log: m.log().to_vec(),
                digest,
                notes: vec![format!(
                    "attributes {:#x}, xfam {:#x}, {}",
                    done.attributes,
                    done.xfam,
                    match done.td_hob {
                        Some(h) => format!("TD HOB at {h:#x}"),
                        None => "no TD HOB (the payload describes its own memory)".to_string(),
                    }
                )],
            })
        }
        Platform::None => Err(LaunchError::Invalid(
            "--dry-run models the confidential platforms (sev-snp, tdx); a plain guest has \
             nothing to model"
                .into(),
        )),
    }
}
