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
use veil_launch::tdx::quote::{QuoteService, SharedMemory};
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
        // The lock is taken per shared-memory access, not for the whole call: a GetQuote waits
        // on the quote service, and other vCPUs' conversions must not wait with it.
        runtime::handle_tdx_exit(run, &LockedShared(self), self.quote.as_ref())
    }
}

/// The shared views of a [`GuestMemfdVm`], locked for each copy only.
struct LockedShared<'a>(&'a GuestMemfdVm);

impl SharedMemory for LockedShared<'_> {
    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
        self.0.core().vm().read_shared(gpa, buf)
    }

    fn write_shared(&self, gpa: u64, data: &[u8]) -> Option<()> {
        self.0.core().vm().write_shared(gpa, data)
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

    /// Answers one QGS request with the report's bytes inverted as the "quote", after checking
    /// from another thread that `vm`'s conversion lock can be taken while the request waits.
    fn qgs_checking_the_lock(
        listener: std::os::unix::net::UnixListener,
        vm: Arc<GuestMemfdVm>,
    ) -> bool {
        use std::io::{Read, Write};
        let (mut s, _) = listener.accept().unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut req = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut req).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            vm.with_vm(|_| ());
            let _ = tx.send(());
        });
        let lock_free = rx.recv_timeout(std::time::Duration::from_secs(10)).is_ok();
        s.write_all(&crate::seccomp::vcpu_tests::fake_qgs_reply(&req))
            .unwrap();
        lock_free
    }

    /// A TD's GetQuote through the exit hook: the request is read from and the quote written
    /// to the guest's shared page, and other vCPUs' conversions are not held up while the quote
    /// service works (the lock is taken per copy, not across the wait).
    #[test]
    fn get_quote_answers_in_shared_memory_without_holding_the_lock() {
        use veil_launch::sys::tdx::{KvmRunTdx, tdvmcall};
        let p = match plain(&MemoryLayout::new(8 << 20)) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("skipped: this host has no guest_memfd slots on plain VMs: {e}");
                return;
            }
        };
        let dir = std::env::temp_dir().join(format!("veil-qgs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("qgs.socket");
        let _ = std::fs::remove_file(&socket);
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let core = Arc::try_unwrap(p.platform)
            .expect("only the test holds the platform")
            .core
            .into_inner()
            .unwrap();
        let vm = Arc::new(GuestMemfdVm {
            core: Mutex::new(core),
            quote: Some(QuoteService::unix(&socket)),
        });
        let qgs = {
            let vm = vm.clone();
            std::thread::spawn(move || qgs_checking_the_lock(listener, vm))
        };
        // The guest's buffer: version 1, in_len 1024, then the TDREPORT.
        let gpa = 0x10_0000u64;
        let mut page = vec![0u8; 24 + 1024];
        page[0..8].copy_from_slice(&1u64.to_le_bytes());
        page[16..20].copy_from_slice(&1024u32.to_le_bytes());
        page[24..].fill(0x5a);
        p.memory.write_slice(&page, GuestAddress(gpa)).unwrap();
        let mut run = kvm_run::default();
        let call = KvmRunTdx {
            nr: tdvmcall::GET_QUOTE,
            args: [gpa, 0x1000, 0, 0, 0],
            ..Default::default()
        };
        // SAFETY: the exit union is 256 bytes; KvmRunTdx is 64 bytes of u64s written at its
        // start, as the kernel does for KVM_EXIT_TDX.
        unsafe { std::ptr::write(run.__bindgen_anon_1.padding.as_mut_ptr().cast(), call) };
        assert_eq!(vm.handle_tdx_exit(&mut run), ExitAction::Resume);
        // SAFETY: as above, reading back what the handler wrote.
        let back: KvmRunTdx =
            unsafe { std::ptr::read(run.__bindgen_anon_1.padding.as_ptr().cast()) };
        assert_eq!(back.ret, tdvmcall::SUCCESS);
        assert!(
            qgs.join().unwrap(),
            "the conversion lock stayed taken while the quote service worked"
        );
        let mut answer = vec![0u8; 24 + 1024];
        p.memory.read_slice(&mut answer, GuestAddress(gpa)).unwrap();
        let status = u64::from_le_bytes(answer[8..16].try_into().unwrap());
        let out_len = u32::from_le_bytes(answer[20..24].try_into().unwrap());
        assert_eq!((status, out_len), (0, 1024), "status and out_len");
        assert!(answer[24..].iter().all(|b| *b == 0xa5), "the quote");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
