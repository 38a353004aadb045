//! The PCI root: bus 0 with a host bridge at 00:00.0, reached through configuration mechanism #1
//! (address at port 0xCF8, data at 0xCFC..0xCFF) and through an ECAM window on the MMIO bus.
//! Only function 0 of each slot exists; everything else reads as all ones.

use std::sync::{Arc, Mutex};

use log::warn;

use super::PciDevice;
use super::config::{PciConfig, PciIds};
use crate::bus::BusDevice;

/// Port of the configuration address register.
pub const CAM_PORT: u64 = 0xcf8;
/// Ports covered by mechanism #1 (address and data registers).
pub const CAM_LEN: u64 = 8;
/// Size of the ECAM window for bus 0 (32 devices x 8 functions x 4 KiB).
pub const ECAM_BUS0_LEN: u64 = 1 << 20;
const SLOTS: usize = 32;

/// Errors from populating the bus.
#[derive(Debug, thiserror::Error)]
pub enum PciRootError {
    /// All 31 device slots are taken.
    #[error("PCI bus 0 is full (31 devices)")]
    Full,
}

/// A PCI device shared between the root and the MMIO bus (for its BARs).
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

#[derive(Debug)]
struct HostBridge(PciConfig);

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        self.0.read(offset, data);
    }
    fn config_write(&mut self, offset: u16, data: &[u8]) {
        self.0.write(offset, data);
    }
}

/// Bus 0 and its configuration access mechanisms.
pub struct PciRoot {
    slots: Vec<Option<SharedPciDevice>>,
    address: u32,
}

impl std::fmt::Debug for PciRoot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let used: Vec<usize> = (0..SLOTS).filter(|&i| self.slots[i].is_some()).collect();
        f.debug_struct("PciRoot")
            .field("slots", &used)
            .field("address", &format_args!("{:#x}", self.address))
            .finish()
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl PciRoot {
    /// Bus 0 with only the host bridge.
    pub fn new() -> Self {
        let bridge = PciConfig::new(PciIds {
            vendor: 0x1b36,
            device: 0x0008,
            revision: 0,
            class: 0x06_00_00,
            subsystem_vendor: 0x1b36,
            subsystem: 0,
        });
        let mut slots: Vec<Option<SharedPciDevice>> = (0..SLOTS).map(|_| None).collect();
        slots[0] = Some(Arc::new(Mutex::new(HostBridge(bridge))));
        Self { slots, address: 0 }
    }

    /// Puts `device` in the first free slot and returns the slot (device) number.
    pub fn add_device(&mut self, device: SharedPciDevice) -> Result<u8, PciRootError> {
        let slot = (1..SLOTS)
            .find(|&i| self.slots[i].is_none())
            .ok_or(PciRootError::Full)?;
        self.slots[slot] = Some(device);
        // `slot` < 32.
        Ok(slot as u8)
    }

    fn device(&self, bus: u8, dev: u8, func: u8) -> Option<&SharedPciDevice> {
        if bus != 0 || func != 0 {
            return None;
        }
        self.slots.get(usize::from(dev))?.as_ref()
    }

    /// Reads configuration space of bus:dev.func at `reg`.
    pub fn config_read(&self, bus: u8, dev: u8, func: u8, reg: u16, data: &mut [u8]) {
        match self.device(bus, dev, func) {
            Some(d) => d
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .config_read(reg, data),
            None => data.fill(0xff),
        }
    }

    /// Writes configuration space of bus:dev.func at `reg`.
    pub fn config_write(&self, bus: u8, dev: u8, func: u8, reg: u16, data: &[u8]) {
        if let Some(d) = self.device(bus, dev, func) {
            d.lock()
                .unwrap_or_else(|p| p.into_inner())
                .config_write(reg, data);
        }
    }

    fn cam_target(&self) -> Option<(u8, u8, u8, u16)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 {
            return None;
        }
        Some((
            (a >> 16) as u8,
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 0x7) as u8,
            (a & 0xfc) as u16,
        ))
    }

    fn ecam_target(offset: u64) -> (u8, u8, u8, u16) {
        (
            ((offset >> 20) & 0xff) as u8,
            ((offset >> 15) & 0x1f) as u8,
            ((offset >> 12) & 0x7) as u8,
            (offset & 0xfff) as u16,
        )
    }

    fn width_ok(reg: u16, len: usize) -> bool {
        matches!(len, 1 | 2 | 4) && usize::from(reg) % len == 0
    }
}

impl BusDevice for PciRoot {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        if base == CAM_PORT {
            if offset < 4 {
                if data.len() == 4 && offset == 0 {
                    data.copy_from_slice(&self.address.to_le_bytes());
                }
                return;
            }
            let Some((bus, dev, func, reg)) = self.cam_target() else {
                data.fill(0xff);
                return;
            };
            let reg = reg + (offset - 4) as u16;
            if !Self::width_ok(reg, data.len()) {
                data.fill(0xff);
                return;
            }
            self.config_read(bus, dev, func, reg, data);
        } else {
            let (bus, dev, func, reg) = Self::ecam_target(offset);
            if !Self::width_ok(reg, data.len()) {
                data.fill(0xff);
                return;
            }
            self.config_read(bus, dev, func, reg, data);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        if base == CAM_PORT {
            if offset < 4 {
                match <[u8; 4]>::try_from(data) {
                    Ok(b) if offset == 0 => self.address = u32::from_le_bytes(b),
                    // Byte writes to 0xCF9 etc. are reset-control on some chipsets; not here.
                    _ => warn!(
                        "PCI: {}-byte write to port {:#x} ignored",
                        data.len(),
                        base + offset
                    ),
                }
                return;
            }
            let Some((bus, dev, func, reg)) = self.cam_target() else {
                return;
            };
            let reg = reg + (offset - 4) as u16;
            if Self::width_ok(reg, data.len()) {
                self.config_write(bus, dev, func, reg, data);
            }
        } else {
            let (bus, dev, func, reg) = Self::ecam_target(offset);
            if Self::width_ok(reg, data.len()) {
                self.config_write(bus, dev, func, reg, data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ECAM: u64 = 0xe000_0000;

    fn cam_read(r: &mut PciRoot, dev: u32, reg: u32, len: usize) -> u32 {
        let addr = 0x8000_0000 | (dev << 11) | (reg & 0xfc);
        r.write(CAM_PORT, 0, &addr.to_le_bytes());
        let mut b = [0u8; 4];
        r.read(CAM_PORT, 4 + u64::from(reg & 3), &mut b[..len]);
        u32::from_le_bytes(b)
    }

    #[test]
    fn host_bridge_through_cam_and_ecam() {
        let mut r = PciRoot::new();
        assert_eq!(cam_read(&mut r, 0, 0, 4), 0x0008_1b36);
        assert_eq!(cam_read(&mut r, 0, 2, 2), 0x0008);
        assert_eq!(cam_read(&mut r, 0, 0xb, 1), 0x06);
        // Empty slots and other functions read as all ones.
        assert_eq!(cam_read(&mut r, 3, 0, 4), u32::MAX);
        let mut b = [0u8; 4];
        r.read(ECAM, 0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0008_1b36);
        r.read(ECAM, 1 << 12, &mut b);
        assert_eq!(b, [0xff; 4]);
        // Misaligned accesses are refused.
        r.read(ECAM, 1, &mut b);
        assert_eq!(b, [0xff; 4]);
        // The address register reads back; the enable bit gates data accesses.
        r.write(CAM_PORT, 0, &0x0000_0000u32.to_le_bytes());
        r.read(CAM_PORT, 4, &mut b);
        assert_eq!(b, [0xff; 4]);
        r.read(CAM_PORT, 0, &mut b);
        assert_eq!(b, [0; 4]);
    }
}
