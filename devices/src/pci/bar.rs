//! BAR placement: the 32-bit MMIO hole first, then the window above 4 GiB.

/// Errors from placing a BAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BarError {
    /// The size is not a power of two.
    #[error("BAR size {0:#x} is not a power of two")]
    Size(u64),
    /// Neither window has room.
    #[error("no room for a BAR of {0:#x} bytes in the MMIO windows")]
    Exhausted(u64),
}

/// Hands out naturally aligned BAR addresses from two windows `[start, end)`.
#[derive(Debug, Clone)]
pub struct BarAllocator {
    low: (u64, u64),
    high: (u64, u64),
}

impl BarAllocator {
    /// Allocates from `low` (in the 32-bit hole) and then `high` (above 4 GiB).
    pub fn new(low: (u64, u64), high: (u64, u64)) -> Self {
        Self { low, high }
    }

    fn take(window: &mut (u64, u64), size: u64) -> Option<u64> {
        let start = window.0.checked_add(size - 1)? & !(size - 1);
        let end = start.checked_add(size)?;
        if end > window.1 {
            return None;
        }
        window.0 = end;
        Some(start)
    }

    /// A naturally aligned address for a BAR of `size` bytes; 64-bit BARs may go above 4 GiB.
    pub fn allocate(&mut self, size: u64, is64: bool) -> Result<u64, BarError> {
        if !size.is_power_of_two() {
            return Err(BarError::Size(size));
        }
        if let Some(a) = Self::take(&mut self.low, size) {
            return Ok(a);
        }
        if is64 {
            if let Some(a) = Self::take(&mut self.high, size) {
                return Ok(a);
            }
        }
        Err(BarError::Exhausted(size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_spills_above_4g() {
        let mut a = BarAllocator::new((0xe000_1000, 0xe002_0000), (1 << 32, (1 << 32) + 0x10_0000));
        assert_eq!(a.allocate(0x8000, true), Ok(0xe000_8000));
        assert_eq!(a.allocate(0x1000, false), Ok(0xe001_0000));
        assert_eq!(a.allocate(0x10000, true), Ok(1 << 32));
        assert_eq!(
            a.allocate(0x10000, false),
            Err(BarError::Exhausted(0x10000))
        );
        assert_eq!(a.allocate(0x3000, true), Err(BarError::Size(0x3000)));
    }
}
