//! A virtio-mmio window on the MMIO bus whose Status writes (activation, reset) are carried out on
//! the device service thread.

use std::sync::{Arc, Mutex};

use veil_devices::bus::BusDevice;
use veil_devices::virtio::mmio::MmioTransport;

use super::service::DeviceService;

/// The Status register (virtio 1.2, 4.2.2).
const STATUS: u64 = 0x70;

/// One virtio-mmio device as the bus sees it.
#[derive(Debug)]
pub(crate) struct MmioSlot {
    pub(crate) dev: Arc<Mutex<MmioTransport>>,
    pub(crate) service: Arc<DeviceService>,
}

fn lock(dev: &Mutex<MmioTransport>) -> std::sync::MutexGuard<'_, MmioTransport> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

impl BusDevice for MmioSlot {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        lock(&self.dev).read(base, offset, data);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        if offset == STATUS {
            let dev = self.dev.clone();
            let data = data.to_vec();
            self.service
                .run(move || lock(&dev).write(base, offset, &data));
        } else {
            lock(&self.dev).write(base, offset, data);
        }
    }
}
