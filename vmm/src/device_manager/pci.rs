//! virtio-pci functions on the buses: configuration access through the PCI root (port `0xCF8`
//! and the ECAM window), BAR accesses dispatched to whichever function's BAR 0 covers the address,
//! and BAR moves followed by moving the queue ioeventfds.
//!
//! The MMIO bus is fixed once vCPUs run, so a function is not put on it at its BAR address.
//! Instead one [`BarWindows`] device covers the windows BARs may live in and looks the address up
//! in the table [`PciConfigAccess`] keeps current as the guest moves BARs.

use std::sync::{Arc, Mutex, RwLock};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use veil_devices::bus::BusDevice;
use veil_devices::pci::root::CAM_PORT;
use veil_devices::pci::virtio_pci::{BAR_SIZE, COMMON_OFFSET};
use veil_devices::pci::{PciRoot, VirtioPciDevice};

use super::service::DeviceService;

/// Offset of `device_status` in the common configuration: writes there activate or reset.
const DEVICE_STATUS: u64 = COMMON_OFFSET + 0x14;

/// One function and where its BAR 0 currently decodes (None: outside the BAR windows).
#[derive(Debug)]
struct Function {
    dev: Arc<Mutex<VirtioPciDevice>>,
    base: Option<u64>,
}

/// The functions' BARs, shared by the BAR windows and the configuration access path.
#[derive(Debug)]
pub(crate) struct PciBars {
    functions: RwLock<Vec<Function>>,
    /// `[start, end)` ranges BARs may decode in.
    windows: Vec<(u64, u64)>,
}

fn lock(dev: &Mutex<VirtioPciDevice>) -> std::sync::MutexGuard<'_, VirtioPciDevice> {
    dev.lock().unwrap_or_else(|p| p.into_inner())
}

impl PciBars {
    /// No functions yet; BARs decode only inside `windows`.
    pub(crate) fn new(windows: Vec<(u64, u64)>) -> Self {
        Self {
            functions: RwLock::new(Vec::new()),
            windows,
        }
    }

    fn inside(&self, base: u64) -> bool {
        base.checked_add(BAR_SIZE)
            .is_some_and(|end| self.windows.iter().any(|&(s, e)| s <= base && end <= e))
    }

    /// Adds a function whose BAR 0 is at `base` (inside a window) with its ioeventfds registered.
    pub(crate) fn add(&self, dev: Arc<Mutex<VirtioPciDevice>>, base: u64) {
        self.functions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Function {
                dev,
                base: Some(base),
            });
    }

    /// The device of function `index` and where its BAR decodes (for tests).
    #[cfg(test)]
    pub(crate) fn function(&self, index: usize) -> (Arc<Mutex<VirtioPciDevice>>, Option<u64>) {
        let fs = self.functions.read().unwrap_or_else(|p| p.into_inner());
        (fs[index].dev.clone(), fs[index].base)
    }

    fn find(&self, addr: u64) -> Option<(Arc<Mutex<VirtioPciDevice>>, u64)> {
        let fs = self.functions.read().unwrap_or_else(|p| p.into_inner());
        fs.iter().find_map(|f| {
            let b = f.base?;
            (b <= addr && addr - b < BAR_SIZE).then(|| (f.dev.clone(), b))
        })
    }
}

/// Registers (or with `register` false, removes) the queue ioeventfds of `dev` for its BAR at
/// its current address.
fn ioevents(vm: &VmFd, dev: &VirtioPciDevice, base: u64, register: bool) -> Result<(), String> {
    let now = dev.bar_addr();
    for (addr, fd) in dev.notify_addresses() {
        let addr = addr - now + base;
        let at = IoEventAddress::Mmio(addr);
        let r = if register {
            vm.register_ioevent(fd, &at, NoDatamatch)
        } else {
            vm.unregister_ioevent(fd, &at, NoDatamatch)
        };
        r.map_err(|e| format!("KVM_IOEVENTFD at {addr:#x}: {e}"))?;
    }
    Ok(())
}

/// Registers the queue ioeventfds of a function whose BAR 0 is where it was created.
pub(crate) fn register_ioevents(vm: &VmFd, dev: &VirtioPciDevice) -> Result<(), String> {
    ioevents(vm, dev, dev.bar_addr(), true)
}

/// The BAR windows on the MMIO bus.
#[derive(Debug)]
pub(crate) struct BarWindows {
    pub(crate) bars: Arc<PciBars>,
    pub(crate) service: Arc<DeviceService>,
}

impl BusDevice for BarWindows {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        let addr = base + offset;
        if let Some((dev, b)) = self.bars.find(addr) {
            lock(&dev).read(b, addr - b, data);
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        let addr = base + offset;
        let Some((dev, b)) = self.bars.find(addr) else {
            return;
        };
        if addr - b == DEVICE_STATUS {
            // May activate the device: done on the device service thread.
            let data = data.to_vec();
            self.service
                .run(move || lock(&dev).write(b, addr - b, &data));
        } else {
            lock(&dev).write(b, addr - b, data);
        }
    }
}

/// The PCI root and what following BAR moves needs.
#[derive(Debug)]
pub(crate) struct PciConfig {
    pub(crate) root: PciRoot,
    pub(crate) bars: Arc<PciBars>,
    pub(crate) vm: Arc<VmFd>,
}

/// The PCI root as the buses see it: reads answered in place; configuration writes (which may
/// move a BAR, or reach a function's registers through its PCI_CFG capability) carried out on
/// the device service thread, followed by any BAR move.
#[derive(Debug)]
pub(crate) struct PciConfigAccess {
    pub(crate) config: Arc<Mutex<PciConfig>>,
    pub(crate) service: Arc<DeviceService>,
}

impl PciConfigAccess {
    fn config(&self) -> std::sync::MutexGuard<'_, PciConfig> {
        self.config.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl PciConfig {
    /// Moves the BAR range and ioeventfds of every function whose BAR the guest just moved.
    fn follow_moves(&self) {
        let mut fs = self
            .bars
            .functions
            .write()
            .unwrap_or_else(|p| p.into_inner());
        for f in fs.iter_mut() {
            let mut dev = lock(&f.dev);
            let Some(new) = dev.take_bar_move() else {
                continue;
            };
            let name = dev.common().device().name();
            if let Some(old) = f.base.take() {
                if let Err(e) = ioevents(&self.vm, &dev, old, false) {
                    log::error!("{name}: removing the ioeventfds at the old BAR {old:#x}: {e}");
                }
            }
            if !self.bars.inside(new) {
                // BAR sizing writes all ones and puts the BAR back right after; a BAR left
                // outside the windows does not decode.
                log::debug!("{name}: BAR 0 at {new:#x} is outside the PCI windows; not decoded");
                continue;
            }
            match ioevents(&self.vm, &dev, new, true) {
                Ok(()) => {
                    f.base = Some(new);
                    log::info!("{name}: BAR 0 moved to {new:#x}");
                }
                Err(e) => log::error!("{name}: BAR 0 at {new:#x}: {e}; not decoded"),
            }
        }
    }
}

impl BusDevice for PciConfigAccess {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        self.config().root.read(base, offset, data);
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        // Writes to the address register (0xCF8..0xCFB) configure nothing.
        if base == CAM_PORT && offset < 4 {
            self.config().root.write(base, offset, data);
            return;
        }
        let config = self.config.clone();
        let data = data.to_vec();
        self.service.run(move || {
            let mut c = config.lock().unwrap_or_else(|p| p.into_inner());
            c.root.write(base, offset, &data);
            c.follow_moves();
        });
    }
}
