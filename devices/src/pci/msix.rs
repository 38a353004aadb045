//! MSI-X: the vector table and pending-bit array a device exposes in a BAR, masking, and
//! delivery through one irqfd per vector. The VMM learns each vector's message through
//! [`MsiRouting`] and points a KVM MSI route (GSI) at it, with the irqfd bound to that GSI, so an
//! interrupt never passes through userspace.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use log::{error, warn};
use vmm_sys_util::eventfd::EventFd;

/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Message control: MSI-X enable.
pub const CTRL_ENABLE: u16 = 1 << 15;
/// Message control: all vectors masked.
pub const CTRL_FUNCTION_MASK: u16 = 1 << 14;

/// An MSI message (what the guest programmed into a table entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    /// Message address.
    pub addr: u64,
    /// Message data.
    pub data: u32,
}

/// The VMM's side of MSI-X: keeps a KVM MSI route per vector in step with the guest's table.
pub trait MsiRouting: Send + Sync + std::fmt::Debug {
    /// Vector `vector` (whose irqfd the VMM bound to a GSI) now delivers `msg`.
    fn route(&self, vector: u16, msg: MsiMessage) -> io::Result<()>;
}

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    msg: MsiMessage,
    masked: bool,
}

/// The MSI-X state of one function, shared by the vCPU (table accesses) and the device's
/// workers (signals).
#[derive(Debug)]
pub struct MsixState {
    table: Mutex<Vec<Entry>>,
    masked: Vec<AtomicBool>,
    pending: Vec<AtomicBool>,
    enabled: AtomicBool,
    function_mask: AtomicBool,
    irqfds: Vec<EventFd>,
    routing: Arc<dyn MsiRouting>,
}

impl MsixState {
    /// A table with one vector per irqfd, all masked.
    pub fn new(irqfds: Vec<EventFd>, routing: Arc<dyn MsiRouting>) -> Self {
        let n = irqfds.len();
        Self {
            table: Mutex::new(vec![
                Entry {
                    masked: true,
                    ..Entry::default()
                };
                n
            ]),
            masked: (0..n).map(|_| AtomicBool::new(true)).collect(),
            pending: (0..n).map(|_| AtomicBool::new(false)).collect(),
            enabled: AtomicBool::new(false),
            function_mask: AtomicBool::new(false),
            irqfds,
            routing,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.irqfds.len()
    }

    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.irqfds.is_empty()
    }

    /// Whether the guest enabled MSI-X.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::SeqCst)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn deliverable(&self, v: usize) -> bool {
        self.enabled.load(Ordering::SeqCst)
            && !self.function_mask.load(Ordering::SeqCst)
            && !self.masked[v].load(Ordering::SeqCst)
    }

    fn fire(&self, v: usize) -> io::Result<()> {
        self.irqfds[v].write(1)
    }

    /// Raises vector `vector`: delivered now, or remembered in the PBA while masked.
    pub fn signal(&self, vector: u16) -> io::Result<()> {
        let v = usize::from(vector);
        if v >= self.irqfds.len() {
            return Ok(());
        }
        if self.deliverable(v) {
            return self.fire(v);
        }
        // Slow path under the table lock, so an unmask cannot slip between check and pend.
        let _t = self.table();
        if self.deliverable(v) {
            self.fire(v)
        } else {
            self.pending[v].store(true, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Delivers pending vectors that are deliverable now (called with the table locked).
    fn flush_pending(&self) {
        for v in 0..self.irqfds.len() {
            if self.deliverable(v) && self.pending[v].swap(false, Ordering::SeqCst) {
                if let Err(e) = self.fire(v) {
                    error!("MSI-X vector {v}: {e}");
                }
            }
        }
    }

    fn route(&self, v: usize, e: &Entry) {
        // `v` < number of vectors, which came from a u16 table size.
        if let Err(err) = self.routing.route(v as u16, e.msg) {
            error!("MSI-X vector {v}: updating its route to {:?}: {err}", e.msg);
        }
    }

    /// The guest wrote the MSI-X message control register.
    pub fn set_control(&self, control: u16) {
        let t = self.table();
        let was = self
            .enabled
            .swap(control & CTRL_ENABLE != 0, Ordering::SeqCst);
        self.function_mask
            .store(control & CTRL_FUNCTION_MASK != 0, Ordering::SeqCst);
        if !was && self.enabled() {
            for (v, e) in t.iter().enumerate() {
                if !e.masked {
                    self.route(v, e);
                }
            }
        }
        self.flush_pending();
    }

    /// A guest read of the vector table.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let t = self.table();
        let Some(e) = usize::try_from(offset / ENTRY_SIZE)
            .ok()
            .and_then(|i| t.get(i))
        else {
            return;
        };
        let mut raw = [0u8; ENTRY_SIZE as usize];
        raw[0..8].copy_from_slice(&e.msg.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&e.msg.data.to_le_bytes());
        raw[12] = u8::from(e.masked);
        let at = (offset % ENTRY_SIZE) as usize;
        if at + data.len() <= raw.len() {
            data.copy_from_slice(&raw[at..at + data.len()]);
        }
    }

    /// A guest write to the vector table.
    pub fn table_write(&self, offset: u64, data: &[u8]) {
        let mut t = self.table();
        let Some(v) = usize::try_from(offset / ENTRY_SIZE)
            .ok()
            .filter(|&i| i < t.len())
        else {
            warn!("MSI-X: guest wrote past the table at {offset:#x}; ignored");
            return;
        };
        let at = (offset % ENTRY_SIZE) as usize;
        if !matches!(data.len(), 4 | 8) || at % 4 != 0 || at + data.len() > ENTRY_SIZE as usize {
            warn!(
                "MSI-X: {}-byte table write at {offset:#x} ignored",
                data.len()
            );
            return;
        }
        let e = &mut t[v];
        let mut raw = [0u8; ENTRY_SIZE as usize];
        raw[0..8].copy_from_slice(&e.msg.addr.to_le_bytes());
        raw[8..12].copy_from_slice(&e.msg.data.to_le_bytes());
        raw[12] = u8::from(e.masked);
        raw[at..at + data.len()].copy_from_slice(data);
        let mut a = [0u8; 8];
        a.copy_from_slice(&raw[0..8]);
        e.msg.addr = u64::from_le_bytes(a);
        e.msg.data = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
        let was_masked = e.masked;
        e.masked = raw[12] & 1 != 0;
        let entry = *e;
        self.masked[v].store(entry.masked, Ordering::SeqCst);
        if !entry.masked && (was_masked || at < 12) && self.enabled() {
            self.route(v, &entry);
        }
        self.flush_pending();
    }

    /// A guest read of the pending-bit array.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let mut byte = 0u8;
            for bit in 0..8 {
                let v = (offset as usize + i) * 8 + bit;
                if self
                    .pending
                    .get(v)
                    .is_some_and(|p| p.load(Ordering::SeqCst))
                {
                    byte |= 1 << bit;
                }
            }
            *b = byte;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    #[derive(Debug, Default)]
    struct Routes(Mutex<Vec<(u16, MsiMessage)>>);
    impl MsiRouting for Routes {
        fn route(&self, vector: u16, msg: MsiMessage) -> io::Result<()> {
            self.0.lock().unwrap().push((vector, msg));
            Ok(())
        }
    }

    fn state(n: usize) -> (MsixState, Vec<EventFd>, Arc<Routes>) {
        let fds: Vec<EventFd> = (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let twins = fds.iter().map(|f| f.try_clone().unwrap()).collect();
        let routes = Arc::new(Routes::default());
        (MsixState::new(fds, routes.clone()), twins, routes)
    }

    #[test]
    fn masked_vectors_pend_and_fire_on_unmask() {
        let (s, fds, routes) = state(2);
        s.table_write(16, &0xfee0_0000u32.to_le_bytes());
        s.table_write(24, &0x41u32.to_le_bytes());
        s.set_control(CTRL_ENABLE);
        // Still masked: pending, no interrupt.
        s.signal(1).unwrap();
        assert!(fds[1].read().is_err());
        let mut pba = [0u8; 8];
        s.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        // Unmask: routed, and the pending interrupt fires.
        s.table_write(28, &0u32.to_le_bytes());
        assert_eq!(fds[1].read().unwrap(), 1);
        assert_eq!(
            routes.0.lock().unwrap().last(),
            Some(&(
                1,
                MsiMessage {
                    addr: 0xfee0_0000,
                    data: 0x41
                }
            ))
        );
        s.signal(1).unwrap();
        assert_eq!(fds[1].read().unwrap(), 1);
        // Function mask holds everything back.
        s.set_control(CTRL_ENABLE | CTRL_FUNCTION_MASK);
        s.signal(1).unwrap();
        assert!(fds[1].read().is_err());
        s.set_control(CTRL_ENABLE);
        assert_eq!(fds[1].read().unwrap(), 1);
        // Out-of-range vectors and table accesses are ignored.
        s.signal(9).unwrap();
        s.table_write(0x1000, &[0; 4]);
        s.table_write(1, &[0; 4]);
        let mut d = [0xffu8; 4];
        s.table_read(0x1000, &mut d);
        assert_eq!(d, [0; 4]);
        s.table_read(16, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xfee0_0000);
    }
}
