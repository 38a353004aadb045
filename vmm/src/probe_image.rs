//! The probe guest, built from `resources/probe` by `vmm/build.rs` and embedded in `veil`.
//!
//! `veil run` with no payload boots it; integration tests and benchmarks boot it to check and
//! measure the machine Veil presents. Its behaviour and output are specified in docs/probe.md.

/// The probe as an ELF64 image linked at 1 MiB: a PVH note (`XEN_ELFNOTE_PHYS32_ENTRY`, the
/// 32-bit entry) and `e_entry` = the 64-bit Linux boot protocol entry (`RSI` = `boot_params`).
pub static PROBE_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.elf"));

/// The same probe as a bzImage (boot protocol 2.12, `XLF_KERNEL_64`, loaded at 1 MiB, 64-bit entry
/// at load address + 0x200); it has no real-mode setup code, so it needs a 64-bit loader.
pub static PROBE_BZIMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.bzImage"));
