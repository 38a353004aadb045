//! The vCPU run loop: `KVM_RUN`, then dispatch the exit to the buses or end the guest.
//!
//! Clean ends: the guest's reset through the i8042 (`0xfe` to port `0x64`), an ACPI power-off
//! (S5 through the sleep control register), a debug-exit write (status = the value written), and
//! KVM system events of type shutdown or reset. Failures (exit status 1, registers printed):
//! `KVM_EXIT_SHUTDOWN` (a triple fault: on x86 KVM reports nothing else this way, so a guest that
//! resets by triple-faulting, e.g. Linux with `reboot=t`, counts as failed), internal errors,
//! failed VM entries, system events of type crash, exits Veil does not expect, and `KVM_RUN`
//! errors other than EINTR/EAGAIN.

use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use veil_devices::bus::Bus;
use veil_devices::legacy::Ioapic;

use veil_launch::runtime::ExitAction;
use veil_launch::sys::tdx::KVM_EXIT_TDX;

use super::{dump, io};
use crate::exit::{CrashReport, ExitState, GuestExit};
use crate::platform::PlatformExits;

/// What vCPU threads share.
#[derive(Debug)]
pub(crate) struct RunContext {
    /// Port-I/O devices.
    pub pio: Bus,
    /// MMIO devices.
    pub mmio: Bus,
    /// The IOAPIC, told about EOIs of its level-triggered vectors.
    pub ioapic: Arc<Mutex<Ioapic>>,
    /// Where the run's end is recorded.
    pub exit: Arc<ExitState>,
    /// MMIO addresses already logged as unknown.
    pub logged_mmio: Mutex<Vec<u64>>,
    /// The platform's exit handling, for VMs on guest_memfd slots (confidential or
    /// `--guest-memfd`); None for plain VMs.
    pub platform: Option<Arc<dyn PlatformExits>>,
}

impl RunContext {
    fn log_unknown_mmio(&self, addr: u64, write: bool) {
        if !log::log_enabled!(log::Level::Debug) {
            return;
        }
        let mut seen = self.logged_mmio.lock().unwrap_or_else(|p| p.into_inner());
        if !seen.contains(&addr) && seen.len() < 256 {
            seen.push(addr);
            let what = if write { "write to" } else { "read from" };
            log::debug!(
                "{what} unknown MMIO address {addr:#x} (reads as all ones, writes ignored)"
            );
        }
    }
}

/// What to do after an exit, decided while the exit still borrows the vCPU.
enum Next {
    Continue,
    Pio,
    /// `KVM_EXIT_TDX`: answered in `kvm_run` by the platform hook.
    Tdx,
    End(GuestExit),
    Crash(String),
}

/// What the VMM does with `exit` (the platform's exits were handled before).
fn classify(exit: VcpuExit<'_>, ctx: &RunContext) -> Next {
    match exit {
        VcpuExit::IoIn(..) | VcpuExit::IoOut(..) => Next::Pio,
        VcpuExit::MmioRead(addr, data) => {
            if !ctx.mmio.read(addr, data) {
                ctx.log_unknown_mmio(addr, false);
            }
            Next::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !ctx.mmio.write(addr, data) {
                ctx.log_unknown_mmio(addr, true);
            }
            Next::Continue
        }
        VcpuExit::IoapicEoi(vector) => {
            ctx.ioapic
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .eoi(vector);
            Next::Continue
        }
        // With the in-kernel LAPIC, HLT is handled by KVM; an exit here only means "run again".
        VcpuExit::Hlt | VcpuExit::Intr | VcpuExit::IrqWindowOpen => Next::Continue,
        VcpuExit::Shutdown => Next::Crash("triple fault (KVM_EXIT_SHUTDOWN)".into()),
        VcpuExit::SystemEvent(kind, data) => match kind {
            KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => Next::End(GuestExit::Shutdown),
            KVM_SYSTEM_EVENT_CRASH => Next::Crash(format!("guest crash event {data:x?}")),
            other => Next::Crash(format!("unexpected KVM system event {other}")),
        },
        VcpuExit::InternalError => Next::Crash(String::new()),
        VcpuExit::FailEntry(reason, cpu) => Next::Crash(format!(
            "VM entry failed (hardware reason {reason:#x}, host CPU {cpu})"
        )),
        VcpuExit::Unsupported(KVM_EXIT_TDX) if ctx.platform.is_some() => Next::Tdx,
        other => Next::Crash(format!("unexpected vCPU exit {other:?}")),
    }
}

/// Runs vCPU `id` until the guest ends (by this or another vCPU, or by a stop request).
pub(crate) fn run_loop(mut vcpu: VcpuFd, id: u32, ctx: &RunContext) {
    while !ctx.exit.is_done() {
        let next = match vcpu.run() {
            Ok(mut exit) => match ctx.platform.as_deref() {
                None => classify(exit, ctx),
                Some(p) => match p.handle_exit(&mut exit) {
                    None => classify(exit, ctx),
                    Some(ExitAction::Resume) => Next::Continue,
                    Some(ExitAction::Stop(why)) => Next::Crash(why),
                },
            },
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Next::Continue,
            Err(e) => Next::Crash(format!("KVM_RUN: {e}")),
        };
        match next {
            Next::Continue => {}
            Next::Pio => io::handle(&mut vcpu, &ctx.pio),
            Next::Tdx => {
                if let Some(p) = ctx.platform.as_deref() {
                    if let ExitAction::Stop(why) = p.handle_tdx_exit(vcpu.get_kvm_run()) {
                        crash(&mut vcpu, id, ctx, why);
                    }
                }
            }
            Next::End(exit) => ctx.exit.set(exit),
            Next::Crash(reason) => crash(&mut vcpu, id, ctx, reason),
        }
    }
}

/// Ends the guest as crashed on vCPU `id`, with its registers if KVM lets us read them (it
/// does not for SEV-ES/SNP and TDX guests, whose state is protected: the report then says so).
fn crash(vcpu: &mut VcpuFd, id: u32, ctx: &RunContext, mut reason: String) {
    if reason.is_empty() {
        reason = internal_error(vcpu);
    }
    let registers = dump::registers(vcpu);
    ctx.exit.set(GuestExit::Crashed(CrashReport {
        vcpu: id,
        reason,
        registers,
    }));
}

/// Describes a KVM_EXIT_INTERNAL_ERROR from the `internal` member of kvm_run.
fn internal_error(vcpu: &mut VcpuFd) -> String {
    let run = vcpu.get_kvm_run();
    // SAFETY: the exit just returned was KVM_EXIT_INTERNAL_ERROR, so KVM wrote `internal`.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    let what = match internal.suberror {
        1 => "emulation failure",
        2 => "simultaneous exception",
        3 => "delivery event failure",
        4 => "unexpected exit reason",
        _ => "internal error",
    };
    format!(
        "KVM internal error: {what} (suberror {}, data {:x?})",
        internal.suberror,
        &internal.data[..n]
    )
}
