//! x86_64 machine setup: CPUID, MSRs, registers, the boot GDT and page tables, MP and ACPI tables,
//! and the boot protocols.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod regs;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Writes what every guest gets whatever its boot protocol: GDT, MP table, ACPI tables.
pub fn write_platform_tables(
    mem: &GuestMemoryMmap,
    cpus: u8,
) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_slice(&gdt::table_bytes(), GuestAddress(gdt::GDT_ADDR))?;
    for (addr, bytes) in mptable::build(cpus) {
        mem.write_slice(&bytes, GuestAddress(addr))?;
    }
    mem.write_slice(&acpi::build(cpus), GuestAddress(acpi::RSDP_ADDR))
}
