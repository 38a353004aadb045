//! [`SnpPlatform`] over real KVM ioctls (`KVM_MEMORY_ENCRYPT_OP` with `kvm_sev_cmd` on the VM
//! fd, `/dev/sev`'s fd in every command). Needs an SEV-SNP host (Linux 6.11+).

use std::fs::File;
use std::os::fd::AsRawFd;

use kvm_bindings::{Msrs, kvm_cpuid_entry2, kvm_msr_entry};

use super::{Init2, LaunchFinish, LaunchStart, SnpPlatform};
use crate::kvm_vm::{KvmConfidentialVm, private_memory_via_core};
use crate::platform::CommandError;
use crate::regs::VcpuRegisters;
use crate::sys::snp::{self as sys, kvm_sev_cmd};

/// An SNP VM on KVM.
#[derive(Debug)]
pub struct KvmSnp {
    /// The VM, its slots and vCPUs.
    pub core: KvmConfidentialVm,
    sev: File,
}

private_memory_via_core!(KvmSnp);

impl KvmSnp {
    /// Opens `/dev/sev` and creates a `KVM_X86_SNP_VM`.
    pub fn create() -> Result<Self, CommandError> {
        let sev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/sev")
            .map_err(|e| CommandError::last_os("open /dev/sev", &e, format!("/dev/sev: {e}")))?;
        let core = KvmConfidentialVm::create(kvm_bindings::KVM_X86_SNP_VM)?;
        Ok(KvmSnp { core, sev })
    }

    fn sev_cmd<T>(&self, command: &'static str, id: u32, data: *mut T) -> Result<(), CommandError> {
        let mut cmd = kvm_sev_cmd {
            id,
            data: data as u64,
            sev_fd: self.sev.as_raw_fd() as u32,
            ..Default::default()
        };
        self.core.vm.encrypt_op_sev(&mut cmd).map_err(|e| {
            let mut err = CommandError::new(command, e.errno(), format!("{e}"));
            if cmd.error != 0 {
                err = err.with_fw(u64::from(cmd.error));
            }
            err
        })
    }
}

impl SnpPlatform for KvmSnp {
    fn init2(&mut self, init: &Init2) -> Result<(), CommandError> {
        let mut data = sys::kvm_sev_init {
            vmsa_features: init.vmsa_features,
            ghcb_version: init.ghcb_version,
            ..Default::default()
        };
        self.sev_cmd("KVM_SEV_INIT2", sys::KVM_SEV_INIT2, &mut data)
    }

    fn enable_split_irqchip(&mut self, ioapic_pins: u32) -> Result<(), CommandError> {
        self.core.enable_split_irqchip(ioapic_pins)
    }

    fn supported_cpuid(&mut self) -> Result<Vec<kvm_cpuid_entry2>, CommandError> {
        self.core.supported_cpuid()
    }

    fn launch_start(&mut self, start: &LaunchStart) -> Result<(), CommandError> {
        let mut data = sys::kvm_sev_snp_launch_start {
            policy: start.policy,
            gosvw: start.gosvw,
            ..Default::default()
        };
        self.sev_cmd("SNP_LAUNCH_START", sys::KVM_SEV_SNP_LAUNCH_START, &mut data)
    }

    fn launch_update(
        &mut self,
        gfn: u64,
        src: Option<&mut [u8]>,
        pages: u64,
        page_type: u8,
    ) -> Result<u64, CommandError> {
        const CMD: &str = "SNP_LAUNCH_UPDATE";
        let len = pages * 4096;
        let uaddr = match src {
            Some(s) if (s.len() as u64) < len => {
                return Err(CommandError::new(
                    CMD,
                    libc::EFAULT,
                    format!("source holds {:#x} bytes for {len:#x}", s.len()),
                ));
            }
            Some(s) => s.as_mut_ptr() as u64,
            None => 0,
        };
        let mut data = sys::kvm_sev_snp_launch_update {
            gfn_start: gfn,
            uaddr,
            len,
            type_: page_type,
            ..Default::default()
        };
        // On a rejected CPUID page the kernel writes the firmware's corrected page to uaddr,
        // which is the caller's buffer.
        self.sev_cmd(CMD, sys::KVM_SEV_SNP_LAUNCH_UPDATE, &mut data)?;
        // The kernel writes back the remaining range.
        Ok(pages - data.len / 4096)
    }

    fn set_vcpu_cpuid(&mut self, id: u32, cpuid: &[kvm_cpuid_entry2]) -> Result<(), CommandError> {
        self.core.set_vcpu_cpuid(id, cpuid)
    }

    fn set_vcpu_registers(&mut self, id: u32, r: &VcpuRegisters) -> Result<(), CommandError> {
        let v = self.core.vcpu("KVM_SET_REGS", id)?;
        let fail = |cmd: &'static str| {
            move |e: kvm_ioctls::Error| CommandError::new(cmd, e.errno(), format!("vCPU {id}: {e}"))
        };
        v.set_regs(&r.regs).map_err(fail("KVM_SET_REGS"))?;
        v.set_sregs(&r.sregs).map_err(fail("KVM_SET_SREGS"))?;
        v.set_fpu(&r.fpu).map_err(fail("KVM_SET_FPU"))?;
        v.set_xcrs(&r.xcrs()).map_err(fail("KVM_SET_XCRS"))?;
        v.set_debug_regs(&r.debugregs())
            .map_err(fail("KVM_SET_DEBUGREGS"))?;
        let entries: Vec<kvm_msr_entry> = r
            .msrs
            .iter()
            .map(|&(index, data)| kvm_msr_entry {
                index,
                data,
                ..Default::default()
            })
            .collect();
        let msrs = Msrs::from_entries(&entries).map_err(|e| {
            CommandError::new("KVM_SET_MSRS", libc::E2BIG, format!("vCPU {id}: {e:?}"))
        })?;
        let n = v.set_msrs(&msrs).map_err(fail("KVM_SET_MSRS"))?;
        if n != entries.len() {
            return Err(CommandError::new(
                "KVM_SET_MSRS",
                libc::EINVAL,
                format!("vCPU {id}: KVM set {n} of {} MSRs", entries.len()),
            ));
        }
        Ok(())
    }

    fn launch_finish(&mut self, f: &LaunchFinish<'_>) -> Result<(), CommandError> {
        const CMD: &str = "SNP_LAUNCH_FINISH";
        let mut data = sys::kvm_sev_snp_launch_finish {
            host_data: f.host_data,
            ..Default::default()
        };
        if let (Some(block), Some(auth)) = (f.id_block, f.id_auth) {
            if block.len() != 96 || auth.len() != 4096 {
                return Err(CommandError::new(
                    CMD,
                    libc::EINVAL,
                    format!(
                        "ID block of {} bytes, auth {}: need 96 and 4096",
                        block.len(),
                        auth.len()
                    ),
                ));
            }
            data.id_block_uaddr = block.as_ptr() as u64;
            data.id_auth_uaddr = auth.as_ptr() as u64;
            data.id_block_en = 1;
            data.auth_key_en = u8::from(f.author_key);
        }
        self.sev_cmd(CMD, sys::KVM_SEV_SNP_LAUNCH_FINISH, &mut data)
    }
}
