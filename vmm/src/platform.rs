//! Guests whose RAM lives in guest_memfd slots: confidential launches (SEV-SNP, TDX) through
//! veil-launch's backends, and plain guests on the same layout (`--guest-memfd`).
//!
//! Either way the VMM sees guest RAM only through the slots' shared views (a
//! `GuestMemoryMmap` built over them), offers its devices `VIRTIO_F_ACCESS_PLATFORM`, and passes
//! the platform's vCPU exits (page-state hypercalls, memory faults, `KVM_EXIT_TDX`, fatal
//! events) to `veil_launch::runtime` through [`PlatformExits`]. Plain VMs have no such hook and
//! pay nothing for it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use kvm_bindings::kvm_run;
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use veil_launch::backend::{self, BackendError, ConfidentialBackend};
use veil_launch::kvm_vm::KvmConfidentialVm;
use veil_launch::platform::{CommandError, SlotSpec};
use veil_launch::runtime::{self, ExitAction};
use veil_launch::tdx::quote::QuoteService;
use vm_memory::mmap::MmapRegion;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::config::ConfidentialLaunch;
use crate::memory::{MemoryLayout, RAM_ABOVE_4G};
use crate::vm::{self, VmError};

/// Errors from setting up a guest_memfd-backed VM; each names the step.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// The confidential backend could not be opened (host lacks the platform, VM creation).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The confidential launch failed.
    #[error("the confidential launch failed: {0}")]
    Launch(#[from] veil_launch::LaunchError),
    /// A KVM command on the plain guest_memfd VM (`--guest-memfd`) failed.
    #[error("--guest-memfd: {0}")]
    Command(#[from] CommandError),
    /// The VM's TSS or split irqchip.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// A slot's shared view could not be described to vm-memory.
    #[error("shared view of the slot at {gpa:#x} (+{size:#x}): {what}")]
    SharedView {
        /// The slot's first GPA.
        gpa: u64,
        /// Its size.
        size: u64,
        /// What vm-memory refused.
        what: String,
    },
}

/// The hook the vCPU run loop calls for platform exits.
pub(crate) trait PlatformExits: Send + Sync + std::fmt::Debug {
    /// Handles `exit` if it is the platform's (page-state hypercall, memory fault, TDX fatal
    /// error, SEV termination request); `None` leaves it to the VMM's ordinary handling.
    fn handle_exit(&self, exit: &mut VcpuExit<'_>) -> Option<ExitAction>;

    /// Handles `KVM_EXIT_TDX` (exit reason 40) in `run`.
    fn handle_tdx_exit(&self, run: &mut kvm_run) -> ExitAction;
}

/// Who owns the slots: a confidential backend, or a plain VM on guest_memfd slots.
#[derive(Debug)]
enum Core {
    Backend(Box<dyn ConfidentialBackend>),
    Plain(KvmConfidentialVm),
}

impl Core {
    fn vm(&mut self) -> &mut KvmConfidentialVm {
        match self {
            Core::Backend(b) => b.vm(),
            Core::Plain(vm) => vm,
        }
    }
}

/// A VM whose RAM is guest_memfd slots: owns the slots (and so the shared views guest memory
/// is mapped from) and answers the platform's exits. The VM handle keeps it until every vCPU
/// and device thread is gone.
#[derive(Debug)]
pub(crate) struct GuestMemfdVm {
    /// Conversions change the slots' backing: one vCPU at a time.
    core: Mutex<Core>,
    quote: Option<QuoteService>,
}

impl GuestMemfdVm {
    fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the KVM side of the VM (tests).
    #[cfg(test)]
    pub(crate) fn with_vm<R>(&self, f: impl FnOnce(&mut KvmConfidentialVm) -> R) -> R {
        f(self.core().vm())
    }

    /// Whether TDX quote requests go to a quote generation service (vCPU threads then need a
    /// Unix socket).
    pub(crate) fn has_quote_service(&self) -> bool {
        self.quote.is_some()
    }
}

impl PlatformExits for GuestMemfdVm {
    fn handle_exit(&self, exit: &mut VcpuExit<'_>) -> Option<ExitAction> {
        match exit {
            VcpuExit::Hypercall(_) | VcpuExit::MemoryFault { .. } | VcpuExit::SystemEvent(..) => {
                runtime::handle_exit(self.core().vm(), exit)
            }
            _ => None,
        }
    }

    fn handle_tdx_exit(&self, run: &mut kvm_run) -> ExitAction {
        let mut core = self.core();
        runtime::handle_tdx_exit(run, core.vm(), self.quote.as_ref())
    }
}

/// A guest_memfd VM ready for devices and vCPU threads.
pub(crate) struct Prepared {
    /// Owner of the slots and the exit hook.
    pub platform: Arc<GuestMemfdVm>,
    /// The VM fd.
    pub vm: Arc<VmFd>,
    /// Guest memory over the slots' shared views.
    pub memory: GuestMemoryMmap,
    /// Bytes of guest memory above 4 GiB (where the 64-bit PCI window starts).
    pub high_ram: u64,
    /// vCPUs the backend created and launched (empty for plain guests: the VMM creates them).
    pub vcpus: Vec<(u32, VcpuFd)>,
}

/// `GuestMemoryMmap` over the shared views of `vm`'s slots.
fn shared_memory(vm: &KvmConfidentialVm) -> Result<GuestMemoryMmap, PlatformError> {
    let mut regions = Vec::with_capacity(vm.slots().len());
    for s in vm.slots() {
        let bad = |what: String| PlatformError::SharedView {
            gpa: s.spec.gpa,
            size: s.spec.size,
            what,
        };
        let len = usize::try_from(s.spec.size).map_err(|_| bad("too large".into()))?;
        // SAFETY: the range is the slot's whole shared view, a live MAP_SHARED anonymous
        // mapping owned by the slot; a region built with build_raw never unmaps it. The view
        // outlives every user of this memory: the slots belong to the `GuestMemfdVm` the VM
        // handle keeps until the vCPU threads are joined and the devices dropped.
        let region = unsafe {
            MmapRegion::build_raw(
                s.shared_host_addr(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            )
        }
        .map_err(|e| bad(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(s.spec.gpa))
            .ok_or_else(|| bad("the region wraps the guest address space".into()))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| PlatformError::SharedView {
        gpa: 0,
        size: 0,
        what: e.to_string(),
    })
}

fn high_ram(vm: &KvmConfidentialVm) -> u64 {
    vm.slots()
        .iter()
        .map(|s| s.spec.gpa + s.spec.size)
        .max()
        .unwrap_or(0)
        .saturating_sub(RAM_ABOVE_4G)
}

/// A plain (type 0) VM whose RAM, laid out as `layout`, is guest_memfd slots with shared
/// views, page-state exits enabled, the TSS and the split irqchip set. Nothing is private, so
/// KVM maps the guest's memory from the shared views, which the loader writes into.
pub(crate) fn plain(layout: &MemoryLayout) -> Result<Prepared, PlatformError> {
    let mut vm = KvmConfidentialVm::create(kvm_bindings::KVM_X86_DEFAULT_VM)?;
    vm::prepare(&vm.vm)?;
    for (slot, (gpa, len)) in layout.ranges().into_iter().enumerate() {
        vm.add_slot(SlotSpec {
            slot: slot as u32,
            gpa: gpa.0,
            size: len as u64,
        })?;
    }
    vm.enable_page_state_exits()?;
    let memory = shared_memory(&vm)?;
    Ok(Prepared {
        vm: vm.vm.clone(),
        memory,
        high_ram: layout.high_ram(),
        vcpus: Vec::new(),
        platform: Arc::new(GuestMemfdVm {
            core: Mutex::new(Core::Plain(vm)),
            quote: None,
        }),
    })
}

/// Opens the platform's backend (the host is checked first) and launches `c.plan`: VM, slots,
/// the plan replayed and measured, vCPUs created with their state, the launch finalised.
pub(crate) fn confidential(c: &ConfidentialLaunch) -> Result<Prepared, PlatformError> {
    let mut backend = backend::open(c.plan.platform)?;
    let summary = backend.launch(&c.plan, &c.options)?;
    for n in &summary.notes {
        log::info!("{}: {n}", summary.platform);
    }
    let vcpus = backend.vm().take_vcpus();
    let memory = shared_memory(backend.vm())?;
    Ok(Prepared {
        vm: backend.vm().vm.clone(),
        memory,
        high_ram: high_ram(backend.vm()),
        vcpus,
        platform: Arc::new(GuestMemfdVm {
            core: Mutex::new(Core::Backend(backend)),
            quote: c
                .quote_service
                .as_ref()
                .map(|p: &PathBuf| QuoteService::unix(p)),
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    /// The loader's writes through the shared-view memory land where the KVM core reads them.
    #[test]
    fn guest_memory_is_the_slots_shared_view() {
        let p = match plain(&MemoryLayout::new(8 << 20)) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skipped: this host has no guest_memfd slots on plain VMs: {e}");
                return;
            }
        };
        assert_eq!(p.memory.num_regions(), 1);
        p.memory
            .write_slice(b"through vm-memory", GuestAddress(0x20_0000))
            .unwrap();
        let mut back = [0u8; 17];
        let core = p.platform.core();
        let Core::Plain(vm) = &*core else {
            panic!("a plain guest_memfd VM");
        };
        vm.read_shared(0x20_0000, &mut back).unwrap();
        assert_eq!(&back, b"through vm-memory");
        assert_eq!(high_ram(vm), 0);
    }
}
