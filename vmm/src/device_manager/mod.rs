//! The virtio device manager: builds the devices a [`VmConfig`] lists and wires them into the
//! machine of docs/machine.md.
//!
//! - PCI (default): the PCI root on the port bus at `0xCF8` and on the MMIO bus at the ECAM
//!   window, one modern virtio-pci function per device from 00:01.0 in the configured order,
//!   BAR 0 from the 32-bit window (then above RAM), MSI-X vectors bound by irqfd to GSIs whose
//!   KVM MSI routes follow the guest's vector table ([`routing`]), queue ioeventfds at the notify
//!   addresses, moved when the guest moves the BAR ([`pci`]).
//! - MMIO: device `i` at `0xd000_0000 + i * 0x1000` on IOAPIC pin `5 + i`, announced with a
//!   `virtio_mmio.device=` token on the kernel command line; its interrupt is an irqfd on the
//!   pin's GSI (an edge, delivered through the IOAPIC's MSI route for that pin), its queue
//!   ioeventfds sit on QueueNotify with the queue index as datamatch.
//!
//! Device threads: guest writes that activate or reset a device (virtio-mmio Status, virtio-pci
//! device_status) and PCI configuration writes are carried out on the device service thread
//! ([`service`], VMM seccomp role), never on a vCPU thread. Each device starts its own worker
//! thread(s) from there when the driver sets DRIVER_OK, always through
//! `veil_devices::virtio::worker::spawn`, which first runs the hook set with
//! `veil_devices::virtio::worker::set_thread_hook` (the place for the device-worker filter).

mod build;
mod mmio_slot;
mod pci;
pub(crate) mod routing;
mod service;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use veil_devices::bus::{Bus, BusError};
use veil_devices::pci::root::{CAM_LEN, CAM_PORT, ECAM_BUS0_LEN};
use veil_devices::pci::virtio_pci::BAR_SIZE;
use veil_devices::pci::{BarAllocator, BarError, PciRoot, PciRootError, VirtioPciDevice};
use veil_devices::virtio::block::BlockError;
use veil_devices::virtio::mmio::{self, MMIO_WINDOW, MmioTransport};
use veil_devices::virtio::net::NetError;
use veil_devices::virtio::transport::TransportError;
use veil_devices::virtio::vsock::VsockError;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::config::{MAX_CMDLINE, VmConfig};
use crate::memory::RAM_ABOVE_4G;
use crate::virtio_config::{Transport, VirtioDeviceConfig};
use mmio_slot::MmioSlot;
pub(crate) use pci::PciBars;
use pci::{BarWindows, PciConfig, PciConfigAccess};
use routing::{GsiRoutes, MsixRoutes, RoutingError};
pub use service::DeviceThreads;
use service::{DeviceService, ServiceError};

/// The 32-bit window PCI BARs are allocated from (`[start, end)`).
pub(crate) const PCI_LOW_WINDOW: (u64, u64) = (0xc000_0000, 0xd000_0000);
/// Size of the window above RAM for 64-bit BARs the 32-bit window cannot hold.
const PCI_HIGH_WINDOW_SIZE: u64 = 64 << 30;
/// First virtio-mmio window.
pub(crate) const MMIO_BASE: u64 = 0xd000_0000;
/// IOAPIC pin of the first virtio-mmio device.
pub(crate) const MMIO_FIRST_PIN: u32 = 5;
/// The PCI ECAM window of bus 0 (announced by the ACPI MCFG table).
pub const ECAM_BASE: u64 = 0xe000_0000;

/// Errors from building and wiring virtio devices; each names the device or resource.
#[derive(Debug, thiserror::Error)]
pub enum DeviceManagerError {
    /// A disk could not be opened or set up.
    #[error("--disk path={}: {source}", path.display())]
    Disk {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: BlockError,
    },
    /// A tap could not be opened.
    #[error("--net tap={tap}: {source}")]
    Net {
        /// The tap.
        tap: String,
        /// Why.
        #[source]
        source: NetError,
    },
    /// The vsock socket could not be bound.
    #[error("--vsock: {0}")]
    Vsock(#[from] VsockError),
    /// The console output file could not be created.
    #[error("--console file={}: {source}", path.display())]
    ConsoleFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A transport could not be built.
    #[error("{device}: {source}")]
    Transport {
        /// The device.
        device: &'static str,
        /// Why.
        #[source]
        source: TransportError,
    },
    /// An eventfd could not be created.
    #[error("{device}: creating an eventfd: {source}")]
    EventFd {
        /// The device.
        device: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// KVM_IRQFD failed.
    #[error("{device}: KVM_IRQFD for GSI {gsi}: {source}")]
    Irqfd {
        /// The device.
        device: &'static str,
        /// The GSI.
        gsi: u32,
        /// KVM's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM_IOEVENTFD failed.
    #[error("{device}: {what}")]
    Ioeventfd {
        /// The device.
        device: &'static str,
        /// What failed.
        what: String,
    },
    /// No room for a BAR.
    #[error("PCI: {0}")]
    Bar(#[from] BarError),
    /// No free PCI slot.
    #[error(transparent)]
    PciFull(#[from] PciRootError),
    /// No free GSI.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// Two devices on one address (a bug in the layout).
    #[error("MMIO bus: {0}")]
    Bus(#[from] BusError),
    /// The device service thread.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The command line with the virtio-mmio tokens is too long.
    #[error(
        "--cmdline: with the virtio_mmio.device= tokens Veil appends it is {len} bytes, more than {MAX_CMDLINE} - 1"
    )]
    CmdlineTooLong {
        /// Its length.
        len: usize,
    },
}

/// The devices in order with the transport each uses.
fn placed(config: &VmConfig) -> impl Iterator<Item = (&VirtioDeviceConfig, Transport)> {
    config
        .devices()
        .iter()
        .map(|d| (d, d.transport().unwrap_or(config.transport())))
}

/// Address and IOAPIC pin of virtio-mmio device `index`.
pub(crate) fn mmio_slot(index: usize) -> (u64, u32) {
    (
        MMIO_BASE + index as u64 * MMIO_WINDOW,
        MMIO_FIRST_PIN + index as u32,
    )
}

/// The kernel command line with one `virtio_mmio.device=` token per virtio-mmio device.
pub(crate) fn cmdline(config: &VmConfig) -> Result<String, DeviceManagerError> {
    let mut line = config.cmdline().to_string();
    for token in crate::virtio_config::mmio_tokens(config.devices(), config.transport()) {
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&token);
    }
    if line.len() + 1 > MAX_CMDLINE {
        return Err(DeviceManagerError::CmdlineTooLong { len: line.len() });
    }
    Ok(line)
}

/// Where 64-bit BARs go when the 32-bit window is full: above RAM, 1 GiB aligned.
fn high_window(high_ram: u64) -> (u64, u64) {
    let start = (RAM_ABOVE_4G + high_ram).next_multiple_of(1 << 30);
    (start, start + PCI_HIGH_WINDOW_SIZE)
}

fn eventfd(device: &'static str) -> Result<EventFd, DeviceManagerError> {
    EventFd::new(EFD_NONBLOCK).map_err(|source| DeviceManagerError::EventFd { device, source })
}

/// What [`attach`] needs from the VM.
pub(crate) struct Machine<'a> {
    /// The VM.
    pub vm: &'a Arc<VmFd>,
    /// Guest memory (the devices keep their own reference to its regions).
    pub memory: &'a GuestMemoryMmap,
    /// Bytes of RAM above 4 GiB.
    pub high_ram: u64,
    /// The GSI routing table.
    pub routes: &'a Arc<GsiRoutes>,
    /// Offer `VIRTIO_F_ACCESS_PLATFORM` (guest memory is the guest_memfd slots' shared view).
    pub access_platform: bool,
}

/// What [`attach`] leaves for the VM handle (and tests).
#[derive(Debug)]
pub(crate) struct Attached {
    /// The device service thread, to shut down after the vCPUs.
    pub threads: DeviceThreads,
    /// The virtio-pci functions' BAR table.
    #[cfg_attr(not(test), allow(dead_code))]
    pub bars: Arc<PciBars>,
}

/// Builds the configured devices and puts them, and the PCI root, on the buses.
pub(crate) fn attach(
    config: &VmConfig,
    m: &Machine<'_>,
    pio: &mut Bus,
    mmio_bus: &mut Bus,
) -> Result<Attached, DeviceManagerError> {
    let mem = Arc::new(m.memory.clone());
    let high = high_window(m.high_ram);
    let mut bars = BarAllocator::new(PCI_LOW_WINDOW, high);
    let windows = Arc::new(PciBars::new(vec![PCI_LOW_WINDOW, high]));
    let mut root = PciRoot::new();
    let (service, threads) = if config.devices().is_empty() {
        (DeviceService::in_place(), DeviceThreads::default())
    } else {
        let (service, thread) = DeviceService::start(config.seccomp())?;
        (service.clone(), DeviceThreads::new(service, thread))
    };
    let mut mmio_index = 0;
    for (cfg, transport) in placed(config) {
        let device = build::device(cfg)?;
        let name = device.name();
        let transport_err = |source| DeviceManagerError::Transport {
            device: name,
            source,
        };
        match transport {
            Transport::Pci => {
                let vectors = device.queue_max_sizes().len() as u32 + 1;
                let gsis = m.routes.allocate(vectors)?;
                let mut irqfds = Vec::with_capacity(vectors as usize);
                for gsi in gsis.clone() {
                    let fd = eventfd(name)?;
                    m.vm.register_irqfd(&fd, gsi)
                        .map_err(|source| DeviceManagerError::Irqfd {
                            device: name,
                            gsi,
                            source,
                        })?;
                    irqfds.push(fd);
                }
                let bar = bars.allocate(BAR_SIZE, true)?;
                let routing = Arc::new(MsixRoutes {
                    routes: m.routes.clone(),
                    gsis,
                });
                let dev = VirtioPciDevice::new(
                    device,
                    mem.clone(),
                    m.access_platform,
                    bar,
                    irqfds,
                    routing,
                )
                .map_err(transport_err)?;
                pci::register_ioevents(m.vm, &dev)
                    .map_err(|what| DeviceManagerError::Ioeventfd { device: name, what })?;
                let dev = Arc::new(Mutex::new(dev));
                service.keep(Box::new(dev.clone()));
                let slot = root.add_device(dev.clone())?;
                windows.add(dev, bar);
                log::info!("{name}: virtio-pci 00:{slot:02x}.0, BAR 0 at {bar:#x}");
            }
            Transport::Mmio => {
                let (base, pin) = mmio_slot(mmio_index);
                mmio_index += 1;
                let irq = eventfd(name)?;
                m.vm.register_irqfd(&irq, pin)
                    .map_err(|source| DeviceManagerError::Irqfd {
                        device: name,
                        gsi: pin,
                        source,
                    })?;
                let dev = MmioTransport::new(device, mem.clone(), irq, m.access_platform)
                    .map_err(transport_err)?;
                let notify = IoEventAddress::Mmio(base + mmio::NOTIFY_OFFSET);
                for (q, fd) in dev.common().queue_events().iter().enumerate() {
                    m.vm.register_ioevent(fd, &notify, q as u32).map_err(|e| {
                        DeviceManagerError::Ioeventfd {
                            device: name,
                            what: format!("KVM_IOEVENTFD for queue {q} at {base:#x}: {e}"),
                        }
                    })?;
                }
                let dev = Arc::new(Mutex::new(dev));
                service.keep(Box::new(dev.clone()));
                let slot = MmioSlot {
                    dev,
                    service: service.clone(),
                };
                mmio_bus.insert(Arc::new(Mutex::new(slot)), base, MMIO_WINDOW)?;
                log::info!("{name}: virtio-mmio at {base:#x}, IOAPIC pin {pin}");
            }
        }
    }
    let access = Arc::new(Mutex::new(PciConfigAccess {
        config: Arc::new(Mutex::new(PciConfig {
            root,
            bars: windows.clone(),
            vm: m.vm.clone(),
        })),
        service: service.clone(),
    }));
    pio.insert(access.clone(), CAM_PORT, CAM_LEN)?;
    mmio_bus.insert(access, ECAM_BASE, ECAM_BUS0_LEN)?;
    let bar_windows = Arc::new(Mutex::new(BarWindows {
        bars: windows.clone(),
        service,
    }));
    for (start, end) in [PCI_LOW_WINDOW, high] {
        mmio_bus.insert(bar_windows.clone(), start, end - start)?;
    }
    Ok(Attached {
        threads,
        bars: windows,
    })
}

#[cfg(test)]
mod tests;
