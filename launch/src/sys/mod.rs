//! Raw kernel interfaces of the confidential backends: ioctl numbers, command ids and
//! `#[repr(C)]` structs with compile-time size and offset checks against the kernel's layout.
//!
//! SEV-SNP structs come from kvm-bindings (generated from Linux 6.15); TDX structs are Veil's
//! own, written from the upstream Linux 6.16 `arch/x86/include/uapi/asm/kvm.h`, because
//! kvm-bindings has none.

pub mod snp;
pub mod tdx;

/// `KVM_MEMORY_ENCRYPT_OP`: `_IOWR(KVMIO, 0xba, unsigned long)`, issued on a VM fd (SEV, TDX) or
/// a vCPU fd (TDX `INIT_VCPU`, `INIT_MEM_REGION`, `GET_CPUID`).
pub const KVM_MEMORY_ENCRYPT_OP: libc::c_ulong = (3 << 30) | (8 << 16) | (0xae << 8) | 0xba;

/// The page-state hypercall both platforms forward to userspace (`KVM_HC_MAP_GPA_RANGE`).
pub const KVM_HC_MAP_GPA_RANGE: u64 = 12;
/// `KVM_HC_MAP_GPA_RANGE` attribute: the range becomes private (encrypted).
pub const KVM_MAP_GPA_RANGE_ENCRYPTED: u64 = 1 << 4;
/// `KVM_HC_MAP_GPA_RANGE` attribute mask of the page size (4K = 0, 2M = 1, 1G = 2).
pub const KVM_MAP_GPA_RANGE_PAGE_SZ_MASK: u64 = 0x3;

/// `KVM_SET_MEMORY_ATTRIBUTES` attribute: private memory (backed by guest_memfd).
pub const KVM_MEMORY_ATTRIBUTE_PRIVATE: u64 = kvm_bindings::KVM_MEMORY_ATTRIBUTE_PRIVATE as u64;
/// `KVM_EXIT_MEMORY_FAULT` flag: the faulting access was private.
pub const KVM_MEMORY_EXIT_FLAG_PRIVATE: u64 = kvm_bindings::KVM_MEMORY_EXIT_FLAG_PRIVATE as u64;
/// `KVM_SET_USER_MEMORY_REGION2` flag: the slot has a guest_memfd.
pub const KVM_MEM_GUEST_MEMFD: u32 = kvm_bindings::KVM_MEM_GUEST_MEMFD;

// The generic structs the backends rely on, checked against the kernel's layout.
const _: () = {
    use core::mem::{offset_of, size_of};
    use kvm_bindings::{kvm_cpuid_entry2, kvm_userspace_memory_region2};
    use kvm_bindings::{kvm_create_guest_memfd, kvm_memory_attributes};
    assert!(size_of::<kvm_userspace_memory_region2>() == 160);
    assert!(offset_of!(kvm_userspace_memory_region2, guest_memfd_offset) == 32);
    assert!(offset_of!(kvm_userspace_memory_region2, guest_memfd) == 40);
    assert!(size_of::<kvm_memory_attributes>() == 32);
    assert!(offset_of!(kvm_memory_attributes, attributes) == 16);
    assert!(size_of::<kvm_create_guest_memfd>() == 64);
    assert!(size_of::<kvm_cpuid_entry2>() == 40);
};

/// A buffer holding a kernel struct whose last member is a `struct kvm_cpuid2` (header plus a
/// flexible array of `kvm_cpuid_entry2`), 8-byte aligned as the kernel expects.
#[derive(Debug)]
pub struct CpuidTail<H> {
    words: Vec<u64>,
    entries: usize,
    _head: core::marker::PhantomData<H>,
}

impl<H: Copy> CpuidTail<H> {
    /// A zeroed buffer for `head` with room for `entries` CPUID entries; `nent` is set to
    /// `entries`.
    ///
    /// `H` must be a `#[repr(C)]` plain-data struct whose last 8 bytes are the `kvm_cpuid2`
    /// header (`nent`, `padding`), which the per-struct asserts in [`tdx`] check.
    pub fn new(head: H, entries: usize) -> Self {
        let bytes = core::mem::size_of::<H>() + entries * 40;
        let mut t = CpuidTail {
            words: vec![0u64; bytes.div_ceil(8)],
            entries,
            _head: core::marker::PhantomData,
        };
        // SAFETY: the buffer is at least size_of::<H>() bytes and 8-byte aligned (a Vec<u64>),
        // and H is a plain-data repr(C) struct with alignment 8 at most.
        unsafe { core::ptr::write(t.words.as_mut_ptr().cast::<H>(), head) };
        t.set_nent(entries as u32);
        t
    }

    fn nent_offset() -> usize {
        core::mem::size_of::<H>() - 8
    }

    fn set_nent(&mut self, n: u32) {
        let at = Self::nent_offset();
        let bytes = self.bytes_mut();
        bytes[at..at + 4].copy_from_slice(&n.to_ne_bytes());
    }

    /// The `nent` field (after a call, the kernel's count).
    pub fn nent(&self) -> u32 {
        let at = Self::nent_offset();
        let b = self.bytes();
        u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }

    /// The fixed part.
    pub fn head(&self) -> H {
        // SAFETY: the buffer starts with a valid H (written in new, or by the kernel, which
        // writes only plain integers); read_unaligned would also do, the pointer is aligned.
        unsafe { core::ptr::read(self.words.as_ptr().cast::<H>()) }
    }

    /// The entries the buffer has room for (the first `nent()` are meaningful).
    pub fn entries(&self) -> Vec<kvm_bindings::kvm_cpuid_entry2> {
        let n = (self.nent() as usize).min(self.entries);
        let base = core::mem::size_of::<H>();
        let b = self.bytes();
        (0..n)
            .map(|i| {
                let e = &b[base + i * 40..base + (i + 1) * 40];
                // SAFETY: e is 40 bytes, the size of kvm_cpuid_entry2, a plain-integer struct
                // for which every bit pattern is valid; read_unaligned makes no alignment claim.
                unsafe {
                    core::ptr::read_unaligned(e.as_ptr().cast::<kvm_bindings::kvm_cpuid_entry2>())
                }
            })
            .collect()
    }

    /// Fills the entries (at most the room given to [`CpuidTail::new`]) and sets `nent`.
    pub fn set_entries(&mut self, entries: &[kvm_bindings::kvm_cpuid_entry2]) {
        let n = entries.len().min(self.entries);
        let base = core::mem::size_of::<H>();
        for (i, e) in entries[..n].iter().enumerate() {
            // SAFETY: kvm_cpuid_entry2 is 40 bytes of plain integers and padding-free.
            let raw: [u8; 40] = unsafe { core::mem::transmute_copy(e) };
            self.bytes_mut()[base + i * 40..base + (i + 1) * 40].copy_from_slice(&raw);
        }
        self.set_nent(n as u32);
    }

    /// Pointer handed to the kernel.
    pub fn as_mut_ptr(&mut self) -> *mut H {
        self.words.as_mut_ptr().cast()
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: any u64 buffer is a valid byte buffer of 8x the length.
        unsafe { core::slice::from_raw_parts(self.words.as_ptr().cast(), self.words.len() * 8) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in bytes(), with exclusive access through &mut self.
        unsafe {
            core::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast(), self.words.len() * 8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_and_constants_are_the_kernels() {
        // _IOWR('K' = 0xae, 0xba, unsigned long) from include/uapi/linux/kvm.h.
        assert_eq!(KVM_MEMORY_ENCRYPT_OP, 0xc008_aeba);
        assert_eq!(KVM_HC_MAP_GPA_RANGE, 12);
        assert_eq!(KVM_MAP_GPA_RANGE_ENCRYPTED, 0x10);
        assert_eq!(KVM_MEMORY_ATTRIBUTE_PRIVATE, 0x8);
        assert_eq!(tdx::KVM_EXIT_TDX, 40);
        assert_eq!(snp::KVM_SEV_SNP_LAUNCH_UPDATE, 101);
        assert_eq!(core::mem::size_of::<tdx::KvmTdxCapabilities>(), 2056);
        assert_eq!(core::mem::size_of::<tdx::KvmTdxInitVm>(), 264);
    }

    #[test]
    fn cpuid_tail_round_trips_entries_after_the_fixed_part() {
        let e = kvm_bindings::kvm_cpuid_entry2 {
            function: 7,
            index: 1,
            eax: 0xdead_beef,
            ..Default::default()
        };
        let mut t = CpuidTail::new(tdx::KvmTdxInitVm::default(), 3);
        assert_eq!(t.nent(), 3);
        t.set_entries(&[e]);
        assert_eq!(t.nent(), 1);
        assert_eq!(t.entries(), vec![e]);
        // nent sits right after the 256-byte TD_PARAMS part, as the kernel reads it.
        let p = t.as_mut_ptr().cast::<u8>();
        // SAFETY: the buffer is at least 264 bytes; reading 4 bytes at offset 256.
        let nent = unsafe { core::ptr::read_unaligned(p.add(256).cast::<u32>()) };
        assert_eq!(nent, 1);
    }
}
