//! Modern virtio-pci (virtio 1.2, 4.1) on bus 0: configuration space through mechanism #1
//! (ports 0xCF8/0xCFC) or, when no host bridge answers there, the ECAM window at 0xe000_0000;
//! the vendor capabilities locate the common configuration, notification area, ISR and device
//! configuration inside the memory BARs; the MSI-X capability locates the vector table.

use super::reg::{r8, r16, r32, w8, w16, w32};
use super::virtqueue::Virtqueue;
use crate::checks::Why;
use crate::global::Global;
use crate::port::{inl, outl};

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
/// ECAM base for bus 0 (docs/machine.md; QEMU microvm uses the same).
const ECAM_BASE: u64 = 0xe000_0000;
const VENDOR_VIRTIO: u16 = 0x1af4;
/// Modern device ids are 0x1040 + device type.
const MODERN_ID_BASE: u16 = 0x1040;
const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
/// Where the probe places BARs the firmware left unassigned (the 32-bit PCI hole).
const BAR_HOLE: (u64, u64) = (0xc000_0000, 0xd000_0000);

/// Next free address in `BAR_HOLE` for unassigned BARs.
static NEXT_BAR: Global<u64> = Global::new(BAR_HOLE.0);

/// How configuration space is reached.
#[derive(Clone, Copy, Debug)]
enum Access {
    Ports,
    Ecam,
}

/// A function on bus 0.
#[derive(Clone, Copy, Debug)]
struct Func {
    access: Access,
    dev: u8,
    func: u8,
}

impl Func {
    fn read32(&self, off: u8) -> u32 {
        match self.access {
            Access::Ports => {
                outl(CONFIG_ADDRESS, self.address(off));
                inl(CONFIG_DATA)
            }
            Access::Ecam => r32(self.ecam(off)),
        }
    }

    fn write32(&self, off: u8, v: u32) {
        match self.access {
            Access::Ports => {
                outl(CONFIG_ADDRESS, self.address(off));
                outl(CONFIG_DATA, v);
            }
            Access::Ecam => w32(self.ecam(off), v),
        }
    }

    fn read16(&self, off: u8) -> u16 {
        (self.read32(off & !3) >> ((off & 2) * 8)) as u16
    }

    fn read8(&self, off: u8) -> u8 {
        (self.read32(off & !3) >> ((off & 3) * 8)) as u8
    }

    fn address(&self, off: u8) -> u32 {
        0x8000_0000 | u32::from(self.dev) << 11 | u32::from(self.func) << 8 | u32::from(off & !3)
    }

    fn ecam(&self, off: u8) -> u64 {
        ECAM_BASE | u64::from(self.dev) << 15 | u64::from(self.func) << 12 | u64::from(off & !3)
    }

    fn vendor_device(&self) -> (u16, u16) {
        let v = self.read32(0);
        (v as u16, (v >> 16) as u16)
    }
}

/// Whether anything answers at 00:00.0 through `access`.
fn present(access: Access) -> bool {
    let (vendor, _) = Func {
        access,
        dev: 0,
        func: 0,
    }
    .vendor_device();
    vendor != 0xffff && vendor != 0
}

fn access() -> Option<Access> {
    if present(Access::Ports) {
        Some(Access::Ports)
    } else if present(Access::Ecam) {
        Some(Access::Ecam)
    } else {
        None
    }
}

/// A modern virtio-pci function, its regions located and memory decoding on.
pub struct PciDev {
    /// Virtio device type.
    pub kind: u32,
    common: u64,
    notify: u64,
    notify_mult: u32,
    isr: u64,
    device: u64,
    /// MSI-X: (capability offset, table address, table entries); offset 0 if none.
    msix: (u8, u64, u16),
    f: Func,
}

/// Finds the first modern virtio-pci function whose type is `kinds[0]`, else `kinds[1]`, ...
pub fn find(kinds: &[u32]) -> Result<Option<PciDev>, Why> {
    let Some(access) = access() else {
        return Ok(None);
    };
    for &kind in kinds {
        for dev in 0..32u8 {
            for func in 0..8u8 {
                let f = Func { access, dev, func };
                let (vendor, device) = f.vendor_device();
                if vendor == 0xffff || vendor == 0 {
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                if vendor == VENDOR_VIRTIO
                    && device >= MODERN_ID_BASE
                    && u32::from(device - MODERN_ID_BASE) == kind
                {
                    return PciDev::new(f, kind).map(Some);
                }
                // Not multi-function: functions 1-7 do not exist.
                if func == 0 && f.read8(0x0e) & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    Ok(None)
}

impl PciDev {
    fn new(f: Func, kind: u32) -> Result<Self, Why> {
        let mut d = Self {
            kind,
            common: 0,
            notify: 0,
            notify_mult: 0,
            isr: 0,
            device: 0,
            msix: (0, 0, 0),
            f,
        };
        // Memory decoding and bus mastering off while BARs are read (and maybe assigned).
        let cmd = f.read32(0x04) & 0xffff;
        f.write32(0x04, cmd & !0x6);
        if f.read16(0x06) & 0x10 == 0 {
            return Err(Why::Text("the virtio-pci function has no capability list"));
        }
        let mut bars = [None; 6];
        let mut ptr = f.read8(0x34) & 0xfc;
        for _ in 0..48 {
            if ptr < 0x40 {
                break;
            }
            let id = f.read8(ptr);
            if id == CAP_VENDOR {
                let cfg_type = f.read8(ptr + 3);
                let bar = f.read8(ptr + 4);
                let offset = u64::from(f.read32(ptr + 8));
                let slot = match cfg_type {
                    CFG_COMMON => Some(&mut d.common),
                    CFG_NOTIFY => Some(&mut d.notify),
                    CFG_ISR => Some(&mut d.isr),
                    CFG_DEVICE => Some(&mut d.device),
                    _ => None,
                };
                if let Some(slot) = slot.filter(|s| **s == 0)
                    && bar < 6
                {
                    *slot = bar_addr(f, bar, &mut bars)? + offset;
                    if cfg_type == CFG_NOTIFY {
                        d.notify_mult = f.read32(ptr + 16);
                    }
                }
            } else if id == CAP_MSIX {
                let ctrl = f.read16(ptr + 2);
                let table = f.read32(ptr + 4);
                let base = bar_addr(f, (table & 7) as u8, &mut bars)?;
                d.msix = (ptr, base + u64::from(table & !7), (ctrl & 0x7ff) + 1);
            }
            ptr = f.read8(ptr + 1) & 0xfc;
        }
        if d.common == 0 || d.notify == 0 || d.isr == 0 {
            return Err(Why::Text(
                "the virtio-pci function lacks a common, notify or ISR capability",
            ));
        }
        // Memory decoding, bus mastering, INTx off (MSI-X or polling only).
        f.write32(0x04, cmd | 0x406);
        Ok(d)
    }

    pub(super) fn status(&self) -> u8 {
        r8(self.common + 0x14)
    }

    pub(super) fn set_status(&self, s: u8) {
        w8(self.common + 0x14, s)
    }

    pub(super) fn device_features(&self) -> u64 {
        w32(self.common, 0);
        let lo = r32(self.common + 4);
        w32(self.common, 1);
        let hi = r32(self.common + 4);
        u64::from(lo) | u64::from(hi) << 32
    }

    pub(super) fn set_driver_features(&self, f: u64) {
        w32(self.common + 8, 0);
        w32(self.common + 0xc, f as u32);
        w32(self.common + 8, 1);
        w32(self.common + 0xc, (f >> 32) as u32);
    }

    pub(super) fn queue_max(&self, q: u16) -> u16 {
        if q >= r16(self.common + 0x12) {
            return 0;
        }
        w16(self.common + 0x16, q);
        r16(self.common + 0x18)
    }

    /// Configures and enables `vq` (MSI-X `vector`) and records its notification address.
    pub(super) fn queue_setup(&self, vq: &mut Virtqueue, vector: u16) -> Result<(), Why> {
        let c = self.common;
        w16(c + 0x16, vq.index);
        w16(c + 0x18, vq.size());
        let (desc, avail, used) = vq.addrs();
        for (off, a) in [(0x20, desc), (0x28, avail), (0x30, used)] {
            w32(c + off, a as u32);
            w32(c + off + 4, (a >> 32) as u32);
        }
        w16(c + 0x1a, vector);
        if r16(c + 0x1a) != vector {
            return Err(Why::At("the device refused MSI-X vector", vector.into()));
        }
        let off = u64::from(r16(c + 0x1e));
        vq.notify_addr = self.notify + off * u64::from(self.notify_mult);
        w16(c + 0x1c, 1);
        Ok(())
    }

    pub(super) fn config8(&self, off: u64) -> u8 {
        if self.device == 0 {
            return 0;
        }
        r8(self.device + off)
    }

    pub(super) fn generation(&self) -> u32 {
        r8(self.common + 0x15).into()
    }

    /// Programs MSI-X table entry `entry` to send `vector` to the local APIC `apic_id`,
    /// unmasked, and enables MSI-X on the function.
    pub fn msix_route(&self, entry: u16, apic_id: u32, vector: u8) -> Result<(), Why> {
        let (cap, table, size) = self.msix;
        if cap == 0 {
            return Err(Why::Text("the virtio-pci function has no MSI-X capability"));
        }
        if entry >= size {
            return Err(Why::At("MSI-X table too small for entry", entry.into()));
        }
        let e = table + u64::from(entry) * 16;
        w32(e + 12, 1);
        w32(e, 0xfee0_0000 | (apic_id & 0xff) << 12);
        w32(e + 4, 0);
        w32(e + 8, u32::from(vector));
        w32(e + 12, 0);
        // Message control: enable (bit 15), function mask (bit 14) off.
        let dword = self.f.read32(cap);
        let ctrl = ((dword >> 16) as u16 | 0x8000) & !0x4000;
        self.f
            .write32(cap, (dword & 0xffff) | u32::from(ctrl) << 16);
        Ok(())
    }

    /// Masks MSI-X table entry `entry` again.
    pub fn msix_mask(&self, entry: u16) {
        let (cap, table, size) = self.msix;
        if cap != 0 && entry < size {
            w32(table + u64::from(entry) * 16 + 12, 1);
        }
    }
}

/// The address of memory BAR `bar` (cached in `bars`); an unassigned BAR is placed in the
/// 32-bit hole, a BAR above the identity map gets mapped.
fn bar_addr(f: Func, bar: u8, bars: &mut [Option<u64>; 6]) -> Result<u64, Why> {
    if bar >= 6 {
        return Err(Why::At("a virtio capability names BAR", bar.into()));
    }
    if let Some(a) = bars[usize::from(bar)] {
        return Ok(a);
    }
    let off = 0x10 + 4 * bar;
    let lo = f.read32(off);
    if lo & 1 != 0 {
        return Err(Why::At("virtio structures in an I/O BAR:", bar.into()));
    }
    let is64 = (lo >> 1) & 3 == 2;
    if is64 && bar == 5 {
        return Err(Why::Text("a 64-bit BAR in slot 5"));
    }
    let hi = if is64 { f.read32(off + 4) } else { 0 };
    let mut addr = u64::from(lo & !0xf) | u64::from(hi) << 32;
    if addr == 0 {
        // Unassigned (no firmware ran): size it and place it in the 32-bit hole.
        f.write32(off, u32::MAX);
        let mask = f.read32(off) & !0xf;
        if is64 {
            f.write32(off + 4, 0);
        }
        let size = u64::from((!mask).wrapping_add(1));
        if mask == 0 || size == 0 {
            return Err(Why::At("an unsizable BAR:", bar.into()));
        }
        let at = NEXT_BAR.get().next_multiple_of(size);
        if at + size > BAR_HOLE.1 {
            return Err(Why::At("no room in the PCI hole for a BAR of bytes:", size));
        }
        // SAFETY: only the BSP drives devices.
        unsafe { NEXT_BAR.set(at + size) };
        f.write32(off, at as u32);
        addr = at;
    }
    if addr + 0x10000 > 4 << 30 {
        // SAFETY: only the BSP touches the page tables after boot.
        if !unsafe { crate::paging::map_mmio(crate::BOOT.get_ref(), addr, 1 << 20) } {
            return Err(Why::At("cannot map the BAR at", addr));
        }
    }
    bars[usize::from(bar)] = Some(addr);
    Ok(addr)
}
