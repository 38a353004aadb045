//! The I/O bus: maps guest port-I/O or MMIO addresses to the device that owns them.
//!
//! The VMM keeps one bus for port I/O and one for MMIO and dispatches vCPU exits to them. Devices
//! see only an offset into their own range, so a device never learns (or trusts) absolute guest
//! addresses it was not given.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device that answers accesses within one or more ranges on a bus.
pub trait BusDevice: Send {
    /// A guest read of `data.len()` bytes at `offset` into the range that starts at `base`.
    /// Devices fill `data`; bytes they do not fill are returned to the guest as they came in
    /// (the bus pre-fills them with `0xff`).
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]);
    /// A guest write of `data` at `offset` into the range that starts at `base`.
    fn write(&mut self, base: u64, offset: u64, data: &[u8]);
}

/// A device shared between the bus and whoever else needs to reach it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Errors from building a bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The new range is empty or wraps around the address space.
    #[error("bus range at {base:#x} with length {len:#x} is empty or wraps around")]
    BadRange {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// The new range overlaps one already on the bus.
    #[error("bus range {base:#x}+{len:#x} overlaps the range {other_base:#x}+{other_len:#x}")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
        /// Start of the range it overlaps.
        other_base: u64,
        /// Length of the range it overlaps.
        other_len: u64,
    },
}

#[derive(Clone)]
struct Entry {
    len: u64,
    device: SharedDevice,
}

/// An address space of non-overlapping device ranges.
#[derive(Clone, Default)]
pub struct Bus {
    ranges: BTreeMap<u64, Entry>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for (base, entry) in &self.ranges {
            list.entry(&format_args!("{base:#x}+{:#x}", entry.len));
        }
        list.finish()
    }
}

impl Bus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `device` at `[base, base + len)`; fails if the range is empty, wraps or overlaps.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        if len == 0 || base.checked_add(len - 1).is_none() {
            return Err(BusError::BadRange { base, len });
        }
        let overlap = |(&other_base, e): (&u64, &Entry)| {
            base <= other_base + (e.len - 1) && other_base <= base + (len - 1)
        };
        if let Some((&other_base, e)) = self
            .ranges
            .range(..=base)
            .next_back()
            .filter(|x| overlap(*x))
        {
            return Err(BusError::Overlap {
                base,
                len,
                other_base,
                other_len: e.len,
            });
        }
        if let Some((&other_base, e)) = self.ranges.range(base..).next().filter(|x| overlap(*x)) {
            return Err(BusError::Overlap {
                base,
                len,
                other_base,
                other_len: e.len,
            });
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// The device covering `addr`, with its range's base.
    fn find(&self, addr: u64) -> Option<(u64, &SharedDevice)> {
        let (&base, entry) = self.ranges.range(..=addr).next_back()?;
        (addr - base < entry.len).then_some((base, &entry.device))
    }

    /// Dispatches a guest read; returns false (leaving `data` as all ones) if no device is there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        data.fill(0xff);
        match self.find(addr) {
            Some((base, dev)) => {
                lock(dev).read(base, addr - base, data);
                true
            }
            None => false,
        }
    }

    /// Dispatches a guest write; returns false if no device is there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((base, dev)) => {
                lock(dev).write(base, addr - base, data);
                true
            }
            None => false,
        }
    }
}

/// Locks a device, recovering from a poisoned lock: a device that panicked once must not take the
/// whole bus down with it (its state is still memory-safe; at worst it answers wrongly).
fn lock(dev: &SharedDevice) -> std::sync::MutexGuard<'_, dyn BusDevice + 'static> {
    dev.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Echo {
        last: Vec<(u64, u64, Vec<u8>)>,
    }
    impl BusDevice for Echo {
        fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
            self.last.push((base, offset, data.to_vec()));
        }
    }

    #[test]
    fn dispatches_by_range_with_offsets() {
        let mut bus = Bus::new();
        let echo = Arc::new(Mutex::new(Echo::default()));
        bus.insert(echo.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        assert!(bus.read(0x3fa, &mut b));
        assert_eq!(b, [2]);
        assert!(!bus.read(0x400, &mut b));
        assert_eq!(b, [0xff]);
        assert!(bus.write(0x3ff, &[7]));
        assert!(!bus.write(0x3f7, &[7]));
        assert_eq!(echo.lock().unwrap().last, vec![(0x3f8, 7, vec![7])]);
    }

    #[test]
    fn rejects_overlaps_and_bad_ranges() {
        let mut bus = Bus::new();
        let d = || -> SharedDevice { Arc::new(Mutex::new(Echo::default())) };
        bus.insert(d(), 0x100, 0x10).unwrap();
        assert!(matches!(
            bus.insert(d(), 0x10f, 1),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d(), 0xf0, 0x11),
            Err(BusError::Overlap { .. })
        ));
        assert!(matches!(
            bus.insert(d(), 0x0, 0),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert(d(), u64::MAX, 2),
            Err(BusError::BadRange { .. })
        ));
        bus.insert(d(), 0x110, 1).unwrap();
        bus.insert(d(), u64::MAX, 1).unwrap();
    }
}
