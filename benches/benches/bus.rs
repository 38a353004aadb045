//! Dispatch cost of a guest port access going through `veil_devices::bus::Bus`
//! to the owning device, with the bus populated like the machine's port space (docs/machine.md).

use std::hint::black_box;
use std::sync::{Arc, Mutex};

use criterion::{Criterion, criterion_group, criterion_main};
use veil_devices::bus::{Bus, BusDevice};

/// A register file: reads return what was last written at the offset.
struct Regs([u8; 8]);

impl BusDevice for Regs {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let at = offset as usize;
        data.copy_from_slice(&self.0[at..at + data.len()]);
    }
    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let at = offset as usize;
        self.0[at..at + data.len()].copy_from_slice(data);
    }
}

fn port_bus() -> Bus {
    let mut bus = Bus::new();
    // The ranges of the legacy port map: i8042, POST, debug exit, PCI config, COM1.
    for (base, len) in [
        (0x60, 1),
        (0x64, 1),
        (0x80, 1),
        (0xf4, 4),
        (0xcf8, 8),
        (0x3f8, 8),
    ] {
        bus.insert(Arc::new(Mutex::new(Regs([0; 8]))), base, len)
            .expect("the legacy port ranges do not overlap");
    }
    bus
}

fn bus_dispatch(c: &mut Criterion) {
    let bus = port_bus();
    let mut g = c.benchmark_group("bus");
    g.bench_function("write_1b_com1", |b| {
        b.iter(|| bus.write(black_box(0x3f8), black_box(&[0x41])))
    });
    g.bench_function("read_1b_com1_lsr", |b| {
        let mut data = [0u8; 1];
        b.iter(|| bus.read(black_box(0x3fd), black_box(&mut data)))
    });
    g.bench_function("write_4b_pci_config_address", |b| {
        b.iter(|| bus.write(black_box(0xcf8), black_box(&0x8000_0000u32.to_le_bytes())))
    });
    g.bench_function("read_unmapped_port", |b| {
        let mut data = [0u8; 1];
        b.iter(|| bus.read(black_box(0x2f8), black_box(&mut data)))
    });
    g.finish();
}

criterion_group!(benches, bus_dispatch);
criterion_main!(benches);
