//! KVM's GSI routing table, shared by the IOAPIC and every MSI-X function.
//!
//! `KVM_SET_GSI_ROUTING` replaces the whole table, so one owner keeps both halves and writes them
//! together: GSIs `0..24` are the IOAPIC's pins (an MSI route per unmasked pin, which the userspace
//! IOAPIC computes from its redirection entries; KVM's split irqchip has no in-kernel IOAPIC to
//! route to), GSIs from 24 up are MSI-X vectors. An irqfd bound to a GSI delivers that GSI's
//! route inside KVM, so virtio-mmio lines (irqfd on the pin's GSI) and MSI-X vectors (irqfd on the
//! vector's GSI) never pass through userspace.

use std::collections::BTreeMap;
use std::io;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use kvm_bindings::{KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_irq_routing_entry};
use kvm_ioctls::VmFd;
use veil_devices::legacy::MsiMessage as PinMessage;
use veil_devices::legacy::ioapic::IOAPIC_PINS;
use veil_devices::pci::{MsiMessage, MsiRouting};

/// The highest GSI Veil hands out plus one (KVM allows at least 1024 routes on x86).
pub(crate) const GSI_LIMIT: u32 = 1024;

/// Errors from handing out GSIs.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// More MSI-X vectors than GSIs.
    #[error("out of KVM GSIs: {wanted} more MSI-X vectors do not fit below GSI {GSI_LIMIT}")]
    Exhausted {
        /// Vectors asked for.
        wanted: u32,
    },
}

#[derive(Debug, Default)]
struct Tables {
    pins: Vec<(u32, PinMessage)>,
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
}

/// The VM's GSI routing table.
#[derive(Debug)]
pub(crate) struct GsiRoutes {
    vm: Arc<VmFd>,
    tables: Mutex<Tables>,
}

fn entry(gsi: u32, address: u64, data: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi.address_lo = address as u32;
    e.u.msi.address_hi = (address >> 32) as u32;
    e.u.msi.data = data;
    e
}

impl GsiRoutes {
    /// An empty table for `vm`; MSI-X GSIs start after the IOAPIC's pins.
    pub(crate) fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            tables: Mutex::new(Tables {
                next_gsi: IOAPIC_PINS as u32,
                ..Tables::default()
            }),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit(&self, t: &Tables) -> io::Result<()> {
        let entries: Vec<kvm_irq_routing_entry> = t
            .pins
            .iter()
            .map(|(gsi, m)| entry(*gsi, m.address, m.data))
            .chain(t.msi.iter().map(|(gsi, m)| entry(*gsi, m.addr, m.data)))
            .collect();
        let table = KvmIrqRouting::from_entries(&entries)
            .map_err(|e| io::Error::other(format!("GSI routing table: {e:?}")))?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| io::Error::other(format!("KVM_SET_GSI_ROUTING: {e}")))
    }

    /// Replaces the IOAPIC's half: `(pin, message)` for every unmasked pin.
    pub(crate) fn set_pins(&self, routes: &[(u32, PinMessage)]) {
        let mut t = self.tables();
        t.pins = routes.to_vec();
        if let Err(e) = self.commit(&t) {
            log::warn!("IOAPIC routes: {e}");
        }
    }

    /// Hands out `n` consecutive GSIs for MSI-X vectors.
    pub(crate) fn allocate(&self, n: u32) -> Result<Range<u32>, RoutingError> {
        let mut t = self.tables();
        let start = t.next_gsi;
        let end = start
            .checked_add(n)
            .filter(|&e| e <= GSI_LIMIT)
            .ok_or(RoutingError::Exhausted { wanted: n })?;
        t.next_gsi = end;
        Ok(start..end)
    }

    /// Points `gsi` at `msg`.
    pub(crate) fn set_msi(&self, gsi: u32, msg: MsiMessage) -> io::Result<()> {
        let mut t = self.tables();
        if t.msi.get(&gsi) == Some(&msg) {
            return Ok(());
        }
        let old = t.msi.insert(gsi, msg);
        let r = self.commit(&t);
        if r.is_err() {
            // Keep the table as KVM has it.
            match old {
                Some(m) => t.msi.insert(gsi, m),
                None => t.msi.remove(&gsi),
            };
        }
        r
    }

    /// The message `gsi` routes to (for tests).
    #[cfg(test)]
    pub(crate) fn msi(&self, gsi: u32) -> Option<MsiMessage> {
        self.tables().msi.get(&gsi).copied()
    }
}

/// The MSI-X vectors of one function, each bound (by irqfd) to one GSI of `gsis`.
#[derive(Debug)]
pub(crate) struct MsixRoutes {
    pub(crate) routes: Arc<GsiRoutes>,
    pub(crate) gsis: Range<u32>,
}

impl MsiRouting for MsixRoutes {
    fn route(&self, vector: u16, msg: MsiMessage) -> io::Result<()> {
        let gsi = self.gsis.start + u32::from(vector);
        if !self.gsis.contains(&gsi) {
            return Err(io::Error::other(format!(
                "MSI-X vector {vector} beyond the function's {} vectors",
                self.gsis.len()
            )));
        }
        self.routes.set_msi(gsi, msg)
    }
}
