//! Offline measurement of a [`LaunchPlan`]: the digest the platform will report, without KVM.

mod pages;
pub mod plain;
mod sha384x4;
pub mod snp;
pub mod tdx;
pub mod vmsa;

use crate::plan::{LaunchPlan, Platform};

/// One measured step, handed to a trace callback.
#[derive(Debug)]
pub struct Step<'a> {
    /// GPA of the page (or block) measured.
    pub gpa: u64,
    /// What the platform did with it ("normal", "zero", "vmsa", "page.add", "mr.extend", ...).
    pub what: &'static str,
    /// The plan's label for the import.
    pub label: &'a str,
    /// The running digest after the step (for TDX, the SHA-384 of the data so far).
    pub digest: &'a [u8],
}

/// A callback that sees every measured step.
pub type Trace<'a> = dyn FnMut(Step<'_>) + 'a;

/// Why a plan cannot be measured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeasureError {
    /// The plan starts no vCPU.
    #[error("the launch plan has no vCPUs")]
    NoVcpus,
    /// A page kind the platform does not have.
    #[error("{platform} has no {kind} pages (import {label:?} at {gpa:#x})")]
    KindNotOnPlatform {
        /// The plan's platform.
        platform: Platform,
        /// The page kind.
        kind: &'static str,
        /// The import's label.
        label: String,
        /// Its GPA.
        gpa: u64,
    },
}

/// The digest of a plan for its platform: SNP launch digest, TDX MRTD, or the plain SHA-384.
pub fn digest(plan: &LaunchPlan, trace: Option<&mut Trace<'_>>) -> Result<[u8; 48], MeasureError> {
    match plan.platform {
        Platform::SevSnp => snp::digest(plan, trace),
        Platform::Tdx => tdx::mrtd(plan, trace),
        Platform::None => plain::digest(plan, trace),
    }
}
