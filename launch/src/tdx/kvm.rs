//! [`TdxPlatform`] over real KVM ioctls: `KVM_MEMORY_ENCRYPT_OP` with Veil's `kvm_tdx_cmd` on
//! the VM fd (CAPABILITIES, INIT_VM, FINALIZE_VM) and on vCPU fds (INIT_VCPU,
//! INIT_MEM_REGION), which kvm-ioctls does not offer. Needs a TDX host (Linux 6.16+).

use std::os::fd::AsRawFd;

use kvm_bindings::kvm_cpuid_entry2;

use super::{CapabilitiesReply, InitVm, TdxCapabilities, TdxPlatform};
use crate::kvm_vm::{KvmConfidentialVm, private_memory_via_core};
use crate::platform::CommandError;
use crate::sys::tdx::{
    self as sys, KvmTdxCapabilities, KvmTdxCmd, KvmTdxInitMemRegion, KvmTdxInitVm,
};
use crate::sys::{CpuidTail, KVM_MEMORY_ENCRYPT_OP};

/// A TD on KVM.
#[derive(Debug)]
pub struct KvmTdx {
    /// The VM, its slots and vCPUs.
    pub core: KvmConfidentialVm,
}

private_memory_via_core!(KvmTdx);

fn words(b: &[u8; 48]) -> [u64; 6] {
    let mut w = [0u64; 6];
    for (i, c) in b.chunks_exact(8).enumerate() {
        let mut x = [0u8; 8];
        x.copy_from_slice(c);
        w[i] = u64::from_le_bytes(x);
    }
    w
}

fn fail(id: u32, cmd: &KvmTdxCmd, err: std::io::Error, what: String) -> CommandError {
    let mut e = CommandError::last_os(sys::cmd_name(id), &err, format!("{what}: {err}"));
    if cmd.hw_error != 0 {
        e = e.with_fw(cmd.hw_error);
    }
    e
}

/// Issues `KVM_MEMORY_ENCRYPT_OP` with a TDX command on `fd` (VM or vCPU).
fn tdx_op(fd: i32, id: u32, flags: u32, data: u64, what: String) -> Result<(), CommandError> {
    let mut cmd = KvmTdxCmd {
        id,
        flags,
        data,
        hw_error: 0,
    };
    // SAFETY: cmd is a live repr(C) kvm_tdx_cmd; `data` points to the sub-command's struct (or
    // is an immediate), which the callers keep alive across the call.
    let r = unsafe { libc::ioctl(fd, KVM_MEMORY_ENCRYPT_OP as _, &mut cmd as *mut KvmTdxCmd) };
    if r == 0 {
        Ok(())
    } else {
        Err(fail(id, &cmd, std::io::Error::last_os_error(), what))
    }
}

impl KvmTdx {
    /// Creates a `KVM_X86_TDX_VM` with a split irqchip (TDX vCPUs need the local APIC in KVM
    /// and the IOAPIC in userspace).
    pub fn create() -> Result<Self, CommandError> {
        let core = KvmConfidentialVm::create(kvm_bindings::KVM_X86_TDX_VM)?;
        core.enable_split_irqchip(24)?;
        Ok(KvmTdx { core })
    }

    fn vm_fd(&self) -> i32 {
        self.core.vm.as_raw_fd()
    }
}

impl TdxPlatform for KvmTdx {
    fn capabilities(&mut self, room: u32) -> Result<CapabilitiesReply, CommandError> {
        let mut buf = CpuidTail::new(KvmTdxCapabilities::default(), room as usize);
        let r = tdx_op(
            self.vm_fd(),
            sys::KVM_TDX_CAPABILITIES,
            0,
            buf.as_mut_ptr() as u64,
            format!("room for {room} CPUID entries"),
        );
        match r {
            Err(e) if e.errno == libc::E2BIG => {
                Ok(CapabilitiesReply::TooSmall { needed: buf.nent() })
            }
            Err(e) => Err(e),
            Ok(()) => {
                let h = buf.head();
                Ok(CapabilitiesReply::Caps(TdxCapabilities {
                    supported_attrs: h.supported_attrs,
                    supported_xfam: h.supported_xfam,
                    user_tdvmcallinfo_1_r11: h.user_tdvmcallinfo_1_r11,
                    user_tdvmcallinfo_1_r12: h.user_tdvmcallinfo_1_r12,
                    cpuid: buf.entries(),
                }))
            }
        }
    }

    fn supported_cpuid(&mut self) -> Result<Vec<kvm_cpuid_entry2>, CommandError> {
        self.core.supported_cpuid()
    }

    fn init_vm(&mut self, init: &InitVm) -> Result<(), CommandError> {
        let head = KvmTdxInitVm {
            attributes: init.attributes,
            xfam: init.xfam,
            mrconfigid: words(&init.mrconfigid),
            mrowner: words(&init.mrowner),
            mrownerconfig: words(&init.mrownerconfig),
            ..Default::default()
        };
        let mut buf = CpuidTail::new(head, init.cpuid.len());
        buf.set_entries(&init.cpuid);
        tdx_op(
            self.vm_fd(),
            sys::KVM_TDX_INIT_VM,
            0,
            buf.as_mut_ptr() as u64,
            format!("attributes {:#x}, xfam {:#x}", init.attributes, init.xfam),
        )
    }

    fn set_vcpu_cpuid(&mut self, id: u32, cpuid: &[kvm_cpuid_entry2]) -> Result<(), CommandError> {
        self.core.set_vcpu_cpuid(id, cpuid)
    }

    fn init_vcpu(&mut self, id: u32, hob_gpa: u64) -> Result<(), CommandError> {
        let fd = self.core.vcpu("KVM_TDX_INIT_VCPU", id)?.as_raw_fd();
        tdx_op(
            fd,
            sys::KVM_TDX_INIT_VCPU,
            0,
            hob_gpa,
            format!("vCPU {id}, TD HOB at {hob_gpa:#x}"),
        )
    }

    fn init_mem_region(
        &mut self,
        vcpu: u32,
        src: &[u8],
        gpa: u64,
        pages: u64,
        measure: bool,
    ) -> Result<u64, CommandError> {
        const CMD: &str = "KVM_TDX_INIT_MEM_REGION";
        if (src.len() as u64) < pages * 4096 {
            return Err(CommandError::new(
                CMD,
                libc::EFAULT,
                format!("source holds {:#x} bytes for {pages} pages", src.len()),
            ));
        }
        let fd = self.core.vcpu(CMD, vcpu)?.as_raw_fd();
        let mut region = KvmTdxInitMemRegion {
            source_addr: src.as_ptr() as u64,
            gpa,
            nr_pages: pages,
        };
        let flags = if measure {
            sys::KVM_TDX_MEASURE_MEMORY_REGION
        } else {
            0
        };
        let r = tdx_op(
            fd,
            sys::KVM_TDX_INIT_MEM_REGION,
            flags,
            &mut region as *mut KvmTdxInitMemRegion as u64,
            format!("{pages} pages at {gpa:#x}"),
        );
        // The kernel advances the region as it goes, also when interrupted.
        let done = pages.saturating_sub(region.nr_pages);
        match r {
            Ok(()) => Ok(done),
            Err(e) if done > 0 && (e.errno == libc::EINTR || e.errno == libc::EAGAIN) => Ok(done),
            Err(e) => Err(e),
        }
    }

    fn finalize(&mut self) -> Result<(), CommandError> {
        tdx_op(
            self.vm_fd(),
            sys::KVM_TDX_FINALIZE_VM,
            0,
            0,
            "finalize".to_string(),
        )
    }
}
