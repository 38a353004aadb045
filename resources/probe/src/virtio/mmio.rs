//! virtio-mmio version 2 (virtio 1.2, 4.2): register windows announced on the command line as
//! `virtio_mmio.device=<size>@<base>:<irq>` (see `cmdline.rs`).

use super::reg::{r8, r32, w32};
use super::virtqueue::Virtqueue;
use crate::checks::Why;
use crate::cmdline::{Config, MmioWindow};

const MAGIC: u32 = 0x7472_6976; // "virt"
mod off {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
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
    pub const QUEUE_DESC: u64 = 0x080;
    pub const QUEUE_DRIVER: u64 = 0x090;
    pub const QUEUE_DEVICE: u64 = 0x0a0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// A virtio-mmio device.
pub struct MmioDev {
    /// The window it was found in.
    pub window: MmioWindow,
    /// Virtio device type.
    pub kind: u32,
}

/// Finds the first announced window holding a version 2 device of type `kinds[0]`, else
/// `kinds[1]`, ... Windows whose magic or version is wrong are skipped.
pub fn find(kinds: &[u32], cfg: &Config) -> Result<Option<MmioDev>, Why> {
    for &kind in kinds {
        for w in cfg.mmio_windows() {
            if w.base.checked_add(0x200).is_none_or(|end| end > 4 << 30) && !map(w.base, w.size) {
                return Err(Why::At("cannot map the virtio-mmio window at", w.base));
            }
            if r32(w.base + off::MAGIC) != MAGIC || r32(w.base + off::VERSION) != 2 {
                continue;
            }
            if r32(w.base + off::DEVICE_ID) == kind {
                return Ok(Some(MmioDev { window: *w, kind }));
            }
        }
    }
    Ok(None)
}

fn map(base: u64, size: u64) -> bool {
    // SAFETY: only the BSP touches the page tables after boot.
    unsafe { crate::paging::map_mmio(crate::BOOT.get_ref(), base, size) }
}

impl MmioDev {
    fn r(&self, o: u64) -> u32 {
        r32(self.window.base + o)
    }

    fn w(&self, o: u64, v: u32) {
        w32(self.window.base + o, v)
    }

    pub(super) fn status(&self) -> u8 {
        self.r(off::STATUS) as u8
    }

    pub(super) fn set_status(&self, s: u8) {
        self.w(off::STATUS, s.into())
    }

    pub(super) fn device_features(&self) -> u64 {
        self.w(off::DEVICE_FEATURES_SEL, 0);
        let lo = self.r(off::DEVICE_FEATURES);
        self.w(off::DEVICE_FEATURES_SEL, 1);
        let hi = self.r(off::DEVICE_FEATURES);
        u64::from(lo) | u64::from(hi) << 32
    }

    pub(super) fn set_driver_features(&self, f: u64) {
        self.w(off::DRIVER_FEATURES_SEL, 0);
        self.w(off::DRIVER_FEATURES, f as u32);
        self.w(off::DRIVER_FEATURES_SEL, 1);
        self.w(off::DRIVER_FEATURES, (f >> 32) as u32);
    }

    pub(super) fn queue_max(&self, q: u16) -> u16 {
        self.w(off::QUEUE_SEL, q.into());
        self.r(off::QUEUE_NUM_MAX).min(0x8000) as u16
    }

    pub(super) fn queue_setup(&self, vq: &Virtqueue) -> Result<(), Why> {
        self.w(off::QUEUE_SEL, vq.index.into());
        if self.r(off::QUEUE_READY) != 0 {
            return Err(Why::At("queue already live after reset:", vq.index.into()));
        }
        self.w(off::QUEUE_NUM, vq.size().into());
        let (desc, avail, used) = vq.addrs();
        for (o, a) in [
            (off::QUEUE_DESC, desc),
            (off::QUEUE_DRIVER, avail),
            (off::QUEUE_DEVICE, used),
        ] {
            self.w(o, a as u32);
            self.w(o + 4, (a >> 32) as u32);
        }
        self.w(off::QUEUE_READY, 1);
        Ok(())
    }

    pub(super) fn notify(&self, q: u16) {
        self.w(off::QUEUE_NOTIFY, q.into())
    }

    pub(super) fn config8(&self, o: u64) -> u8 {
        r8(self.window.base + off::CONFIG + o)
    }

    pub(super) fn generation(&self) -> u32 {
        self.r(off::CONFIG_GENERATION)
    }

    /// Reads the interrupt status and acknowledges those bits; returns them.
    pub fn ack_interrupt(&self) -> u32 {
        let s = self.r(off::INTERRUPT_STATUS);
        if s != 0 {
            self.w(off::INTERRUPT_ACK, s);
        }
        s
    }
}
