//! The wiring on a real KVM VM: configuration through both access mechanisms, BAR accesses,
//! MSI-X vectors reaching the GSI routing table, BAR moves carrying the ioeventfds along, and a
//! virtio-mmio window with its irqfd and ioeventfds.

use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch};
use veil_devices::bus::Bus;
use veil_devices::pci::MsiMessage;
use veil_devices::pci::root::CAM_PORT;
use veil_devices::pci::virtio_pci::{COMMON_OFFSET, MSIX_TABLE_OFFSET, NOTIFY_OFFSET};
use veil_devices::virtio::mmio::NOTIFY_OFFSET as MMIO_NOTIFY;

use super::routing::GsiRoutes;
use super::*;
use crate::config::Kernel;
use crate::memory::MemoryLayout;
use crate::virtio_config::{ConsoleOutput, DiskConfig};

struct Rig {
    vm: Arc<VmFd>,
    routes: Arc<GsiRoutes>,
    pio: Bus,
    mmio: Bus,
    bars: Arc<PciBars>,
    _mem: GuestMemoryMmap,
}

fn rig() -> Rig {
    let kvm = Kvm::new().expect("/dev/kvm opens (these tests need KVM)");
    let layout = MemoryLayout::new(16 << 20);
    let mem = layout.create().unwrap();
    let vm = Arc::new(crate::vm::create(&kvm, &mem).unwrap());
    let routes = Arc::new(GsiRoutes::new(vm.clone()));
    // rng and console on virtio-pci (00:01.0, 00:02.0), a disk on virtio-mmio.
    let config = VmConfig::builder(Kernel::File("unused".into()))
        .host_memory(1 << 40)
        .device(VirtioDeviceConfig::Rng)
        .device(VirtioDeviceConfig::Console(ConsoleOutput::Off))
        .device(VirtioDeviceConfig::Disk(DiskConfig {
            transport: Some(Transport::Mmio),
            ..DiskConfig::new(disk_image())
        }))
        .build()
        .unwrap();
    let mut pio = Bus::new();
    let mut mmio = Bus::new();
    let machine = Machine {
        vm: &vm,
        memory: &mem,
        high_ram: layout.high_ram(),
        routes: &routes,
        access_platform: false,
    };
    let bars = attach(&config, &machine, &mut pio, &mut mmio).unwrap().bars;
    // The device holds the image open; the name is no longer needed.
    for d in config.devices() {
        if let VirtioDeviceConfig::Disk(d) = d {
            let _ = std::fs::remove_file(&d.path);
        }
    }
    Rig {
        vm,
        routes,
        pio,
        mmio,
        bars,
        _mem: mem,
    }
}

fn disk_image() -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("veil-dm-test-{}-{n}.img", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, vec![0u8; 4096]).unwrap();
    path
}

fn cam_read(r: &Rig, dev: u32, reg: u32) -> u32 {
    let addr = 0x8000_0000u32 | (dev << 11) | reg;
    r.pio.write(CAM_PORT, &addr.to_le_bytes());
    let mut b = [0u8; 4];
    r.pio.read(CAM_PORT + 4, &mut b);
    u32::from_le_bytes(b)
}

fn cam_write(r: &Rig, dev: u32, reg: u32, v: &[u8]) {
    let addr = 0x8000_0000u32 | (dev << 11) | (reg & !3);
    r.pio.write(CAM_PORT, &addr.to_le_bytes());
    r.pio.write(CAM_PORT + 4 + u64::from(reg & 3), v);
}

fn read16(bus: &Bus, addr: u64) -> u16 {
    let mut b = [0u8; 2];
    bus.read(addr, &mut b);
    u16::from_le_bytes(b)
}

/// The offset of the MSI-X capability of function `dev`.
fn msix_cap(r: &Rig, dev: u32) -> u32 {
    let mut at = cam_read(r, dev, 0x34) & 0xff;
    while at != 0 {
        let head = cam_read(r, dev, at);
        if head & 0xff == 0x11 {
            return at;
        }
        at = (head >> 8) & 0xff;
    }
    panic!("no MSI-X capability");
}

#[test]
fn pci_functions_answer_and_route_msix_through_kvm() {
    let r = rig();
    // 00:00.0 is the host bridge, 00:01.0 the rng (virtio 1.x device id 0x1044), 00:02.0 the
    // console; the mmio disk is not on PCI.
    assert_eq!(cam_read(&r, 0, 0), 0x0008_1b36);
    assert_eq!(cam_read(&r, 1, 0), 0x1044_1af4);
    assert_eq!(cam_read(&r, 2, 0), 0x1043_1af4);
    assert_eq!(cam_read(&r, 3, 0), u32::MAX);
    // ECAM shows the same function.
    let mut id = [0u8; 4];
    r.mmio.read(ECAM_BASE + (1 << 15), &mut id);
    assert_eq!(u32::from_le_bytes(id), 0x1044_1af4);
    // BAR 0 is the first 32-bit window address; the common configuration answers there.
    assert_eq!(cam_read(&r, 1, 0x10), 0xc000_0004);
    assert_eq!(read16(&r.mmio, 0xc000_0000 + COMMON_OFFSET + 0x12), 1);
    assert_eq!(read16(&r.mmio, 0xc000_8000 + COMMON_OFFSET + 0x12), 2);

    // Program MSI-X vector 1 of the rng and enable MSI-X: its route lands at its GSI.
    let cap = msix_cap(&r, 1);
    let entry = 0xc000_0000 + MSIX_TABLE_OFFSET + 16;
    r.mmio.write(entry, &0xfee0_1000u32.to_le_bytes());
    r.mmio.write(entry + 4, &0u32.to_le_bytes());
    r.mmio.write(entry + 8, &0x45u32.to_le_bytes());
    r.mmio.write(entry + 12, &0u32.to_le_bytes());
    cam_write(&r, 1, cap + 2, &0x8000u16.to_le_bytes());
    // The rng has one queue: vectors 0 and 1 on the first two MSI-X GSIs (24, 25).
    assert_eq!(
        r.routes.msi(25),
        Some(MsiMessage {
            addr: 0xfee0_1000,
            data: 0x45
        })
    );
    // The IOAPIC's pin routes and the MSI-X routes live in one table: setting pins keeps it.
    r.routes.set_pins(&[]);
    assert!(r.routes.msi(25).is_some());
}

#[test]
fn bar_moves_carry_the_ioeventfds() {
    let r = rig();
    let (dev, base) = r.bars.function(0);
    assert_eq!(base, Some(0xc000_0000));
    let notify = 0xc000_0000 + NOTIFY_OFFSET;
    let already = |addr: u64| {
        let d = dev.lock().unwrap();
        let fd = d.notify_addresses()[0].1.try_clone().unwrap();
        drop(d);
        // KVM refuses a second identical registration: EEXIST means ours is there.
        match r
            .vm
            .register_ioevent(&fd, &IoEventAddress::Mmio(addr), NoDatamatch)
        {
            Err(e) => {
                assert_eq!(e.errno(), libc::EEXIST, "{e}");
                true
            }
            Ok(()) => {
                r.vm.unregister_ioevent(&fd, &IoEventAddress::Mmio(addr), NoDatamatch)
                    .unwrap();
                false
            }
        }
    };
    assert!(already(notify));
    // The guest moves BAR 0 of 00:01.0 to 0xc100_0000.
    cam_write(&r, 1, 0x10, &0xc100_0000u32.to_le_bytes());
    assert_eq!(r.bars.function(0).1, Some(0xc100_0000));
    assert!(!already(notify));
    assert!(already(0xc100_0000 + NOTIFY_OFFSET));
    assert_eq!(read16(&r.mmio, 0xc100_0000 + COMMON_OFFSET + 0x12), 1);
    // Sizing (all ones) takes it out of the windows: no decode, no ioeventfds.
    cam_write(&r, 1, 0x10, &u32::MAX.to_le_bytes());
    assert_eq!(r.bars.function(0).1, None);
    assert!(!already(0xc100_0000 + NOTIFY_OFFSET));
    assert_eq!(read16(&r.mmio, 0xc100_0000 + COMMON_OFFSET + 0x12), 0xffff);
    // Put back: decoded again.
    cam_write(&r, 1, 0x10, &0xc000_0000u32.to_le_bytes());
    assert_eq!(r.bars.function(0).1, Some(0xc000_0000));
    assert!(already(notify));
}

#[test]
fn mmio_windows_sit_at_their_slot_with_ioeventfds() {
    let r = rig();
    let mut b = [0u8; 4];
    r.mmio.read(MMIO_BASE, &mut b);
    assert_eq!(&b, b"virt");
    r.mmio.read(MMIO_BASE + 8, &mut b);
    assert_eq!(u32::from_le_bytes(b), 2, "virtio-blk");
    // Its queue-0 ioeventfd sits on QueueNotify with datamatch 0: KVM refuses a second
    // registration with the same address, length and datamatch (EEXIST), and accepts datamatch 1
    // (the disk has one queue).
    let fd = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
    let at = IoEventAddress::Mmio(MMIO_BASE + MMIO_NOTIFY);
    let e = r.vm.register_ioevent(&fd, &at, 0u32).unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    r.vm.register_ioevent(&fd, &at, 1u32).unwrap();
    r.vm.unregister_ioevent(&fd, &at, 1u32).unwrap();
    let line = cmdline(
        &VmConfig::builder(Kernel::File("k".into()))
            .host_memory(1 << 40)
            .cmdline("console=ttyS0")
            .transport(Transport::Mmio)
            .device(VirtioDeviceConfig::Rng)
            .device(VirtioDeviceConfig::Console(ConsoleOutput::Off))
            .build()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        line,
        "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6"
    );
}
