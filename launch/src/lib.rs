//! Platform backends (plain, SEV-SNP, TDX), host capability probing and attestation verification.
//!
//! The confidential backends are split at the ioctl boundary: [`snp::SnpPlatform`] and
//! [`tdx::TdxPlatform`] are one method per kernel command, implemented by KVM (`snp::kvm`,
//! `tdx::kvm`) and by software models (`snp::model`, `tdx::model`) that enforce the launch rules
//! and compute the digest the hardware would. The launch drivers above the traits replay a
//! [`veil_firmware::LaunchPlan`]; `veil run --dry-run` drives the models.
pub mod attest;
pub mod host;

pub mod backend;
pub mod dry_run;
pub mod error;
pub mod kvm_vm;
pub mod layout;
mod model_memory;
pub mod pages;
pub mod platform;
pub mod regs;
pub mod runtime;
pub mod snp;
pub mod sys;
pub mod tdx;

pub use error::LaunchError;
pub use model_memory::{ModelMemory, RangeSet};
#[cfg(test)]
mod tests;
