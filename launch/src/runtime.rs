//! Run-time exits of confidential guests: page-state changes (`KVM_HC_MAP_GPA_RANGE` hypercall
//! exits, memory-fault exits) convert ranges between private and shared and free the backing
//! the range no longer uses; TDX exits (`KVM_EXIT_TDX`, `KVM_SYSTEM_EVENT_TDX_FATAL`) and SNP
//! termination requests are answered or reported clearly.
//!
//! The conversion code is generic over [`PrivateMemory`], so the models test it too.

use kvm_ioctls::VcpuExit;

use crate::platform::{CommandError, PrivateMemory};
use crate::sys::tdx::{self as tdx_sys, KvmRunTdx, tdvmcall};
use crate::sys::{
    KVM_HC_MAP_GPA_RANGE, KVM_MAP_GPA_RANGE_ENCRYPTED, KVM_MAP_GPA_RANGE_PAGE_SZ_MASK,
    KVM_MEMORY_EXIT_FLAG_PRIVATE,
};
use crate::tdx::quote::{QuoteService, SharedMemory, handle_get_quote};

const PAGE: u64 = 4096;

/// Converts `[gpa, gpa + size)` to private or shared: the memory attributes first, then the
/// backing the range stops using (guest_memfd pages of a range made shared, shared-view pages
/// of a range made private).
pub fn convert<M: PrivateMemory + ?Sized>(
    mem: &mut M,
    gpa: u64,
    size: u64,
    to_private: bool,
) -> Result<(), CommandError> {
    mem.set_memory_attributes(gpa, size, to_private)?;
    mem.discard(gpa, size, !to_private)
}

/// `KVM_HC_MAP_GPA_RANGE(gpa, npages, attrs)`: checks the arguments and converts.
pub fn map_gpa_range<M: PrivateMemory + ?Sized>(
    mem: &mut M,
    gpa: u64,
    npages: u64,
    attrs: u64,
) -> Result<(), CommandError> {
    const CMD: &str = "KVM_HC_MAP_GPA_RANGE";
    let size = npages.checked_mul(PAGE).filter(|s| *s > 0);
    let valid = attrs & !(KVM_MAP_GPA_RANGE_ENCRYPTED | KVM_MAP_GPA_RANGE_PAGE_SZ_MASK) == 0
        && attrs & KVM_MAP_GPA_RANGE_PAGE_SZ_MASK <= 2;
    let Some(size) = size.filter(|s| gpa % PAGE == 0 && valid && gpa.checked_add(*s).is_some())
    else {
        return Err(CommandError::new(
            CMD,
            libc::EINVAL,
            format!("guest asked to map {npages} pages at {gpa:#x} with attributes {attrs:#x}"),
        ));
    };
    convert(mem, gpa, size, attrs & KVM_MAP_GPA_RANGE_ENCRYPTED != 0)
}

/// `KVM_EXIT_MEMORY_FAULT`: converts the faulting range to the kind of the access.
pub fn memory_fault<M: PrivateMemory + ?Sized>(
    mem: &mut M,
    gpa: u64,
    size: u64,
    flags: u64,
) -> Result<(), CommandError> {
    let start = gpa / PAGE * PAGE;
    let end = gpa.saturating_add(size.max(1)).div_ceil(PAGE) * PAGE;
    convert(
        mem,
        start,
        end - start,
        flags & KVM_MEMORY_EXIT_FLAG_PRIVATE != 0,
    )
}

/// What a confidential exit means for the vCPU loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Handled: re-enter the guest.
    Resume,
    /// The guest cannot continue; the text says why.
    Stop(String),
}

/// `ret` value for a failed hypercall (a negative errno, as KVM's own handlers return).
fn hypercall_error(e: &CommandError) -> u64 {
    (-(i64::from(e.errno.max(1)))) as u64
}

/// Handles the confidential exits among `exit`; `None` when `exit` is not one (the VMM's
/// ordinary handling applies).
pub fn handle_exit<M: PrivateMemory + ?Sized>(
    mem: &mut M,
    exit: &mut VcpuExit<'_>,
) -> Option<ExitAction> {
    match exit {
        VcpuExit::Hypercall(h) if h.nr == KVM_HC_MAP_GPA_RANGE => {
            let r = map_gpa_range(mem, h.args[0], h.args[1], h.args[2]);
            *h.ret = match &r {
                Ok(()) => 0,
                Err(e) => {
                    log::warn!("page-state change refused: {e}");
                    hypercall_error(e)
                }
            };
            Some(ExitAction::Resume)
        }
        VcpuExit::MemoryFault { flags, gpa, size } => {
            Some(match memory_fault(mem, *gpa, *size, *flags) {
                Ok(()) => ExitAction::Resume,
                Err(e) => ExitAction::Stop(format!(
                    "memory fault at {gpa:#x}+{size:#x} could not be resolved: {e}"
                )),
            })
        }
        VcpuExit::SystemEvent(ty, data) if *ty == tdx_sys::KVM_SYSTEM_EVENT_TDX_FATAL => {
            Some(ExitAction::Stop(tdx_fatal_message(data)))
        }
        VcpuExit::SystemEvent(ty, data) if *ty == kvm_bindings::KVM_SYSTEM_EVENT_SEV_TERM => {
            Some(ExitAction::Stop(format!(
                "the SEV-SNP guest asked to terminate (GHCB termination request {:#x?})",
                data
            )))
        }
        _ => None,
    }
}

/// The message for `KVM_SYSTEM_EVENT_TDX_FATAL`: KVM passes the TD's 16 GPRs in order; R12
/// holds the error code and R13 the GPA of optional additional information.
pub fn tdx_fatal_message(data: &[u64]) -> String {
    let code = data.get(12).copied().unwrap_or(0);
    let info = data.get(13).copied().unwrap_or(0);
    format!(
        "the TD reported a fatal error (TDG.VP.VMCALL<ReportFatalError>): error code {code:#018x} \
         (class {:#x}, detail {:#x}), additional information at GPA {info:#x}",
        code >> 32,
        code & 0xffff_ffff
    )
}

/// Handles `KVM_EXIT_TDX` (exit reason 40) in `run`: `GetQuote` (forwarded to `quote`, or a
/// clear "service unavailable" to the guest), `GetTdVmCallInfo`, `SetupEventNotifyInterrupt`.
pub fn handle_tdx_exit(
    run: &mut kvm_bindings::kvm_run,
    mem: &dyn SharedMemory,
    quote: Option<&QuoteService>,
) -> ExitAction {
    // SAFETY: the exit union is at least 256 bytes and KvmRunTdx is 64 bytes of plain u64s,
    // the layout the kernel writes for KVM_EXIT_TDX (asserted in sys::tdx).
    let tdx: &mut KvmRunTdx = unsafe { &mut *(run.__bindgen_anon_1.padding.as_mut_ptr().cast()) };
    match tdx.nr {
        tdvmcall::GET_QUOTE => {
            tdx.ret = handle_get_quote(mem, tdx.args[0], tdx.args[1], quote);
        }
        tdvmcall::GET_TD_VM_CALL_INFO => {
            // Leaf 1: which TDVMCALLs userspace supports beyond KVM's; Veil adds none.
            tdx.ret = tdvmcall::SUCCESS;
            if tdx.args[0] == 1 {
                tdx.args[1..5].fill(0);
            }
        }
        tdvmcall::SETUP_EVENT_NOTIFY_INTERRUPT => {
            // Quotes are answered synchronously, so no completion interrupt is needed.
            tdx.ret = if (32..256).contains(&tdx.args[0]) {
                tdvmcall::SUCCESS
            } else {
                tdvmcall::INVALID_OPERAND
            };
        }
        nr => {
            log::warn!("TDX: unsupported TDVMCALL {nr:#x} from the guest");
            tdx.ret = tdvmcall::SUBFUNC_UNSUPPORTED;
        }
    }
    ExitAction::Resume
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::SlotSpec;
    use crate::snp::model::{SnpModel, SnpModelConfig};

    fn model() -> SnpModel {
        let mut m = SnpModel::new(SnpModelConfig::default());
        m.add_slot(SlotSpec {
            slot: 0,
            gpa: 0,
            size: 1 << 20,
        })
        .unwrap();
        m.set_memory_attributes(0, 1 << 20, true).unwrap();
        m
    }

    #[test]
    fn map_gpa_range_to_shared_frees_private_backing_and_back() {
        let mut m = model();
        map_gpa_range(&mut m, 0x4000, 2, 0).unwrap();
        let mem = m.memory();
        assert!(!mem.private.contains_any(0x4000, 0x6000));
        assert!(mem.private.contains_all(0, 0x4000));
        assert!(mem.discarded_private.contains_all(0x4000, 0x6000));
        map_gpa_range(&mut m, 0x4000, 1, KVM_MAP_GPA_RANGE_ENCRYPTED).unwrap();
        let mem = m.memory();
        assert!(mem.private.contains_all(0x4000, 0x5000));
        assert!(mem.discarded_shared.contains_all(0x4000, 0x5000));
    }

    #[test]
    fn bad_page_state_requests_are_refused() {
        let mut m = model();
        for (gpa, n, attrs) in [
            (0x4001, 1, 0),
            (0x4000, 0, 0),
            (0x4000, 1, 3),
            (0x4000, 1, 1 << 8),
        ] {
            assert!(
                map_gpa_range(&mut m, gpa, n, attrs).is_err(),
                "{gpa:#x} {n} {attrs:#x}"
            );
        }
        assert!(map_gpa_range(&mut m, !0xfff, 2, 0).is_err());
    }

    #[test]
    fn memory_fault_converts_to_the_kind_of_access() {
        let mut m = model();
        memory_fault(&mut m, 0x8010, 8, 0).unwrap();
        assert!(!m.memory().private.contains_any(0x8000, 0x9000));
        memory_fault(&mut m, 0x8010, 8, KVM_MEMORY_EXIT_FLAG_PRIVATE).unwrap();
        assert!(m.memory().private.contains_all(0x8000, 0x9000));
    }

    #[test]
    fn handle_exit_answers_page_state_hypercalls_faults_and_fatal_events() {
        use kvm_ioctls::HypercallExit;
        let mut m = model();
        let mut ret = 0xffff_u64;
        let mut exit = VcpuExit::Hypercall(HypercallExit {
            nr: KVM_HC_MAP_GPA_RANGE,
            args: [0x10_000, 4, 0, 0, 0, 0],
            ret: &mut ret,
            longmode: 1,
        });
        assert_eq!(handle_exit(&mut m, &mut exit), Some(ExitAction::Resume));
        assert_eq!(ret, 0);
        assert!(!m.memory().private.contains_any(0x10_000, 0x14_000));
        let mut exit = VcpuExit::Hypercall(HypercallExit {
            nr: KVM_HC_MAP_GPA_RANGE,
            args: [0x10_001, 1, 0, 0, 0, 0],
            ret: &mut ret,
            longmode: 1,
        });
        assert_eq!(handle_exit(&mut m, &mut exit), Some(ExitAction::Resume));
        assert_eq!(ret as i64, -i64::from(libc::EINVAL));
        // Other hypercalls are the VMM's.
        let mut exit = VcpuExit::Hypercall(HypercallExit {
            nr: 5,
            args: [0; 6],
            ret: &mut ret,
            longmode: 1,
        });
        assert_eq!(handle_exit(&mut m, &mut exit), None);
        let mut exit = VcpuExit::MemoryFault {
            flags: KVM_MEMORY_EXIT_FLAG_PRIVATE,
            gpa: 0x10_000,
            size: 0x1000,
        };
        assert_eq!(handle_exit(&mut m, &mut exit), Some(ExitAction::Resume));
        assert!(m.memory().private.contains_all(0x10_000, 0x11_000));
        let regs = [0u64; 16];
        let mut exit = VcpuExit::SystemEvent(tdx_sys::KVM_SYSTEM_EVENT_TDX_FATAL, &regs);
        assert!(matches!(
            handle_exit(&mut m, &mut exit),
            Some(ExitAction::Stop(_))
        ));
        assert_eq!(handle_exit(&mut m, &mut VcpuExit::Hlt), None);
    }

    /// One shared page at GPA 0x2000 holding a GetQuote request.
    struct QuotePage(std::cell::RefCell<Vec<u8>>);

    impl SharedMemory for QuotePage {
        fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Option<()> {
            let off = gpa.checked_sub(0x2000)? as usize;
            buf.copy_from_slice(self.0.borrow().get(off..off + buf.len())?);
            Some(())
        }
        fn write_shared(&self, gpa: u64, data: &[u8]) -> Option<()> {
            let off = gpa.checked_sub(0x2000)? as usize;
            self.0
                .borrow_mut()
                .get_mut(off..off + data.len())?
                .copy_from_slice(data);
            Some(())
        }
    }

    fn tdx_call(
        run: &mut kvm_bindings::kvm_run,
        mem: &QuotePage,
        nr: u64,
        args: &[u64],
    ) -> KvmRunTdx {
        let t = KvmRunTdx {
            flags: 0,
            nr,
            ret: 0xdead,
            args: {
                let mut a = [0u64; 5];
                a[..args.len()].copy_from_slice(args);
                a
            },
        };
        // SAFETY: the exit union is 256 bytes; KvmRunTdx is 64 bytes of u64s written at its
        // start, as the kernel does for KVM_EXIT_TDX.
        unsafe { std::ptr::write(run.__bindgen_anon_1.padding.as_mut_ptr().cast(), t) };
        assert_eq!(handle_tdx_exit(run, mem, None), ExitAction::Resume);
        // SAFETY: as above, reading back what the handler wrote.
        unsafe { std::ptr::read(run.__bindgen_anon_1.padding.as_ptr().cast()) }
    }

    #[test]
    fn tdx_exits_are_answered_in_the_run_structure() {
        let mut run = kvm_bindings::kvm_run::default();
        let mut page = vec![0u8; 4096];
        page[0..8].copy_from_slice(&1u64.to_le_bytes());
        page[16..20].copy_from_slice(&1024u32.to_le_bytes());
        let mem = QuotePage(std::cell::RefCell::new(page));
        let r = tdx_call(&mut run, &mem, tdvmcall::GET_QUOTE, &[0x2000, 0x1000]);
        assert_eq!(r.ret, tdvmcall::SUCCESS);
        let status = u64::from_le_bytes(mem.0.borrow()[8..16].try_into().unwrap());
        assert_eq!(status, crate::tdx::quote::STATUS_SERVICE_UNAVAILABLE);
        let r = tdx_call(
            &mut run,
            &mem,
            tdvmcall::GET_TD_VM_CALL_INFO,
            &[1, 7, 7, 7, 7],
        );
        assert_eq!((r.ret, r.args), (tdvmcall::SUCCESS, [1, 0, 0, 0, 0]));
        let r = tdx_call(
            &mut run,
            &mem,
            tdvmcall::SETUP_EVENT_NOTIFY_INTERRUPT,
            &[20],
        );
        assert_eq!(r.ret, tdvmcall::INVALID_OPERAND);
        let r = tdx_call(
            &mut run,
            &mem,
            tdvmcall::SETUP_EVENT_NOTIFY_INTERRUPT,
            &[0x40],
        );
        assert_eq!(r.ret, tdvmcall::SUCCESS);
        let r = tdx_call(&mut run, &mem, 0x1_2345, &[]);
        assert_eq!(r.ret, tdvmcall::SUBFUNC_UNSUPPORTED);
    }

    #[test]
    fn tdx_fatal_error_names_code_and_info() {
        let mut regs = [0u64; 16];
        regs[12] = 0x0baa_aaad_0000_0001;
        regs[13] = 0x1000;
        let m = tdx_fatal_message(&regs);
        assert!(m.contains("0x0baaaaad00000001"), "{m}");
        assert!(m.contains("GPA 0x1000"), "{m}");
    }
}
