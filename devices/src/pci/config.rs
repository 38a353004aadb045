//! A type-0 PCI configuration space: the standard header, BAR sizing and a capability list, with
//! write masks so the guest can only change what hardware would let it change.

use log::warn;

/// Size of the conventional configuration space.
pub const CONFIG_SIZE: usize = 256;
/// Size of the extended (PCIe / ECAM) configuration space.
pub const EXT_CONFIG_SIZE: usize = 4096;
/// Where the first capability goes.
pub const FIRST_CAP: u16 = 0x40;
const BAR0: usize = 0x10;
const NUM_BARS: usize = 6;
const COMMAND: usize = 0x04;
const STATUS: usize = 0x06;
const CAP_PTR: usize = 0x34;
const STATUS_CAP_LIST: u16 = 0x10;
/// Command register: memory space decoding enabled.
pub const CMD_MEMORY: u16 = 0x2;
/// Command register: bus mastering enabled.
pub const CMD_BUS_MASTER: u16 = 0x4;
/// Command register: INTx disabled.
pub const CMD_INTX_DISABLE: u16 = 0x400;

/// A memory BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    /// Current guest address.
    pub addr: u64,
    /// Size (a power of two).
    pub size: u64,
    /// 64-bit BAR (uses two slots).
    pub is64: bool,
}

/// Identification of a function.
#[derive(Debug, Clone, Copy)]
pub struct PciIds {
    /// Vendor id.
    pub vendor: u16,
    /// Device id.
    pub device: u16,
    /// Revision.
    pub revision: u8,
    /// Class code, subclass, programming interface (24 bits).
    pub class: u32,
    /// Subsystem vendor id.
    pub subsystem_vendor: u16,
    /// Subsystem id.
    pub subsystem: u16,
}

/// A configuration space.
#[derive(Debug, Clone)]
pub struct PciConfig {
    bytes: Vec<u8>,
    wmask: Vec<u8>,
    bars: [Option<Bar>; NUM_BARS],
    last_cap: Option<u16>,
    next_cap: u16,
}

impl PciConfig {
    /// A type-0 header with `ids`.
    pub fn new(ids: PciIds) -> Self {
        let mut c = Self {
            bytes: vec![0; EXT_CONFIG_SIZE],
            wmask: vec![0; EXT_CONFIG_SIZE],
            bars: [None; NUM_BARS],
            last_cap: None,
            next_cap: FIRST_CAP,
        };
        c.set16(0, ids.vendor);
        c.set16(2, ids.device);
        c.bytes[8] = ids.revision;
        c.bytes[9] = ids.class as u8;
        c.bytes[10] = (ids.class >> 8) as u8;
        c.bytes[11] = (ids.class >> 16) as u8;
        c.set16(0x2c, ids.subsystem_vendor);
        c.set16(0x2e, ids.subsystem);
        // The guest may toggle memory decoding, bus mastering and INTx disable.
        let cmd_mask = CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE;
        c.wmask[COMMAND..COMMAND + 2].copy_from_slice(&cmd_mask.to_le_bytes());
        // Interrupt line is scratch space for the OS.
        c.wmask[0x3c] = 0xff;
        c
    }

    fn set16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    fn set32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Reads a little-endian u16 at `at`.
    pub fn get16(&self, at: usize) -> u16 {
        u16::from_le_bytes([self.bytes[at], self.bytes[at + 1]])
    }

    /// Reads a little-endian u32 at `at`.
    pub fn get32(&self, at: usize) -> u32 {
        u32::from_le_bytes([
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ])
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.get16(COMMAND)
    }

    /// Declares memory BAR `index` of `size` bytes (a power of two, at least 16) at `addr`.
    pub fn add_bar(&mut self, index: usize, addr: u64, size: u64, is64: bool) {
        assert!(
            index + usize::from(is64) < NUM_BARS,
            "BAR index {index} out of range"
        );
        assert!(
            size.is_power_of_two() && size >= 16,
            "BAR size {size:#x} invalid"
        );
        self.bars[index] = Some(Bar { addr, size, is64 });
        let at = BAR0 + 4 * index;
        let low = (addr as u32 & !0xf) | if is64 { 0x4 } else { 0 };
        self.set32(at, low);
        if is64 {
            self.set32(at + 4, (addr >> 32) as u32);
        }
    }

    /// BAR `index`, if declared.
    pub fn bar(&self, index: usize) -> Option<Bar> {
        self.bars.get(index).copied().flatten()
    }

    /// Appends a capability with body `body` (without the id and next bytes); `writable` masks
    /// give the guest-writable bits of the body. Returns the capability's offset.
    pub fn add_capability(&mut self, id: u8, body: &[u8], writable: &[u8]) -> u16 {
        let at = self.next_cap;
        let len = 2 + body.len() as u16;
        let a = usize::from(at);
        assert!(
            a + usize::from(len) <= CONFIG_SIZE,
            "capabilities overflow the config space"
        );
        self.bytes[a] = id;
        self.bytes[a + 1] = 0;
        self.bytes[a + 2..a + 2 + body.len()].copy_from_slice(body);
        for (i, m) in writable.iter().enumerate().take(body.len()) {
            self.wmask[a + 2 + i] = *m;
        }
        match self.last_cap {
            None => {
                self.bytes[CAP_PTR] = at as u8;
                let s = self.get16(STATUS) | STATUS_CAP_LIST;
                self.set16(STATUS, s);
            }
            Some(prev) => self.bytes[usize::from(prev) + 1] = at as u8,
        }
        self.last_cap = Some(at);
        self.next_cap = (at + len + 3) & !3;
        at
    }

    /// Raw bytes (for a device's own capability handling).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Sets bytes directly (device-side state such as MSI-X control bits).
    pub fn set_bytes(&mut self, at: usize, data: &[u8]) {
        self.bytes[at..at + data.len()].copy_from_slice(data);
    }

    /// A guest read.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        let at = usize::from(offset);
        match self.bytes.get(at..at + data.len()) {
            Some(src) => data.copy_from_slice(src),
            None => data.fill(0xff),
        }
    }

    /// A guest write; returns the BAR index if it moved a BAR.
    pub fn write(&mut self, offset: u16, data: &[u8]) -> Option<usize> {
        let at = usize::from(offset);
        if at + data.len() > EXT_CONFIG_SIZE {
            return None;
        }
        if (BAR0..BAR0 + 4 * NUM_BARS).contains(&at) {
            return self.write_bar(at, data);
        }
        for (i, b) in data.iter().enumerate() {
            let m = self.wmask[at + i];
            self.bytes[at + i] = (self.bytes[at + i] & !m) | (b & m);
        }
        None
    }

    fn write_bar(&mut self, at: usize, data: &[u8]) -> Option<usize> {
        if data.len() != 4 || at % 4 != 0 {
            warn!("PCI: {}-byte BAR write at {at:#x} ignored", data.len());
            return None;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        let slot = (at - BAR0) / 4;
        // Which BAR this slot belongs to, and whether it is the high half.
        let (index, high) = if slot > 0 && self.bars[slot - 1].is_some_and(|b| b.is64) {
            (slot - 1, true)
        } else {
            (slot, false)
        };
        let Some(mut bar) = self.bars[index] else {
            return None; // unimplemented BARs read as zero
        };
        let mask = !(bar.size - 1);
        if high {
            bar.addr = (bar.addr & 0xffff_ffff) | ((u64::from(v) << 32) & mask);
        } else {
            bar.addr = (bar.addr & !0xffff_ffff) | (u64::from(v & !0xf) & mask);
            if !bar.is64 {
                bar.addr &= 0xffff_ffff;
            }
        }
        let old = self.bars[index].map(|b| b.addr);
        self.bars[index] = Some(bar);
        let low = (bar.addr as u32 & !0xf) | if bar.is64 { 0x4 } else { 0 };
        self.set32(BAR0 + 4 * index, low);
        if bar.is64 {
            self.set32(BAR0 + 4 * index + 4, (bar.addr >> 32) as u32);
        }
        (old != Some(bar.addr)).then_some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PciConfig {
        PciConfig::new(PciIds {
            vendor: 0x1af4,
            device: 0x1042,
            revision: 1,
            class: 0x01_80_00,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        })
    }

    fn r32(c: &PciConfig, off: u16) -> u32 {
        let mut b = [0u8; 4];
        c.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn bar_sizing_and_moves() {
        let mut c = cfg();
        c.add_bar(0, 0xc000_0000, 0x8000, true);
        assert_eq!(r32(&c, 0x10), 0xc000_0004);
        assert_eq!(r32(&c, 0x14), 0);
        // Sizing: all ones reads back the size mask.
        assert_eq!(c.write(0x10, &u32::MAX.to_le_bytes()), Some(0));
        assert_eq!(r32(&c, 0x10), 0xffff_8004);
        c.write(0x14, &u32::MAX.to_le_bytes());
        assert_eq!(r32(&c, 0x14), u32::MAX);
        // Restore / move.
        c.write(0x10, &0xd000_0000u32.to_le_bytes());
        c.write(0x14, &1u32.to_le_bytes());
        assert_eq!(c.bar(0).unwrap().addr, 0x1_d000_0000);
        // Unimplemented BARs stay zero; odd-width writes are ignored.
        c.write(0x18, &u32::MAX.to_le_bytes());
        assert_eq!(r32(&c, 0x18), 0);
        assert_eq!(c.write(0x10, &[0xff]), None);
    }

    #[test]
    fn read_only_fields_and_capabilities() {
        let mut c = cfg();
        c.write(0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(r32(&c, 0), 0x1042_1af4);
        c.write(4, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), CMD_MEMORY | CMD_BUS_MASTER | CMD_INTX_DISABLE);
        let a = c.add_capability(0x09, &[1, 2, 3, 4], &[0, 0xff, 0, 0]);
        let b = c.add_capability(0x11, &[0; 10], &[]);
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x48);
        assert_eq!(c.bytes()[0x34], 0x40);
        assert_eq!(c.bytes()[0x41], 0x48);
        assert_eq!(c.get16(6) & 0x10, 0x10);
        c.write(0x42, &[9, 9, 9, 9]);
        assert_eq!(&c.bytes()[0x42..0x46], &[1, 9, 3, 4]);
        let mut past = [0u8; 4];
        c.read(4094, &mut past);
        assert_eq!(past, [0xff; 4]);
    }
}
