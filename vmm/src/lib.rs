//! Veil's VMM as a library: a validated `VmConfig`, a launch call and a handle to the running guest.
//!
//! The `veil` binary is a thin command line over this crate, so that cloud builders can embed Veil.
pub mod probe_image;
