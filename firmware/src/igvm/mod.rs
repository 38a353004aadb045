//! IGVM files: loading one into a [`crate::plan::LaunchPlan`] for a platform, and building one
//! from an OVMF image (`veil igvm build`).

pub mod build;
pub mod load;
mod params;

pub use build::{IgvmBuildError, build};
pub use load::load;

use crate::plan::Platform;

/// What is wrong with an IGVM file, or why it cannot launch under KVM.
#[derive(Debug, thiserror::Error)]
pub enum IgvmLoadError {
    /// The igvm crate rejected the file (bad magic, CRC mismatch, header past the end, unknown
    /// required header, ...).
    #[error("{0}")]
    Parse(igvm::Error),
    /// The file has no platform header for the requested platform.
    #[error("the file does not support platform {wanted} (it supports: {supported})")]
    PlatformNotSupported {
        /// The requested platform.
        wanted: Platform,
        /// What the file declares.
        supported: String,
    },
    /// A page is not 4 KiB aligned or overlaps an earlier one.
    #[error("page data at {gpa:#x} overlaps the import {other:?} at {other_gpa:#x}")]
    Overlap {
        /// The GPA of the later page.
        gpa: u64,
        /// The earlier import's label.
        other: String,
        /// Its GPA.
        other_gpa: u64,
    },
    /// A page lies outside guest memory.
    #[error(
        "{what} at {gpa:#x}+{size:#x} lies outside guest memory ({memory:#x} bytes of RAM plus \
         the firmware window below 4 GiB)"
    )]
    OutsideMemory {
        /// The directive.
        what: String,
        /// GPA.
        gpa: u64,
        /// Size.
        size: u64,
        /// Guest memory size.
        memory: u64,
    },
    /// A directive KVM cannot carry out, or that Veil does not support.
    #[error("{0}")]
    Unsupported(String),
    /// A rule KVM imposes on SNP VP contexts is broken.
    #[error("SEV-SNP VMSA breaks KVM's rules: {0}")]
    KvmVmsaRule(String),
}

/// The IGVM isolation type of a platform.
pub(crate) fn isolation(p: Platform) -> igvm_defs::IgvmPlatformType {
    match p {
        Platform::None => igvm_defs::IgvmPlatformType::NATIVE,
        Platform::SevSnp => igvm_defs::IgvmPlatformType::SEV_SNP,
        Platform::Tdx => igvm_defs::IgvmPlatformType::TDX,
    }
}

#[cfg(test)]
mod tests;
