//! The KVM side both confidential backends share: a VM fd, guest_memfd-backed slots with a
//! shared view for devices, memory attributes, conversions' backing release, vCPU fds.
//!
//! Private memory lives only in guest_memfd and is never mapped into Veil: the shared view is
//! a separate anonymous mapping that holds the pages the guest converted to shared.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_cpuid_entry2, kvm_userspace_memory_region2};
use kvm_bindings::{kvm_create_guest_memfd, kvm_enable_cap, kvm_memory_attributes};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

use crate::platform::{CommandError, SlotSpec};
use crate::sys::{KVM_HC_MAP_GPA_RANGE, KVM_MEM_GUEST_MEMFD, KVM_MEMORY_ATTRIBUTE_PRIVATE};

fn errno_of(e: &kvm_ioctls::Error) -> i32 {
    e.errno()
}

/// A shared (host-visible) mapping of one slot.
#[derive(Debug)]
struct SharedView {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this struct; access goes through &self/&mut self
// of the owner, and the raw pointer is only dereferenced in bounds-checked copies.
unsafe impl Send for SharedView {}
// SAFETY: as above; concurrent readers only copy bytes out.
unsafe impl Sync for SharedView {}

impl Drop for SharedView {
    fn drop(&mut self) {
        // SAFETY: addr/len came from a successful mmap in PrivateSlot::create and are unmapped
        // only here.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

/// One guest_memfd-backed slot.
#[derive(Debug)]
pub struct PrivateSlot {
    /// Where it sits.
    pub spec: SlotSpec,
    gmem: OwnedFd,
    shared: SharedView,
}

impl PrivateSlot {
    /// Host address of the shared view of this slot (for device emulation: the guest's shared
    /// pages only).
    pub fn shared_host_addr(&self) -> *mut u8 {
        self.shared.addr
    }
}

/// A confidential VM on KVM: the VM fd, its slots and vCPUs.
#[derive(Debug)]
pub struct KvmConfidentialVm {
    /// `/dev/kvm`.
    pub kvm: Kvm,
    /// The VM, shared with the VMM's device manager and interrupt routes.
    pub vm: Arc<VmFd>,
    slots: Vec<PrivateSlot>,
    vcpus: Vec<(u32, VcpuFd)>,
}

impl KvmConfidentialVm {
    /// `KVM_CREATE_VM` of `vm_type`.
    pub fn create(vm_type: u32) -> Result<Self, CommandError> {
        let kvm = Kvm::new().map_err(|e| {
            CommandError::new(
                "open /dev/kvm",
                errno_of(&e),
                format!("cannot open /dev/kvm: {e}"),
            )
        })?;
        let vm = kvm.create_vm_with_type(u64::from(vm_type)).map_err(|e| {
            CommandError::new(
                "KVM_CREATE_VM",
                errno_of(&e),
                format!("KVM refused VM type {vm_type}: {e}"),
            )
        })?;
        Ok(KvmConfidentialVm {
            kvm,
            vm: Arc::new(vm),
            slots: Vec::new(),
            vcpus: Vec::new(),
        })
    }

    /// The slots.
    pub fn slots(&self) -> &[PrivateSlot] {
        &self.slots
    }

    /// vCPU `id`'s fd.
    pub fn vcpu(&self, command: &'static str, id: u32) -> Result<&VcpuFd, CommandError> {
        self.vcpus
            .iter()
            .find(|(v, _)| *v == id)
            .map(|(_, f)| f)
            .ok_or_else(|| CommandError::new(command, libc::ENOENT, format!("no vCPU {id}")))
    }

    /// Hands the vCPU fds to the caller (the VMM's vCPU threads), in creation order.
    pub fn take_vcpus(&mut self) -> Vec<(u32, VcpuFd)> {
        std::mem::take(&mut self.vcpus)
    }

    /// Enables a VM capability.
    pub fn enable_cap(
        &self,
        command: &'static str,
        cap: u32,
        arg0: u64,
    ) -> Result<(), CommandError> {
        let mut c = kvm_enable_cap {
            cap,
            ..Default::default()
        };
        c.args[0] = arg0;
        self.vm.enable_cap(&c).map_err(|e| {
            CommandError::new(command, errno_of(&e), format!("KVM_ENABLE_CAP({cap}): {e}"))
        })
    }

    fn slot_of(&self, gpa: u64) -> Option<&PrivateSlot> {
        self.slots
            .iter()
            .find(|s| s.spec.gpa <= gpa && gpa < s.spec.gpa + s.spec.size)
    }

    /// Copies `buf.len()` bytes from the shared view at `gpa` (within one slot).
    pub fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        let s = self.slot_of(gpa)?;
        let off = (gpa - s.spec.gpa) as usize;
        if off.checked_add(buf.len())? > s.shared.len {
            return None;
        }
        // SAFETY: off + len is inside the mapping (checked above); the mapping is live.
        unsafe {
            std::ptr::copy_nonoverlapping(s.shared.addr.add(off), buf.as_mut_ptr(), buf.len())
        };
        Some(())
    }

    /// Copies `data` into the shared view at `gpa` (within one slot).
    pub fn write_shared(&self, gpa: u64, data: &[u8]) -> Option<()> {
        let s = self.slot_of(gpa)?;
        let off = (gpa - s.spec.gpa) as usize;
        if off.checked_add(data.len())? > s.shared.len {
            return None;
        }
        // SAFETY: off + len is inside the mapping (checked above); the mapping is live and
        // writable (PROT_READ | PROT_WRITE).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), s.shared.addr.add(off), data.len()) };
        Some(())
    }

    /// Creates a guest_memfd and a shared view for `spec` and registers the slot.
    pub fn add_slot(&mut self, spec: SlotSpec) -> Result<(), CommandError> {
        const CMD: &str = "KVM_SET_USER_MEMORY_REGION2";
        let gmem = self
            .vm
            .create_guest_memfd(kvm_create_guest_memfd {
                size: spec.size,
                flags: 0,
                reserved: [0; 6],
            })
            .map_err(|e| {
                CommandError::new(
                    "KVM_CREATE_GUEST_MEMFD",
                    errno_of(&e),
                    format!("guest_memfd of {:#x} bytes: {e}", spec.size),
                )
            })?;
        // SAFETY: create_guest_memfd returned a new fd that nothing else owns.
        let gmem = unsafe { OwnedFd::from_raw_fd(gmem) };
        let len = usize::try_from(spec.size).map_err(|_| {
            CommandError::new(CMD, libc::EINVAL, "slot larger than the address space")
        })?;
        // SAFETY: a fresh anonymous shared mapping; the kernel picks the address.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            let e = std::io::Error::last_os_error();
            return Err(CommandError::last_os(
                "mmap",
                &e,
                format!("shared view of {len:#x} bytes: {e}"),
            ));
        }
        let shared = SharedView {
            addr: addr.cast(),
            len,
        };
        let region = kvm_userspace_memory_region2 {
            slot: spec.slot,
            flags: KVM_MEM_GUEST_MEMFD,
            guest_phys_addr: spec.gpa,
            memory_size: spec.size,
            userspace_addr: shared.addr as u64,
            guest_memfd_offset: 0,
            guest_memfd: gmem.as_raw_fd() as u32,
            ..Default::default()
        };
        // SAFETY: the shared view stays mapped as long as the slot exists (both live in self),
        // and the guest_memfd is open.
        unsafe { self.vm.set_user_memory_region2(region) }.map_err(|e| {
            CommandError::new(
                CMD,
                errno_of(&e),
                format!(
                    "slot {} at {:#x}+{:#x}: {e}",
                    spec.slot, spec.gpa, spec.size
                ),
            )
        })?;
        self.slots.push(PrivateSlot { spec, gmem, shared });
        Ok(())
    }

    /// `KVM_SET_MEMORY_ATTRIBUTES`.
    pub fn set_memory_attributes(
        &self,
        gpa: u64,
        size: u64,
        private: bool,
    ) -> Result<(), CommandError> {
        let attr = kvm_memory_attributes {
            address: gpa,
            size,
            attributes: if private {
                KVM_MEMORY_ATTRIBUTE_PRIVATE
            } else {
                0
            },
            flags: 0,
        };
        self.vm.set_memory_attributes(attr).map_err(|e| {
            CommandError::new(
                "KVM_SET_MEMORY_ATTRIBUTES",
                errno_of(&e),
                format!(
                    "{gpa:#x}+{size:#x} -> {}: {e}",
                    if private { "private" } else { "shared" }
                ),
            )
        })
    }

    /// Frees the private (guest_memfd hole punch) or shared (MADV_REMOVE) backing of the parts
    /// of `[gpa, gpa + size)` that lie in slots.
    pub fn discard(&self, gpa: u64, size: u64, private_backing: bool) -> Result<(), CommandError> {
        let end = gpa.saturating_add(size);
        for s in &self.slots {
            let (ss, se) = (s.spec.gpa, s.spec.gpa + s.spec.size);
            let (a, b) = (gpa.max(ss), end.min(se));
            if a >= b {
                continue;
            }
            let off = a - ss;
            let len = b - a;
            if private_backing {
                // SAFETY: fallocate on an fd we own, with a range inside the guest_memfd.
                let r = unsafe {
                    libc::fallocate(
                        s.gmem.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        off as libc::off_t,
                        len as libc::off_t,
                    )
                };
                if r != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(CommandError::last_os(
                        "fallocate(PUNCH_HOLE)",
                        &e,
                        format!(
                            "guest_memfd of slot {} at {a:#x}+{len:#x}: {e}",
                            s.spec.slot
                        ),
                    ));
                }
            } else {
                // SAFETY: the range is inside the live shared mapping of this slot.
                let r = unsafe {
                    libc::madvise(
                        s.shared.addr.add(off as usize).cast(),
                        len as usize,
                        libc::MADV_REMOVE,
                    )
                };
                if r != 0 {
                    let e = std::io::Error::last_os_error();
                    return Err(CommandError::last_os(
                        "madvise(MADV_REMOVE)",
                        &e,
                        format!(
                            "shared view of slot {} at {a:#x}+{len:#x}: {e}",
                            s.spec.slot
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)` with `ioapic_pins` IOAPIC pins: the local APICs
    /// in KVM, the IOAPIC in the VMM (both platforms need it before their first vCPU).
    pub fn enable_split_irqchip(&self, ioapic_pins: u32) -> Result<(), CommandError> {
        self.enable_cap(
            "KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)",
            kvm_bindings::KVM_CAP_SPLIT_IRQCHIP,
            u64::from(ioapic_pins),
        )
    }

    /// `KVM_GET_SUPPORTED_CPUID`.
    pub fn supported_cpuid(&self) -> Result<Vec<kvm_cpuid_entry2>, CommandError> {
        let c = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| CommandError::new("KVM_GET_SUPPORTED_CPUID", e.errno(), format!("{e}")))?;
        Ok(c.as_slice().to_vec())
    }

    /// `KVM_SET_CPUID2` on vCPU `id`.
    pub fn set_vcpu_cpuid(&self, id: u32, cpuid: &[kvm_cpuid_entry2]) -> Result<(), CommandError> {
        let v = self.vcpu("KVM_SET_CPUID2", id)?;
        let c = CpuId::from_entries(cpuid).map_err(|e| {
            CommandError::new("KVM_SET_CPUID2", libc::E2BIG, format!("vCPU {id}: {e:?}"))
        })?;
        v.set_cpuid2(&c)
            .map_err(|e| CommandError::new("KVM_SET_CPUID2", e.errno(), format!("vCPU {id}: {e}")))
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)` for `KVM_HC_MAP_GPA_RANGE`.
    pub fn enable_page_state_exits(&self) -> Result<(), CommandError> {
        self.enable_cap(
            "KVM_ENABLE_CAP(KVM_CAP_EXIT_HYPERCALL)",
            kvm_bindings::KVM_CAP_EXIT_HYPERCALL,
            1 << KVM_HC_MAP_GPA_RANGE,
        )
    }

    /// `KVM_CREATE_VCPU`.
    pub fn create_vcpu(&mut self, id: u32) -> Result<(), CommandError> {
        let fd = self.vm.create_vcpu(u64::from(id)).map_err(|e| {
            CommandError::new("KVM_CREATE_VCPU", errno_of(&e), format!("vCPU {id}: {e}"))
        })?;
        self.vcpus.push((id, fd));
        Ok(())
    }
}

impl crate::platform::PrivateMemory for KvmConfidentialVm {
    fn add_slot(&mut self, spec: SlotSpec) -> Result<(), CommandError> {
        KvmConfidentialVm::add_slot(self, spec)
    }
    fn set_memory_attributes(
        &mut self,
        gpa: u64,
        size: u64,
        private: bool,
    ) -> Result<(), CommandError> {
        KvmConfidentialVm::set_memory_attributes(self, gpa, size, private)
    }
    fn discard(&mut self, gpa: u64, size: u64, private_backing: bool) -> Result<(), CommandError> {
        KvmConfidentialVm::discard(self, gpa, size, private_backing)
    }
    fn enable_page_state_exits(&mut self) -> Result<(), CommandError> {
        KvmConfidentialVm::enable_page_state_exits(self)
    }
    fn create_vcpu(&mut self, id: u32) -> Result<(), CommandError> {
        KvmConfidentialVm::create_vcpu(self, id)
    }
}

/// Implements [`crate::platform::PrivateMemory`] for a backend holding a
/// `KvmConfidentialVm` in field `core`.
macro_rules! private_memory_via_core {
    ($t:ty) => {
        impl $crate::platform::PrivateMemory for $t {
            fn add_slot(
                &mut self,
                spec: $crate::platform::SlotSpec,
            ) -> Result<(), $crate::platform::CommandError> {
                self.core.add_slot(spec)
            }
            fn set_memory_attributes(
                &mut self,
                gpa: u64,
                size: u64,
                private: bool,
            ) -> Result<(), $crate::platform::CommandError> {
                self.core.set_memory_attributes(gpa, size, private)
            }
            fn discard(
                &mut self,
                gpa: u64,
                size: u64,
                private_backing: bool,
            ) -> Result<(), $crate::platform::CommandError> {
                self.core.discard(gpa, size, private_backing)
            }
            fn enable_page_state_exits(&mut self) -> Result<(), $crate::platform::CommandError> {
                self.core.enable_page_state_exits()
            }
            fn create_vcpu(&mut self, id: u32) -> Result<(), $crate::platform::CommandError> {
                self.core.create_vcpu(id)
            }
        }
    };
}
pub(crate) use private_memory_via_core;

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared KVM core on a plain VM: this host (like most development machines) offers
    /// guest_memfd for default VMs but no confidential VM type, so this is as far as the real
    /// backend can be exercised here.
    #[test]
    fn guest_memfd_slot_shared_view_and_discards_on_a_default_vm() {
        let mut vm = match KvmConfidentialVm::create(kvm_bindings::KVM_X86_DEFAULT_VM) {
            Ok(vm) => vm,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let spec = SlotSpec {
            slot: 0,
            gpa: 0x10_0000,
            size: 0x20_0000,
        };
        if let Err(e) = vm.add_slot(spec) {
            if e.command == "KVM_CREATE_GUEST_MEMFD" || e.errno == libc::EINVAL {
                eprintln!("skipped: this host's KVM has no guest_memfd slots for default VMs: {e}");
                return;
            }
            panic!("{e}");
        }
        assert_eq!(vm.slots().len(), 1);
        vm.write_shared(0x10_1000, b"shared bytes").unwrap();
        let mut back = [0u8; 12];
        vm.read_shared(0x10_1000, &mut back).unwrap();
        assert_eq!(&back, b"shared bytes");
        assert!(vm.read_shared(0x30_0000, &mut back).is_none());
        assert!(vm.read_shared(0x2f_fffc, &mut back).is_none());
        // Freeing the shared view's pages of a range made private zeroes them.
        vm.discard(0x10_1000, 0x1000, false).unwrap();
        vm.read_shared(0x10_1000, &mut back).unwrap();
        assert_eq!(back, [0u8; 12]);
        // Punching a hole in the guest_memfd works on the slot's range and ignores the rest.
        vm.discard(0x0, 0x20_0000, true).unwrap();
        vm.create_vcpu(0).unwrap();
        assert!(vm.vcpu("test", 0).is_ok());
        assert_eq!(vm.vcpu("test", 1).unwrap_err().errno, libc::ENOENT);
        assert_eq!(vm.take_vcpus().len(), 1);
        // Where the kernel lacks private memory attributes, the failure says so.
        if let Err(e) = vm.set_memory_attributes(0x10_0000, 0x1000, true) {
            assert_eq!(e.command, "KVM_SET_MEMORY_ATTRIBUTES");
            let text = e.to_string();
            assert!(text.contains("0x100000+0x1000 -> private"), "{text}");
            assert!(text.contains("errno"), "{text}");
        }
        // A slot overlapping the first is refused by KVM, and the error names the command.
        let e = vm
            .add_slot(SlotSpec {
                slot: 1,
                gpa: 0x20_0000,
                size: 0x1000,
            })
            .unwrap_err();
        assert_eq!(e.command, "KVM_SET_USER_MEMORY_REGION2");
        assert_eq!(e.errno, libc::EEXIST);
    }

    #[test]
    fn a_vm_type_kvm_does_not_offer_is_refused_with_the_command_named() {
        let e = KvmConfidentialVm::create(kvm_bindings::KVM_X86_SNP_VM);
        match e {
            Err(e) => {
                assert_eq!(e.command, "KVM_CREATE_VM");
                assert!(e.to_string().contains("veil host-check"), "{e}");
            }
            Ok(_) => eprintln!("skipped: this host offers SNP VMs"),
        }
    }
}
