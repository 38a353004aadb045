//! vCPUs: creation with their CPUID, MSRs, FPU, LAPIC and (BSP only) entry registers, and the
//! threads that run them. APs start parked in the in-kernel LAPIC (KVM_MP_STATE_UNINITIALIZED)
//! and run once the guest sends them INIT/SIPI.

mod dump;
mod io;
mod run;

pub(crate) use run::{RunContext, run_loop};

use kvm_bindings::CpuId;
use kvm_ioctls::{VcpuFd, VmFd};

use crate::x86::regs::{self, EntryMode};
use crate::x86::{cpuid, msr};

/// Errors from setting up a vCPU; each names the vCPU and the KVM call.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed.
    #[error("vCPU {id}: {call}: {source}")]
    Kvm {
        /// The vCPU index.
        id: u32,
        /// The ioctl.
        call: &'static str,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The CPUID table could not be built.
    #[error("vCPU {id}: {source}")]
    Cpuid {
        /// The vCPU index.
        id: u32,
        /// Why.
        #[source]
        source: cpuid::CpuidError,
    },
    /// KVM accepted fewer MSRs than given.
    #[error("vCPU {id}: KVM_SET_MSRS set {set} of {wanted} boot MSRs")]
    Msrs {
        /// The vCPU index.
        id: u32,
        /// How many KVM set.
        set: usize,
        /// How many were given.
        wanted: usize,
    },
}

/// What every vCPU is configured from.
#[derive(Debug)]
pub(crate) struct VcpuSetup {
    /// KVM's supported CPUID.
    pub supported_cpuid: CpuId,
    /// Whether KVM emulates the TSC-deadline timer.
    pub tsc_deadline: bool,
    /// Number of vCPUs.
    pub cpus: u32,
    /// How the BSP enters the kernel.
    pub entry: EntryMode,
}

/// Creates and configures vCPU `id`.
pub(crate) fn create(vm: &VmFd, id: u32, setup: &VcpuSetup) -> Result<VcpuFd, VcpuError> {
    let kvm = |call| move |source| VcpuError::Kvm { id, call, source };
    let fd = vm
        .create_vcpu(u64::from(id))
        .map_err(kvm("KVM_CREATE_VCPU"))?;
    let host = cpuid::HostFacts {
        tsc_deadline: setup.tsc_deadline,
        // Unknown when the host TSC is unstable; the guest then calibrates some other way.
        tsc_khz: fd.get_tsc_khz().ok(),
    };
    let table = cpuid::for_vcpu(&setup.supported_cpuid, id, setup.cpus, host)
        .map_err(|source| VcpuError::Cpuid { id, source })?;
    fd.set_cpuid2(&table).map_err(kvm("KVM_SET_CPUID2"))?;
    let msrs = msr::boot_msrs();
    let set = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
    if set != msrs.as_slice().len() {
        return Err(VcpuError::Msrs {
            id,
            set,
            wanted: msrs.as_slice().len(),
        });
    }
    fd.set_fpu(&msr::boot_fpu()).map_err(kvm("KVM_SET_FPU"))?;
    let mut lapic = fd.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    msr::set_lint_modes(&mut lapic);
    fd.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))?;
    if id == 0 {
        let sregs = fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        fd.set_sregs(&regs::sregs(sregs, setup.entry))
            .map_err(kvm("KVM_SET_SREGS"))?;
        fd.set_regs(&regs::regs(setup.entry))
            .map_err(kvm("KVM_SET_REGS"))?;
    }
    Ok(fd)
}
