//! The virtio-mmio (version 2) transport: a 4 KiB register window on the MMIO bus plus one
//! interrupt line, announced to Linux with `virtio_mmio.device=<size>@<base>:<irq>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use log::warn;
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::{InterruptError, VirtioInterrupt};
use super::transport::{TransportError, VirtioCommon};
use super::{GuestMem, VirtioDevice};
use crate::bus::BusDevice;

/// Size of one device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;
/// "virt" in little endian.
const MAGIC: u32 = 0x7472_6976;
/// Veil's vendor id ("VEIL").
pub const VENDOR_ID: u32 = 0x4c49_4556;
/// Interrupt status bit: a used ring changed.
pub const INT_VRING: u32 = 1;
/// Interrupt status bit: the configuration changed.
pub const INT_CONFIG: u32 = 2;

/// Register offsets (virtio 1.2, section 4.2.2).
mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// Offset of the QueueNotify register: where the VMM registers each queue's ioeventfd (with the
/// queue index as datamatch).
pub const NOTIFY_OFFSET: u64 = reg::QUEUE_NOTIFY;

/// The interrupt line of one virtio-mmio device: an interrupt status register plus the irqfd the
/// VMM wired to the device's GSI.
#[derive(Debug)]
pub struct MmioInterrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl MmioInterrupt {
    /// An interrupt that raises the line by writing `irqfd`.
    pub fn new(irqfd: EventFd) -> Self {
        Self {
            status: AtomicU32::new(0),
            irqfd,
        }
    }

    /// The pending interrupt reasons.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::Acquire)
    }

    fn raise(&self, bit: u32, what: &'static str) -> Result<(), InterruptError> {
        self.status.fetch_or(bit, Ordering::AcqRel);
        self.irqfd
            .write(1)
            .map_err(|source| InterruptError::Irqfd { what, source })
    }
}

impl VirtioInterrupt for MmioInterrupt {
    fn signal_queue(&self, _queue: u16) -> Result<(), InterruptError> {
        self.raise(INT_VRING, "used ring")
    }

    fn signal_config(&self) -> Result<(), InterruptError> {
        self.raise(INT_CONFIG, "configuration change")
    }
}

/// A virtio device behind a virtio-mmio register window.
#[derive(Debug)]
pub struct MmioTransport {
    common: VirtioCommon,
    interrupt: Arc<MmioInterrupt>,
    dyn_interrupt: Arc<dyn VirtioInterrupt>,
}

impl MmioTransport {
    /// Puts `device` behind an MMIO window; `irqfd` raises its interrupt line.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMem,
        irqfd: EventFd,
        confidential: bool,
    ) -> Result<Self, TransportError> {
        let interrupt = Arc::new(MmioInterrupt::new(irqfd));
        Ok(Self {
            common: VirtioCommon::new(device, mem, confidential)?,
            dyn_interrupt: interrupt.clone(),
            interrupt,
        })
    }

    /// The transport-independent state (queue ioeventfds, health).
    pub fn common(&self) -> &VirtioCommon {
        &self.common
    }

    /// The interrupt line.
    pub fn interrupt(&self) -> &Arc<MmioInterrupt> {
        &self.interrupt
    }

    /// The kernel command-line argument that announces a device at `base` with `irq`.
    pub fn cmdline_arg(base: u64, irq: u32) -> String {
        format!("virtio_mmio.device=4K@{base:#x}:{irq}")
    }

    fn read_reg(&self, offset: u64) -> u32 {
        let c = &self.common;
        let q = c.queue();
        match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => 2,
            reg::DEVICE_ID => c.device().device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => c.device_features_word(),
            reg::QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size)),
            reg::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            reg::INTERRUPT_STATUS => self.interrupt.status(),
            reg::STATUS => u32::from(c.status()),
            reg::SHM_LEN_LOW | reg::SHM_LEN_HIGH => u32::MAX, // no shared memory regions
            reg::CONFIG_GENERATION => u32::from(c.config_generation),
            _ => {
                warn!(
                    "{}: guest read unknown virtio-mmio register {offset:#x}",
                    c.device().name()
                );
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        let c = &mut self.common;
        let lo = |x: u64| (x & !0xffff_ffff) | u64::from(v);
        let hi = |x: u64| (x & 0xffff_ffff) | (u64::from(v) << 32);
        match offset {
            reg::DEVICE_FEATURES_SEL => c.device_features_sel = v,
            reg::DRIVER_FEATURES => c.set_driver_features_word(v),
            reg::DRIVER_FEATURES_SEL => c.driver_features_sel = v,
            reg::QUEUE_SEL => match u16::try_from(v) {
                Ok(sel) => c.select_queue(sel),
                Err(_) => c.select_queue(u16::MAX),
            },
            reg::QUEUE_NUM => {
                // An out-of-range size is kept as written (truncated) and refused at DRIVER_OK.
                let size = u16::try_from(v).unwrap_or(0);
                c.update_queue("size", |q| q.size = size)
            }
            reg::QUEUE_READY => c.update_queue("ready", |q| q.ready = v == 1),
            reg::QUEUE_NOTIFY => c.notify(v & 0xffff),
            reg::INTERRUPT_ACK => {
                self.interrupt.status.fetch_and(!v, Ordering::AcqRel);
            }
            reg::STATUS => {
                let Ok(status) = u8::try_from(v) else {
                    warn!("{}: guest wrote status {v:#x}; ignored", c.device().name());
                    return;
                };
                if c.set_status(status, &self.dyn_interrupt) {
                    let _ = self.interrupt.signal_config();
                }
                if status == 0 {
                    self.interrupt.status.store(0, Ordering::Release);
                }
            }
            reg::QUEUE_DESC_LOW => c.update_queue("desc", |q| q.desc = lo(q.desc)),
            reg::QUEUE_DESC_HIGH => c.update_queue("desc", |q| q.desc = hi(q.desc)),
            reg::QUEUE_DRIVER_LOW => c.update_queue("avail", |q| q.avail = lo(q.avail)),
            reg::QUEUE_DRIVER_HIGH => c.update_queue("avail", |q| q.avail = hi(q.avail)),
            reg::QUEUE_DEVICE_LOW => c.update_queue("used", |q| q.used = lo(q.used)),
            reg::QUEUE_DEVICE_HIGH => c.update_queue("used", |q| q.used = hi(q.used)),
            reg::SHM_SEL => {}
            _ => warn!(
                "{}: guest wrote unknown virtio-mmio register {offset:#x}; ignored",
                c.device().name()
            ),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.common.device().read_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || offset % 4 != 0 {
            warn!(
                "{}: guest read {} bytes at virtio-mmio register {offset:#x}; registers are 32-bit",
                self.common.device().name(),
                data.len()
            );
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_reg(offset).to_le_bytes());
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.common
                .device_mut()
                .write_config(offset - reg::CONFIG, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn!(
                "{}: guest wrote {} bytes at virtio-mmio register {offset:#x}; registers are 32-bit",
                self.common.device().name(),
                data.len()
            );
            return;
        };
        if offset % 4 != 0 {
            warn!(
                "{}: unaligned virtio-mmio write at {offset:#x}",
                self.common.device().name()
            );
            return;
        }
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
mod tests;
