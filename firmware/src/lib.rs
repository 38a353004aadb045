//! Payload formats (IGVM, OVMF, Linux), the launch plan and offline launch measurement.
//!
//! This crate never touches KVM: everything here is pure computation over files and configuration.
//! A payload becomes a [`plan::LaunchPlan`] ([`payload::build_plan`]); [`measure::digest`] turns
//! the plan into the digest the platform will report; the launch code replays the same plan.

pub mod cpu_types;
pub mod fuzzing;
pub mod guid;
pub mod id_block;
pub mod igvm;
pub mod linux;
pub mod measure;
pub mod ovmf;
pub mod payload;
pub mod plan;

pub use payload::{KernelFiles, Payload, PayloadError, VmConfig, build_plan};
pub use plan::{LaunchPlan, PageData, PageImport, PageKind, Platform, VcpuState};
