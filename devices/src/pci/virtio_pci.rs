//! The modern (virtio 1.x) PCI transport: vendor capabilities pointing into one 64-bit memory
//! BAR that holds the common configuration, ISR, device configuration, notification area and the
//! MSI-X table and PBA. Queue notifications are meant to arrive through ioeventfds the VMM
//! registers at [`VirtioPciDevice::notify_addresses`]; interrupts leave through MSI-X irqfds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};

use log::warn;
use vmm_sys_util::eventfd::EventFd;

use super::PciDevice;
use super::config::{PciConfig, PciIds};
use super::msix::{CTRL_ENABLE, CTRL_FUNCTION_MASK, MsiRouting, MsixState};
use crate::bus::BusDevice;
use crate::virtio::interrupt::{InterruptError, VirtioInterrupt};
use crate::virtio::transport::{NO_VECTOR, TransportError, VirtioCommon};
use crate::virtio::{GuestMem, VirtioDevice, device_type};

/// Size of BAR 0.
pub const BAR_SIZE: u64 = 0x8000;
/// Offsets of the regions inside BAR 0.
pub const COMMON_OFFSET: u64 = 0x0000;
/// ISR status byte.
pub const ISR_OFFSET: u64 = 0x1000;
/// Device configuration space.
pub const DEVICE_OFFSET: u64 = 0x2000;
/// Notification area: queue `i` is notified at `NOTIFY_OFFSET + i * NOTIFY_MULTIPLIER`.
pub const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between queue notify addresses.
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// MSI-X vector table.
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
/// MSI-X pending-bit array.
pub const MSIX_PBA_OFFSET: u64 = 0x6000;
const COMMON_LEN: u64 = 0x40;
const DEVICE_LEN: u64 = 0x1000;

const CAP_VENDOR: u8 = 0x09;
const CAP_MSIX: u8 = 0x11;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;
const CFG_PCI: u8 = 5;

/// Interrupts of a virtio-pci function: MSI-X vectors chosen per queue by the driver, plus the
/// ISR byte.
#[derive(Debug)]
pub struct PciInterrupt {
    msix: Arc<MsixState>,
    queue_vectors: Vec<AtomicU16>,
    config_vector: AtomicU16,
    isr: AtomicU8,
}

impl PciInterrupt {
    fn vector_signal(&self, vector: u16, what: &'static str) -> Result<(), InterruptError> {
        if vector == NO_VECTOR {
            return Ok(());
        }
        self.msix
            .signal(vector)
            .map_err(|source| InterruptError::Irqfd { what, source })
    }
}

impl VirtioInterrupt for PciInterrupt {
    fn signal_queue(&self, queue: u16) -> Result<(), InterruptError> {
        self.isr.fetch_or(1, Ordering::AcqRel);
        let v = self
            .queue_vectors
            .get(usize::from(queue))
            .map_or(NO_VECTOR, |v| v.load(Ordering::Acquire));
        self.vector_signal(v, "queue vector")
    }

    fn signal_config(&self) -> Result<(), InterruptError> {
        self.isr.fetch_or(2, Ordering::AcqRel);
        self.vector_signal(self.config_vector.load(Ordering::Acquire), "config vector")
    }
}

/// A virtio device on the PCI bus.
#[derive(Debug)]
pub struct VirtioPciDevice {
    common: VirtioCommon,
    config: PciConfig,
    interrupt: Arc<PciInterrupt>,
    dyn_interrupt: Arc<dyn VirtioInterrupt>,
    msix_cap: u16,
    pci_cfg_cap: u16,
    bar_moved: Option<u64>,
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    // Body after the id and next bytes: cap_len, cfg_type, bar, id, padding[2], offset, length.
    let mut b = vec![(16 + extra.len()) as u8, cfg_type, 0, 0, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&(length as u32).to_le_bytes());
    b.extend_from_slice(extra);
    b
}

impl VirtioPciDevice {
    /// Puts `device` behind a virtio-pci function whose BAR 0 lives at `bar_addr`. `irqfds` has
    /// one eventfd per MSI-X vector (the driver normally uses one per queue plus one for
    /// configuration changes); `routing` tells the VMM where each vector points.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMem,
        confidential: bool,
        bar_addr: u64,
        irqfds: Vec<EventFd>,
        routing: Arc<dyn MsiRouting>,
    ) -> Result<Self, TransportError> {
        let kind = device.device_type();
        let class = match kind {
            device_type::BLOCK => 0x01_80_00,
            device_type::NET => 0x02_00_00,
            _ => 0xff_00_00,
        };
        let common = VirtioCommon::new(device, mem, confidential)?;
        let nq = common.num_queues();
        let vectors = irqfds.len().min(2048);
        let mut config = PciConfig::new(PciIds {
            vendor: 0x1af4,
            device: 0x1040 + kind as u16,
            revision: 1,
            class,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        });
        config.add_bar(0, bar_addr, BAR_SIZE, true);
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(CFG_COMMON, COMMON_OFFSET, COMMON_LEN, &[]),
            &[],
        );
        config.add_capability(CAP_VENDOR, &vendor_cap(CFG_ISR, ISR_OFFSET, 4, &[]), &[]);
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(CFG_DEVICE, DEVICE_OFFSET, DEVICE_LEN, &[]),
            &[],
        );
        config.add_capability(
            CAP_VENDOR,
            &vendor_cap(
                CFG_NOTIFY,
                NOTIFY_OFFSET,
                (nq.max(1) as u64) * u64::from(NOTIFY_MULTIPLIER),
                &NOTIFY_MULTIPLIER.to_le_bytes(),
            ),
            &[],
        );
        // VIRTIO_PCI_CAP_PCI_CFG: bar, offset and length are guest-writable; data follows.
        let pci_cfg_body = vendor_cap(CFG_PCI, 0, 0, &[0; 4]);
        let mut pci_cfg_mask = vec![0u8; pci_cfg_body.len()];
        pci_cfg_mask[2] = 0xff; // bar
        pci_cfg_mask[6..14].fill(0xff); // offset, length
        pci_cfg_mask[14..18].fill(0xff); // data
        let pci_cfg_cap = config.add_capability(CAP_VENDOR, &pci_cfg_body, &pci_cfg_mask);
        let mut msix_body = Vec::new();
        msix_body.extend_from_slice(&((vectors.max(1) - 1) as u16).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
        msix_body.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
        let ctrl_mask = (CTRL_ENABLE | CTRL_FUNCTION_MASK).to_le_bytes();
        let msix_cap = config.add_capability(CAP_MSIX, &msix_body, &ctrl_mask);
        let interrupt = Arc::new(PciInterrupt {
            msix: Arc::new(MsixState::new(
                irqfds.into_iter().take(vectors).collect(),
                routing,
            )),
            queue_vectors: (0..nq).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            config_vector: AtomicU16::new(NO_VECTOR),
            isr: AtomicU8::new(0),
        });
        Ok(Self {
            common,
            config,
            dyn_interrupt: interrupt.clone(),
            interrupt,
            msix_cap,
            pci_cfg_cap,
            bar_moved: None,
        })
    }

    /// The transport-independent state.
    pub fn common(&self) -> &VirtioCommon {
        &self.common
    }

    /// The MSI-X state (for the VMM's routing and tests).
    pub fn msix(&self) -> &Arc<MsixState> {
        &self.interrupt.msix
    }

    /// BAR 0's current guest address.
    pub fn bar_addr(&self) -> u64 {
        self.config.bar(0).map_or(0, |b| b.addr)
    }

    /// The new BAR 0 address if the guest moved it since the last call: the VMM then moves the
    /// MMIO bus range and re-registers the ioeventfds at [`Self::notify_addresses`].
    pub fn take_bar_move(&mut self) -> Option<u64> {
        self.bar_moved.take()
    }

    /// Where each queue's ioeventfd goes: (guest address, eventfd). Any write there notifies.
    pub fn notify_addresses(&self) -> Vec<(u64, &EventFd)> {
        let base = self.bar_addr() + NOTIFY_OFFSET;
        self.common
            .queue_events()
            .iter()
            .enumerate()
            .map(|(i, e)| (base + i as u64 * u64::from(NOTIFY_MULTIPLIER), e))
            .collect()
    }

    fn common_image(&self) -> [u8; COMMON_LEN as usize] {
        let c = &self.common;
        let q = c.queue();
        let mut b = [0u8; COMMON_LEN as usize];
        b[0..4].copy_from_slice(&c.device_features_sel.to_le_bytes());
        b[4..8].copy_from_slice(&c.device_features_word().to_le_bytes());
        b[8..12].copy_from_slice(&c.driver_features_sel.to_le_bytes());
        let df = c.driver_features();
        let dfw = match c.driver_features_sel {
            0 => df as u32,
            1 => (df >> 32) as u32,
            _ => 0,
        };
        b[12..16].copy_from_slice(&dfw.to_le_bytes());
        b[16..18].copy_from_slice(&c.config_vector.to_le_bytes());
        b[18..20].copy_from_slice(&(c.num_queues() as u16).to_le_bytes());
        b[20] = c.status();
        b[21] = c.config_generation;
        b[22..24].copy_from_slice(&c.selected_queue().to_le_bytes());
        if let Some(q) = q {
            b[24..26].copy_from_slice(&q.size.to_le_bytes());
            b[26..28].copy_from_slice(&q.vector.to_le_bytes());
            b[28..30].copy_from_slice(&u16::from(q.ready).to_le_bytes());
            b[30..32].copy_from_slice(&c.selected_queue().to_le_bytes());
            b[32..40].copy_from_slice(&q.desc.to_le_bytes());
            b[40..48].copy_from_slice(&q.avail.to_le_bytes());
            b[48..56].copy_from_slice(&q.used.to_le_bytes());
        }
        b
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let mut v8 = [0u8; 8];
        v8[..data.len().min(8)].copy_from_slice(&data[..data.len().min(8)]);
        let v = u64::from_le_bytes(v8);
        let name = self.common.device().name();
        let nvec = self.interrupt.msix.len();
        let vec_ok = |x: u16| if usize::from(x) < nvec { x } else { NO_VECTOR };
        let lo = |x: u64| (x & !0xffff_ffff) | (v & 0xffff_ffff);
        let hi = |x: u64| (x & 0xffff_ffff) | (v << 32);
        let c = &mut self.common;
        match (offset, data.len()) {
            (0x00, 4) => c.device_features_sel = v as u32,
            (0x08, 4) => c.driver_features_sel = v as u32,
            (0x0c, 4) => c.set_driver_features_word(v as u32),
            (0x10, 2) => {
                let x = vec_ok(v as u16);
                c.config_vector = x;
                self.interrupt.config_vector.store(x, Ordering::Release);
            }
            (0x14, 1) => {
                let status = v as u8;
                if c.set_status(status, &self.dyn_interrupt) {
                    let _ = self.interrupt.signal_config();
                }
                if status == 0 {
                    self.interrupt.isr.store(0, Ordering::Release);
                    self.interrupt
                        .config_vector
                        .store(NO_VECTOR, Ordering::Release);
                    for q in &self.interrupt.queue_vectors {
                        q.store(NO_VECTOR, Ordering::Release);
                    }
                }
            }
            (0x16, 2) => c.select_queue(v as u16),
            (0x18, 2) => c.update_queue("size", |q| q.size = v as u16),
            (0x1a, 2) => {
                let x = vec_ok(v as u16);
                c.set_queue_vector(x);
                if let Some(slot) = self
                    .interrupt
                    .queue_vectors
                    .get(usize::from(c.selected_queue()))
                {
                    slot.store(x, Ordering::Release);
                }
            }
            (0x1c, 2) => {
                if v == 1 {
                    c.update_queue("ready", |q| q.ready = true);
                } else {
                    warn!("{name}: guest wrote queue_enable {v}; only 1 is allowed");
                }
            }
            (0x20, 8) => c.update_queue("desc", |q| q.desc = v),
            (0x20, 4) => c.update_queue("desc", |q| q.desc = lo(q.desc)),
            (0x24, 4) => c.update_queue("desc", |q| q.desc = hi(q.desc)),
            (0x28, 8) => c.update_queue("avail", |q| q.avail = v),
            (0x28, 4) => c.update_queue("avail", |q| q.avail = lo(q.avail)),
            (0x2c, 4) => c.update_queue("avail", |q| q.avail = hi(q.avail)),
            (0x30, 8) => c.update_queue("used", |q| q.used = v),
            (0x30, 4) => c.update_queue("used", |q| q.used = lo(q.used)),
            (0x34, 4) => c.update_queue("used", |q| q.used = hi(q.used)),
            _ => warn!(
                "{name}: guest wrote {} bytes at common config {offset:#x}; ignored",
                data.len()
            ),
        }
    }

    fn bar_access_read(&mut self, offset: u64, data: &mut [u8]) {
        let end = offset + data.len() as u64;
        match offset {
            o if end <= COMMON_OFFSET + COMMON_LEN => {
                let img = self.common_image();
                let o = o as usize;
                data.copy_from_slice(&img[o..o + data.len()]);
            }
            o if (ISR_OFFSET..ISR_OFFSET + 4).contains(&o) => {
                data.fill(0);
                if o == ISR_OFFSET {
                    // Reading the ISR clears it.
                    data[0] = self.interrupt.isr.swap(0, Ordering::AcqRel);
                }
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_LEN).contains(&o) => {
                self.common.device().read_config(o - DEVICE_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.interrupt.msix.table_read(o - MSIX_TABLE_OFFSET, data)
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                self.interrupt.msix.pba_read(o - MSIX_PBA_OFFSET, data)
            }
            _ => data.fill(0),
        }
    }

    fn bar_access_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o + data.len() as u64 <= COMMON_OFFSET + COMMON_LEN => self.common_write(o, data),
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_LEN).contains(&o) => self
                .common
                .device_mut()
                .write_config(o - DEVICE_OFFSET, data),
            o if (NOTIFY_OFFSET..MSIX_TABLE_OFFSET).contains(&o) => {
                // Normally swallowed by the ioeventfd in KVM; this is the fallback.
                self.common
                    .notify(((o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)) as u32)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.interrupt.msix.table_write(o - MSIX_TABLE_OFFSET, data)
            }
            _ => warn!(
                "{}: guest wrote {} bytes at BAR offset {offset:#x}; ignored",
                self.common.device().name(),
                data.len()
            ),
        }
    }

    fn pci_cfg_window(&self) -> (u64, usize) {
        let at = usize::from(self.pci_cfg_cap);
        let offset = u64::from(self.config.get32(at + 8));
        let len = self.config.get32(at + 12) as usize;
        (offset, len)
    }
}

impl PciDevice for VirtioPciDevice {
    fn config_read(&mut self, offset: u16, data: &mut [u8]) {
        let data_at = self.pci_cfg_cap + 16;
        if offset == data_at && self.config.bytes()[usize::from(self.pci_cfg_cap) + 4] == 0 {
            let (o, len) = self.pci_cfg_window();
            if matches!(len, 1 | 2 | 4) && len <= data.len() && o < BAR_SIZE {
                data.fill(0);
                self.bar_access_read(o, &mut data[..len]);
                return;
            }
        }
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: u16, data: &[u8]) {
        let data_at = self.pci_cfg_cap + 16;
        if offset == data_at && self.config.bytes()[usize::from(self.pci_cfg_cap) + 4] == 0 {
            let (o, len) = self.pci_cfg_window();
            if matches!(len, 1 | 2 | 4) && len <= data.len() && o < BAR_SIZE {
                self.bar_access_write(o, &data[..len]);
            }
            return;
        }
        if let Some(bar) = self.config.write(offset, data) {
            self.bar_moved = Some(self.bar_addr());
            warn!(
                "{}: guest moved BAR {bar} to {:#x}; the VMM must move its MMIO range and ioeventfds",
                self.common.device().name(),
                self.bar_addr()
            );
        }
        let ctrl = self.msix_cap + 2;
        if offset <= ctrl + 1 && offset + data.len() as u16 > ctrl {
            self.interrupt
                .msix
                .set_control(self.config.get16(usize::from(ctrl)));
        }
    }
}

impl BusDevice for VirtioPciDevice {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        if !matches!(data.len(), 1 | 2 | 4 | 8) || offset + data.len() as u64 > BAR_SIZE {
            data.fill(0);
            return;
        }
        self.bar_access_read(offset, data);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if !matches!(data.len(), 1 | 2 | 4 | 8) || offset + data.len() as u64 > BAR_SIZE {
            return;
        }
        self.bar_access_write(offset, data);
    }
}

#[cfg(test)]
mod tests;
