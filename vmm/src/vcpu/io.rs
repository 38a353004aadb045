//! Port-I/O exits, string forms (`rep outsb`/`insb`) included: each of the `count` items is one
//! access of `size` bytes to the same port.

use kvm_bindings::{KVM_EXIT_IO, KVM_EXIT_IO_OUT, kvm_run};
use kvm_ioctls::VcpuFd;
use std::sync::atomic::{AtomicU64, Ordering};

use veil_devices::bus::Bus;

/// One bit per port: set once the port has been logged as unknown.
static LOGGED_PORTS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

fn log_unknown_port(port: u16, write: bool) {
    let (word, bit) = (usize::from(port) / 64, 1u64 << (port % 64));
    if LOGGED_PORTS[word].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        let what = if write { "write to" } else { "read from" };
        log::debug!("{what} unknown I/O port {port:#x} (reads as all ones, writes ignored)");
    }
}

/// Serves the I/O exit `vcpu` just returned from `KVM_RUN` on `bus`.
pub(crate) fn handle(vcpu: &mut VcpuFd, bus: &Bus) {
    let run: &mut kvm_run = vcpu.get_kvm_run();
    if run.exit_reason != KVM_EXIT_IO {
        return;
    }
    // SAFETY: exit_reason is KVM_EXIT_IO, so the `io` member of the union is the one KVM wrote.
    let io = unsafe { run.__bindgen_anon_1.io };
    let size = usize::from(io.size);
    let total = size * io.count as usize;
    let base = run as *mut kvm_run as *mut u8;
    // KVM puts the data inside the kvm_run mapping (on the page after the struct); we check that
    // the range stays within the mapping's two pages before forming the slice.
    if size == 0 || io.data_offset as usize + total > 2 * 4096 {
        return;
    }
    // SAFETY: data_offset and size*count come from KVM and describe bytes inside the kvm_run
    // mapping (checked above against its minimal size), which lives as long as `vcpu`; no other
    // reference to those bytes exists while we hold `run`.
    let data = unsafe { std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), total) };
    let write = u32::from(io.direction) == KVM_EXIT_IO_OUT;
    for item in data.chunks_exact_mut(size) {
        let known = if write {
            bus.write(u64::from(io.port), item)
        } else {
            bus.read(u64::from(io.port), item)
        };
        if !known {
            log_unknown_port(io.port, write);
        }
    }
}
