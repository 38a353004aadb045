//! The PCI pieces wired onto real buses the way the VMM wires them: the root on the port bus at
//! 0xCF8 and on the MMIO bus at the ECAM window, a virtio-pci BAR placed by the allocator, and
//! a virtio-mmio window beside it.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use super::root::{CAM_LEN, CAM_PORT, ECAM_BUS0_LEN, PciRoot};
use super::virtio_pci::{BAR_SIZE, COMMON_OFFSET};
use super::{BarAllocator, MsiMessage, MsiRouting, VirtioPciDevice};
use crate::bus::Bus;
use crate::virtio::mmio::{MMIO_WINDOW, MmioTransport};
use crate::virtio::rng::Rng;
use crate::virtio::testing::guest_mem;

const ECAM: u64 = 0xe000_0000;
const MMIO_DEV: u64 = 0xd000_0000;

#[derive(Debug)]
struct NoRoutes;
impl MsiRouting for NoRoutes {
    fn route(&self, _: u16, _: MsiMessage) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn enumerate_and_drive_through_the_buses() {
    let mem = guest_mem(0x10_0000);
    let mut alloc = BarAllocator::new((0xc000_0000, ECAM), (1 << 36, (1 << 36) + (1 << 30)));
    let bar = alloc.allocate(BAR_SIZE, true).unwrap();
    let fds = (0..2)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let dev = Arc::new(Mutex::new(
        VirtioPciDevice::new(
            Box::new(Rng::new()),
            mem.clone(),
            false,
            bar,
            fds,
            Arc::new(NoRoutes),
        )
        .unwrap(),
    ));
    let mut root = PciRoot::new();
    let slot = root.add_device(dev.clone()).unwrap();
    let root = Arc::new(Mutex::new(root));
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    pio.insert(root.clone(), CAM_PORT, CAM_LEN).unwrap();
    mmio.insert(root.clone(), ECAM, ECAM_BUS0_LEN).unwrap();
    mmio.insert(dev.clone(), bar, BAR_SIZE).unwrap();
    let irq = EventFd::new(EFD_NONBLOCK).unwrap();
    let mmio_dev = MmioTransport::new(Box::new(Rng::new()), mem, irq, false).unwrap();
    mmio.insert(Arc::new(Mutex::new(mmio_dev)), MMIO_DEV, MMIO_WINDOW)
        .unwrap();

    // Mechanism #1 on the port bus.
    let addr = 0x8000_0000u32 | (u32::from(slot) << 11);
    assert!(pio.write(CAM_PORT, &addr.to_le_bytes()));
    let mut id = [0u8; 4];
    assert!(pio.read(CAM_PORT + 4, &mut id));
    assert_eq!(u32::from_le_bytes(id), 0x1044_1af4);
    // ECAM on the MMIO bus sees the same function.
    let mut id2 = [0u8; 4];
    assert!(mmio.read(ECAM + (u64::from(slot) << 15), &mut id2));
    assert_eq!(id, id2);
    // The BAR the allocator chose is where the common configuration answers.
    let mut nq = [0u8; 2];
    assert!(mmio.read(bar + COMMON_OFFSET + 0x12, &mut nq));
    assert_eq!(u16::from_le_bytes(nq), 1);
    // And the virtio-mmio window answers with its magic.
    let mut magic = [0u8; 4];
    assert!(mmio.read(MMIO_DEV, &mut magic));
    assert_eq!(&magic, b"virt");
    // The queue's notify address lies inside the BAR.
    let notify = dev.lock().unwrap().notify_addresses()[0].0;
    assert!((bar..bar + BAR_SIZE).contains(&notify));
}
