//! The virtio-pci transport driven the way Linux's virtio_pci_modern driver drives it: find the
//! capabilities through the root's configuration mechanism, program MSI-X, set up a queue.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::*;
use crate::pci::msix::MsiMessage;
use crate::pci::root::{CAM_PORT, PciRoot};
use crate::virtio::features::{VERSION_1, bit};
use crate::virtio::rng::Rng;
use crate::virtio::status::*;
use crate::virtio::testing::{TestRing, guest_mem, wait_for};

const BAR: u64 = 0xc000_0000;

#[derive(Debug, Default)]
struct Routes(Mutex<Vec<(u16, MsiMessage)>>);
impl MsiRouting for Routes {
    fn route(&self, vector: u16, msg: MsiMessage) -> std::io::Result<()> {
        self.0.lock().unwrap().push((vector, msg));
        Ok(())
    }
}

struct Rig {
    root: PciRoot,
    dev: Arc<Mutex<VirtioPciDevice>>,
    slot: u32,
    irqs: Vec<EventFd>,
    routes: Arc<Routes>,
    mem: GuestMem,
}

fn rig() -> Rig {
    let mem = guest_mem(0x10_0000);
    let fds: Vec<EventFd> = (0..2)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let irqs = fds.iter().map(|f| f.try_clone().unwrap()).collect();
    let routes = Arc::new(Routes::default());
    let dev = VirtioPciDevice::new(
        Box::new(Rng::new()),
        mem.clone(),
        false,
        BAR,
        fds,
        routes.clone(),
    )
    .unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let mut root = PciRoot::new();
    let slot = u32::from(root.add_device(dev.clone()).unwrap());
    Rig {
        root,
        dev,
        slot,
        irqs,
        routes,
        mem,
    }
}

impl Rig {
    fn cfg_read(&mut self, reg: u32, len: usize) -> u32 {
        let addr = 0x8000_0000 | (self.slot << 11) | (reg & 0xfc);
        crate::bus::BusDevice::write(&mut self.root, CAM_PORT, 0, &addr.to_le_bytes());
        let mut b = [0u8; 4];
        crate::bus::BusDevice::read(
            &mut self.root,
            CAM_PORT,
            4 + u64::from(reg & 3),
            &mut b[..len],
        );
        u32::from_le_bytes(b)
    }

    fn cfg_write(&mut self, reg: u32, data: &[u8]) {
        let addr = 0x8000_0000 | (self.slot << 11) | (reg & 0xfc);
        crate::bus::BusDevice::write(&mut self.root, CAM_PORT, 0, &addr.to_le_bytes());
        crate::bus::BusDevice::write(&mut self.root, CAM_PORT, 4 + u64::from(reg & 3), data);
    }

    fn bar_read(&self, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.dev.lock().unwrap().read(BAR, off, &mut b[..len]);
        u64::from_le_bytes(b)
    }

    fn bar_write(&self, off: u64, v: u64, len: usize) {
        self.dev
            .lock()
            .unwrap()
            .write(BAR, off, &v.to_le_bytes()[..len]);
    }

    /// Walks the capability list: (cap offset, id, cfg_type, offset field).
    fn caps(&mut self) -> Vec<(u32, u8, u8, u32)> {
        let mut out = Vec::new();
        let mut at = self.cfg_read(0x34, 1);
        while at != 0 {
            let id = self.cfg_read(at, 1) as u8;
            let ty = self.cfg_read(at + 3, 1) as u8;
            let off = self.cfg_read(at + 8, 4);
            out.push((at, id, ty, off));
            at = self.cfg_read(at + 1, 1);
        }
        out
    }
}

#[test]
fn identity_and_capabilities() {
    let mut r = rig();
    assert_eq!(r.cfg_read(0, 4), 0x1044_1af4, "virtio 1.x rng");
    assert_eq!(r.cfg_read(8, 1), 1, "revision 1 (modern only)");
    assert_eq!(r.cfg_read(6, 2) & 0x10, 0x10, "capability list");
    let caps = r.caps();
    let types: Vec<u8> = caps.iter().filter(|c| c.1 == 0x09).map(|c| c.2).collect();
    assert_eq!(types, vec![1, 3, 4, 2, 5]);
    let notify = caps.iter().find(|c| c.1 == 0x09 && c.2 == 2).unwrap();
    assert_eq!(r.cfg_read(notify.0 + 16, 4), NOTIFY_MULTIPLIER);
    let msix = caps.iter().find(|c| c.1 == 0x11).unwrap();
    assert_eq!(r.cfg_read(msix.0 + 2, 2), 1, "two vectors");
    assert_eq!(r.cfg_read(msix.0 + 4, 4), MSIX_TABLE_OFFSET as u32);
    // BAR 0 is a 64-bit memory BAR at the given address; sizing works.
    assert_eq!(r.cfg_read(0x10, 4), (BAR as u32) | 4);
    r.cfg_write(0x10, &u32::MAX.to_le_bytes());
    assert_eq!(r.cfg_read(0x10, 4), !(BAR_SIZE as u32 - 1) | 4);
    r.cfg_write(0x10, &(BAR as u32).to_le_bytes());
    assert_eq!(r.dev.lock().unwrap().bar_addr(), BAR);
    // Sizing moved the BAR and moved it back: the VMM is told where it ended up.
    assert_eq!(r.dev.lock().unwrap().take_bar_move(), Some(BAR));
    assert_eq!(r.dev.lock().unwrap().take_bar_move(), None);
    r.cfg_write(0x10, &0xd000_0000u32.to_le_bytes());
    assert_eq!(r.dev.lock().unwrap().take_bar_move(), Some(0xd000_0000));
    r.cfg_write(0x10, &(BAR as u32).to_le_bytes());
    let n = r
        .dev
        .lock()
        .unwrap()
        .notify_addresses()
        .iter()
        .map(|x| x.0)
        .collect::<Vec<_>>();
    assert_eq!(n, vec![BAR + NOTIFY_OFFSET]);
}

#[test]
fn full_driver_flow_with_msix() {
    let mut r = rig();
    let msix = r.caps().into_iter().find(|c| c.1 == 0x11).unwrap().0;
    // Program MSI-X: vector 0 config, vector 1 queue 0.
    for v in 0..2u64 {
        let e = MSIX_TABLE_OFFSET + 16 * v;
        r.bar_write(e, 0xfee0_0000, 4);
        r.bar_write(e + 4, 0, 4);
        r.bar_write(e + 8, 0x30 + v, 4);
        r.bar_write(e + 12, 0, 4);
    }
    r.cfg_write(msix + 2, &CTRL_ENABLE.to_le_bytes());
    assert!(r.dev.lock().unwrap().msix().enabled());
    assert_eq!(r.routes.0.lock().unwrap().len(), 2);
    // Driver init through the common configuration.
    let c = COMMON_OFFSET;
    r.bar_write(c + 0x14, 0, 1);
    r.bar_write(c + 0x14, u64::from(ACKNOWLEDGE | DRIVER), 1);
    r.bar_write(c, 1, 4);
    assert_eq!(r.bar_read(c + 4, 4), 1, "VERSION_1 in the high word");
    r.bar_write(c + 0x08, 1, 4);
    r.bar_write(c + 0x0c, bit(VERSION_1) >> 32, 4);
    r.bar_write(c + 0x14, u64::from(ACKNOWLEDGE | DRIVER | FEATURES_OK), 1);
    assert_eq!(r.bar_read(c + 0x14, 1) as u8 & FEATURES_OK, FEATURES_OK);
    assert_eq!(r.bar_read(c + 0x12, 2), 1, "num_queues");
    r.bar_write(c + 0x10, 0, 2);
    assert_eq!(r.bar_read(c + 0x10, 2), 0);
    let mut ring = TestRing::new(&r.mem, 0, 16);
    r.bar_write(c + 0x16, 0, 2);
    assert_eq!(
        r.bar_read(c + 0x18, 2),
        256,
        "queue_size starts at the maximum"
    );
    r.bar_write(c + 0x18, 16, 2);
    r.bar_write(c + 0x1a, 1, 2);
    assert_eq!(r.bar_read(c + 0x1a, 2), 1);
    r.bar_write(c + 0x20, ring.desc, 8);
    r.bar_write(c + 0x28, ring.avail, 4);
    r.bar_write(c + 0x2c, 0, 4);
    r.bar_write(c + 0x30, ring.used, 8);
    assert_eq!(r.bar_read(c + 0x30, 8), ring.used);
    r.bar_write(c + 0x1c, 1, 2);
    r.bar_write(
        c + 0x14,
        u64::from(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK),
        1,
    );
    assert!(r.dev.lock().unwrap().common().is_active());
    ring.add_chain(0, &[(0x8000, 16, true)]);
    // Notify through the BAR (what the ioeventfd would catch).
    r.bar_write(NOTIFY_OFFSET, 0, 2);
    wait_for("used entry", || ring.used_idx() == 1);
    wait_for("MSI-X vector 1", || r.irqs[1].read().is_ok());
    assert!(r.irqs[0].read().is_err(), "no config interrupt");
    assert_eq!(r.bar_read(ISR_OFFSET, 1), 1);
    assert_eq!(r.bar_read(ISR_OFFSET, 1), 0, "ISR clears on read");
    // A vector beyond the table reads back as NO_VECTOR.
    r.bar_write(c + 0x10, 7, 2);
    assert_eq!(r.bar_read(c + 0x10, 2), u64::from(NO_VECTOR));
    // Reset.
    r.bar_write(c + 0x14, 0, 1);
    assert!(!r.dev.lock().unwrap().common().is_active());
    assert_eq!(r.bar_read(c + 0x1a, 2), u64::from(NO_VECTOR));
}

#[test]
fn pci_cfg_window_reaches_the_bar() {
    let mut r = rig();
    let cap = r
        .caps()
        .into_iter()
        .find(|c| c.1 == 0x09 && c.2 == 5)
        .unwrap()
        .0;
    // Read num_queues (common + 0x12, 2 bytes) through the window.
    r.cfg_write(cap + 8, &0x12u32.to_le_bytes());
    r.cfg_write(cap + 12, &2u32.to_le_bytes());
    assert_eq!(r.cfg_read(cap + 16, 4), 1);
    // Write device_status through it.
    r.cfg_write(cap + 8, &0x14u32.to_le_bytes());
    r.cfg_write(cap + 12, &1u32.to_le_bytes());
    r.cfg_write(cap + 16, &[ACKNOWLEDGE, 0, 0, 0]);
    assert_eq!(r.bar_read(0x14, 1), u64::from(ACKNOWLEDGE));
    // A bad length does nothing harmful.
    r.cfg_write(cap + 12, &3u32.to_le_bytes());
    r.cfg_write(cap + 16, &[0xff; 4]);
    assert_eq!(r.bar_read(0x14, 1), u64::from(ACKNOWLEDGE));
}

#[test]
fn hostile_bar_accesses_are_harmless() {
    let r = rig();
    for (off, len) in [(BAR_SIZE - 2, 4), (0x3f, 8), (0x5000, 3), (u64::MAX - 1, 1)] {
        r.bar_write(off.min(BAR_SIZE + 100), u64::MAX, len.min(8));
        let mut b = [0u8; 3];
        r.dev.lock().unwrap().read(BAR, off, &mut b);
    }
    // Queue select past the end, then queue writes: ignored.
    r.bar_write(0x16, 99, 2);
    r.bar_write(0x18, 8, 2);
    r.bar_write(0x1c, 1, 2);
    assert_eq!(r.bar_read(0x1c, 2), 0);
    r.bar_write(NOTIFY_OFFSET + 400, 0, 2);
}
