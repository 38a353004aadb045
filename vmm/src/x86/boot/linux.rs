//! The 64-bit Linux boot protocol's `boot_params` ("zero page"), written at `0x7000`.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{CMDLINE_ADDR, Initramfs};
use crate::memory::E820Entry;
use crate::x86::acpi::RSDP_ADDR;

/// Guest-physical address of `boot_params`.
pub const BOOT_PARAMS_ADDR: u64 = 0x7000;
const BOOT_FLAG: u16 = 0xaa55;
const HDRS: u32 = 0x5372_6448;
/// "Undefined" boot loader id: Veil has none assigned.
const LOADER_UNDEFINED: u8 = 0xff;
/// Highest initramfs address when the kernel does not say (protocol default).
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// The highest end address (exclusive) an initramfs may have for this kernel.
pub fn initrd_limit(header: Option<&setup_header>, low_ram_end: u64) -> u64 {
    let max = match header {
        Some(h) if h.version >= 0x203 => u64::from(h.initrd_addr_max),
        _ => DEFAULT_INITRD_ADDR_MAX,
    };
    (max + 1).min(low_ram_end)
}

/// Builds `boot_params` from the kernel's setup header (bzImage) or a default one (ELF).
pub fn boot_params(
    header: Option<setup_header>,
    e820: &[E820Entry],
    cmdline_len: u32,
    initramfs: Option<Initramfs>,
) -> boot_params {
    let mut p = boot_params {
        hdr: header.unwrap_or_default(),
        ..Default::default()
    };
    p.hdr.boot_flag = BOOT_FLAG;
    p.hdr.header = HDRS;
    p.hdr.type_of_loader = LOADER_UNDEFINED;
    p.hdr.cmd_line_ptr = CMDLINE_ADDR as u32;
    p.hdr.cmdline_size = cmdline_len;
    if header.is_none() {
        p.hdr.kernel_alignment = 0x0100_0000;
    }
    if let Some(rd) = initramfs {
        p.hdr.ramdisk_image = rd.addr as u32;
        p.hdr.ramdisk_size = rd.size as u32;
    }
    p.acpi_rsdp_addr = RSDP_ADDR;
    for (slot, e) in p.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind as u32,
        };
    }
    p.e820_entries = e820.len().min(p.e820_table.len()) as u8;
    p
}

/// Writes `boot_params`.
pub fn write(
    mem: &GuestMemoryMmap,
    params: boot_params,
) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_obj(params, GuestAddress(BOOT_PARAMS_ADDR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryLayout;

    #[test]
    fn zero_page_describes_memory_cmdline_and_initramfs() {
        let layout = MemoryLayout::new(5 << 30);
        let rd = Initramfs {
            addr: 0x3000_0000,
            size: 4096,
        };
        let p = boot_params(None, &layout.e820(), 11, Some(rd));
        let n = p.e820_entries as usize;
        assert_eq!(n, layout.e820().len());
        let last = p.e820_table[n - 1];
        let (addr, size, ty) = (last.addr, last.size, last.r#type);
        assert_eq!((addr, size, ty), (4 << 30, 2 << 30, 1));
        let hdr = p.hdr;
        let (flag, magic, cmd, len) = (
            hdr.boot_flag,
            hdr.header,
            hdr.cmd_line_ptr,
            hdr.cmdline_size,
        );
        assert_eq!((flag, magic, cmd, len), (0xaa55, HDRS, 0x2_0000, 11));
        let (ri, rs) = (hdr.ramdisk_image, hdr.ramdisk_size);
        assert_eq!((ri, rs), (0x3000_0000, 4096));
        let rsdp = p.acpi_rsdp_addr;
        assert_eq!(rsdp, 0xe_0000);
    }

    #[test]
    fn initrd_limit_respects_the_kernel_and_ram() {
        let mut h = setup_header {
            version: 0x20f,
            initrd_addr_max: 0x7fff_ffff,
            ..Default::default()
        };
        assert_eq!(initrd_limit(Some(&h), 0xc000_0000), 0x8000_0000);
        assert_eq!(initrd_limit(Some(&h), 0x1000_0000), 0x1000_0000);
        h.version = 0x202;
        assert_eq!(initrd_limit(Some(&h), 0xc000_0000), 0x3800_0000);
        assert_eq!(initrd_limit(None, 0xc000_0000), 0x3800_0000);
    }
}
