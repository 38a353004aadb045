//! A cell for boot-time globals: written by the BSP while it is the only CPU running (at CPL0
//! before ring 3, or in ring 3 before any AP starts), read-only afterwards.

use core::cell::UnsafeCell;

/// A global written only during single-threaded boot phases.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: every writer runs while only the BSP runs (documented at each `set`/`get_mut` call);
// later accesses only read.
unsafe impl<T> Sync for Global<T> {}

impl<T: Copy> Global<T> {
    /// The current value.
    pub fn get(&self) -> T {
        // SAFETY: no writer runs concurrently (see the type's contract).
        unsafe { *self.0.get() }
    }

    /// Replaces the value.
    ///
    /// # Safety
    /// Only while the BSP is the only CPU running and no reference from `get_mut` is alive.
    pub unsafe fn set(&self, value: T) {
        // SAFETY: exclusive by the caller's guarantee.
        unsafe { *self.0.get() = value }
    }
}

impl<T> Global<T> {
    /// A global holding `value`.
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }
    /// A mutable reference to the value.
    ///
    /// # Safety
    /// Only while the BSP is the only CPU running, and no other reference is alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self) -> &mut T {
        // SAFETY: exclusive by the caller's guarantee.
        unsafe { &mut *self.0.get() }
    }

    /// A shared reference to the value.
    pub fn get_ref(&self) -> &T {
        // SAFETY: no writer runs concurrently (see the type's contract).
        unsafe { &*self.0.get() }
    }
}
