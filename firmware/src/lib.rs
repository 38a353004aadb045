//! Payload formats (IGVM, OVMF, Linux), the launch plan and offline launch measurement.
//!
//! This crate never touches KVM: everything here is pure computation over files and configuration.
