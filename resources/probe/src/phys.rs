//! Reads of guest-physical memory through the probe's identity map.

/// Reads a `T` at physical address `addr` (unaligned allowed).
///
/// Returns `None` for address 0 and for addresses above the identity map's reach.
fn read<T: Copy>(addr: u64) -> Option<T> {
    if addr == 0
        || addr.checked_add(core::mem::size_of::<T>() as u64)? > crate::paging::mapped_top()
    {
        return None;
    }
    // SAFETY: the identity map covers [0, mapped_top()), so the address is mapped; `T: Copy`
    // plain data read with read_unaligned may be any bit pattern for the integer types used.
    Some(unsafe { core::ptr::read_unaligned(addr as *const T) })
}

/// Reads a little-endian u8/u16/u32/u64 field at `base + off`.
pub fn u8_at(base: u64, off: u64) -> Option<u8> {
    read::<u8>(base.checked_add(off)?)
}
/// See [`u8_at`].
pub fn u16_at(base: u64, off: u64) -> Option<u16> {
    read::<u16>(base.checked_add(off)?)
}
/// See [`u8_at`].
pub fn u32_at(base: u64, off: u64) -> Option<u32> {
    read::<u32>(base.checked_add(off)?)
}
/// See [`u8_at`].
pub fn u64_at(base: u64, off: u64) -> Option<u64> {
    read::<u64>(base.checked_add(off)?)
}
