//! Why a launch plan could not be replayed into a platform.

use crate::platform::CommandError;
use crate::regs::UnrepresentableState;
use veil_firmware::Platform;

/// A launch failed: a platform command, or something about the plan the platform cannot do.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The plan was built for another platform.
    #[error("the launch plan is for {plan}, not {backend}")]
    WrongPlatform {
        /// The plan's platform.
        plan: Platform,
        /// The backend's.
        backend: Platform,
    },
    /// The plan starts no vCPU.
    #[error("the launch plan has no vCPUs")]
    NoVcpus,
    /// A platform command failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A vCPU state KVM cannot take.
    #[error(transparent)]
    Vcpu(#[from] UnrepresentableState),
    /// The CPUID source does not fit the SNP CPUID page.
    #[error("SNP CPUID page: {0}")]
    CpuidPage(String),
    /// A page kind the platform does not have.
    #[error("{platform} has no {kind} pages (import {label:?} at {gpa:#x})")]
    KindNotOnPlatform {
        /// The platform.
        platform: Platform,
        /// The page kind.
        kind: &'static str,
        /// The import.
        label: String,
        /// Its GPA.
        gpa: u64,
    },
    /// TDX: the plan's TD HOB GPA is not one of its imports.
    #[error(
        "the plan's TD HOB is not one of its imported sections: TDVF cannot learn the guest's memory"
    )]
    NoTdHob,
    /// TDX: the TD HOB does not fit its section.
    #[error("the TD HOB needs {need} bytes, the TD_HOB section at {gpa:#x} holds {room}")]
    HobTooLarge {
        /// Bytes needed.
        need: usize,
        /// Section size.
        room: u64,
        /// Section GPA.
        gpa: u64,
    },
    /// A value Veil or the platform does not accept.
    #[error("{0}")]
    Invalid(String),
}
