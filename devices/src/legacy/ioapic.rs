//! A userspace IOAPIC (82093AA, version 0x11, 24 pins) for KVM's split irqchip: the local APICs
//! are in the kernel, this model turns pin changes into MSIs to them. Its ID register holds an
//! 8-bit id (the 82093AA has 4 bits) so that it matches the MP table and MADT with up to 254 CPUs.
//!
//! Edge-triggered pins deliver on a rising edge (or a [`Ioapic::pulse`]). Level-triggered pins
//! deliver while asserted, set Remote IRR, and deliver again after the guest's EOI of their vector
//! if still asserted. So that KVM reports those EOIs, the model keeps an MSI route per unmasked
//! pin in the platform's routing table ([`MsiSink::set_routes`]), level ones with the trigger bit.

use std::sync::Arc;

use crate::bus::BusDevice;

/// Number of redirection entries (pins).
pub const IOAPIC_PINS: usize = 24;
/// The IOAPIC's MMIO base address.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Size of its MMIO window.
pub const IOAPIC_SIZE: u64 = 0x1000;
const VERSION: u32 = 0x11;
const REG_ID: u32 = 0x00;
const REG_VERSION: u32 = 0x01;
const REG_ARB: u32 = 0x02;
const REG_REDIR: u32 = 0x10;
const OFF_SELECT: u64 = 0x00;
const OFF_WINDOW: u64 = 0x10;

const MASKED: u64 = 1 << 16;
const LEVEL: u64 = 1 << 15;
const REMOTE_IRR: u64 = 1 << 14;
const DELIVERY_STATUS: u64 = 1 << 12;
/// Bits the guest may not write: delivery status and Remote IRR.
const READ_ONLY: u64 = DELIVERY_STATUS | REMOTE_IRR;

/// An x86 MSI: the address and data the local APICs decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiMessage {
    /// Address (`0xfee0_0000 | dest << 12 | dest_mode << 2`).
    pub address: u64,
    /// Data (`vector | delivery_mode << 8 | level << 14 | trigger << 15`).
    pub data: u32,
}

/// Where the IOAPIC sends its interrupts; the VMM implements it over KVM.
pub trait MsiSink: Send + Sync {
    /// Delivers `msg` now.
    fn send_msi(&self, msg: MsiMessage);
    /// Replaces the routing table: `(pin, message)` for every unmasked pin.
    fn set_routes(&self, routes: &[(u32, MsiMessage)]);
}

/// The IOAPIC's state.
pub struct Ioapic {
    id: u32,
    select: u32,
    redir: [u64; IOAPIC_PINS],
    asserted: u32,
    /// The routes last given to the sink (routing updates are costly for KVM: skip no-ops).
    routes: Vec<(u32, MsiMessage)>,
    sink: Arc<dyn MsiSink>,
}

impl std::fmt::Debug for Ioapic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ioapic")
            .field("id", &self.id)
            .field("redir", &self.redir)
            .field("asserted", &self.asserted)
            .finish()
    }
}

/// The MSI a redirection entry describes.
pub fn entry_message(entry: u64) -> MsiMessage {
    let vector = entry & 0xff;
    let delivery_mode = (entry >> 8) & 0x7;
    let dest_mode = (entry >> 11) & 1;
    let level = (entry >> 15) & 1;
    let dest = (entry >> 56) & 0xff;
    MsiMessage {
        address: 0xfee0_0000 | (dest << 12) | (dest_mode << 2),
        // A level-triggered message is sent asserted (bit 14) with the trigger bit (15) set.
        data: (vector | (delivery_mode << 8) | (level << 14) | (level << 15)) as u32,
    }
}

impl Ioapic {
    /// An IOAPIC with APIC id `id`, all pins masked, sending to `sink`.
    pub fn new(id: u8, sink: Arc<dyn MsiSink>) -> Self {
        Self {
            id: u32::from(id),
            select: 0,
            redir: [MASKED; IOAPIC_PINS],
            asserted: 0,
            routes: Vec::new(),
            sink,
        }
    }

    /// Raises or lowers input `pin` (out-of-range pins are ignored).
    pub fn set_irq(&mut self, pin: usize, high: bool) {
        if pin >= IOAPIC_PINS {
            return;
        }
        let bit = 1u32 << pin;
        let was_high = self.asserted & bit != 0;
        if high {
            self.asserted |= bit;
        } else {
            self.asserted &= !bit;
        }
        let entry = self.redir[pin];
        if entry & LEVEL != 0 {
            if high {
                self.service_level(pin);
            }
        } else if high && !was_high && entry & MASKED == 0 {
            self.sink.send_msi(entry_message(entry));
        }
    }

    /// An edge on `pin`: raise, then lower.
    pub fn pulse(&mut self, pin: usize) {
        self.set_irq(pin, true);
        self.set_irq(pin, false);
    }

    /// The guest ended the interrupt with `vector` (KVM's IOAPIC EOI exit).
    pub fn eoi(&mut self, vector: u8) {
        for pin in 0..IOAPIC_PINS {
            let entry = self.redir[pin];
            if entry & 0xff == u64::from(vector) && entry & LEVEL != 0 && entry & REMOTE_IRR != 0 {
                self.redir[pin] &= !REMOTE_IRR;
                self.service_level(pin);
            }
        }
    }

    /// Delivers a level-triggered pin if asserted, unmasked and not already in service.
    fn service_level(&mut self, pin: usize) {
        let entry = self.redir[pin];
        if self.asserted & (1 << pin) != 0 && entry & (MASKED | REMOTE_IRR) == 0 {
            self.redir[pin] |= REMOTE_IRR;
            self.sink.send_msi(entry_message(entry));
        }
    }

    fn read_register(&self) -> u32 {
        match self.select {
            REG_ID | REG_ARB => (self.id & 0xff) << 24,
            REG_VERSION => ((IOAPIC_PINS as u32 - 1) << 16) | VERSION,
            r if (REG_REDIR..REG_REDIR + 2 * IOAPIC_PINS as u32).contains(&r) => {
                let entry = self.redir[((r - REG_REDIR) / 2) as usize];
                if r % 2 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, value: u32) {
        match self.select {
            REG_ID => self.id = (value >> 24) & 0xff,
            r if (REG_REDIR..REG_REDIR + 2 * IOAPIC_PINS as u32).contains(&r) => {
                let pin = ((r - REG_REDIR) / 2) as usize;
                let old = self.redir[pin];
                let new = if r % 2 == 0 {
                    (old & !0xffff_ffff) | u64::from(value)
                } else {
                    (old & 0xffff_ffff) | (u64::from(value) << 32)
                };
                self.redir[pin] = (new & !READ_ONLY) | (old & READ_ONLY);
                if new & LEVEL == 0 {
                    self.redir[pin] &= !REMOTE_IRR;
                }
                self.update_routes();
                if self.redir[pin] & LEVEL != 0 {
                    self.service_level(pin);
                }
            }
            _ => {}
        }
    }

    fn update_routes(&mut self) {
        let routes: Vec<(u32, MsiMessage)> = (0..IOAPIC_PINS)
            .filter(|&p| self.redir[p] & MASKED == 0)
            .map(|p| (p as u32, entry_message(self.redir[p])))
            .collect();
        if routes != self.routes {
            self.sink.set_routes(&routes);
            self.routes = routes;
        }
    }
}

impl BusDevice for Ioapic {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let value = match offset {
            OFF_SELECT => self.select,
            OFF_WINDOW => self.read_register(),
            _ => 0,
        };
        for (i, b) in data.iter_mut().enumerate().take(4) {
            *b = (value >> (8 * i)) as u8;
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let mut bytes = [0u8; 4];
        for (dst, src) in bytes.iter_mut().zip(data) {
            *dst = *src;
        }
        let value = u32::from_le_bytes(bytes);
        match offset {
            OFF_SELECT => self.select = value & 0xff,
            OFF_WINDOW => self.write_register(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder {
        sent: Mutex<Vec<MsiMessage>>,
        routes: Mutex<Vec<(u32, MsiMessage)>>,
        route_updates: Mutex<usize>,
    }
    impl MsiSink for Recorder {
        fn send_msi(&self, msg: MsiMessage) {
            self.sent.lock().unwrap().push(msg);
        }
        fn set_routes(&self, routes: &[(u32, MsiMessage)]) {
            *self.routes.lock().unwrap() = routes.to_vec();
            *self.route_updates.lock().unwrap() += 1;
        }
    }

    fn program(io: &mut Ioapic, pin: u32, entry: u64) {
        io.write(
            IOAPIC_BASE,
            OFF_SELECT,
            &(REG_REDIR + 2 * pin + 1).to_le_bytes(),
        );
        io.write(
            IOAPIC_BASE,
            OFF_WINDOW,
            &((entry >> 32) as u32).to_le_bytes(),
        );
        io.write(
            IOAPIC_BASE,
            OFF_SELECT,
            &(REG_REDIR + 2 * pin).to_le_bytes(),
        );
        io.write(IOAPIC_BASE, OFF_WINDOW, &(entry as u32).to_le_bytes());
    }

    fn read_reg(io: &mut Ioapic, reg: u32) -> u32 {
        io.write(IOAPIC_BASE, OFF_SELECT, &reg.to_le_bytes());
        let mut b = [0u8; 4];
        io.read(IOAPIC_BASE, OFF_WINDOW, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn identifies_itself() {
        let mut io = Ioapic::new(200, Arc::new(Recorder::default()));
        assert_eq!(read_reg(&mut io, REG_ID), 200 << 24);
        assert_eq!(read_reg(&mut io, REG_VERSION), 0x17_0011);
        assert_eq!(read_reg(&mut io, REG_REDIR) as u64, MASKED);
    }

    #[test]
    fn edge_pins_deliver_on_rising_edges_when_unmasked() {
        let rec = Arc::new(Recorder::default());
        let mut io = Ioapic::new(0, rec.clone());
        io.pulse(4);
        assert!(
            rec.sent.lock().unwrap().is_empty(),
            "masked pins stay quiet"
        );
        program(&mut io, 4, (2u64 << 56) | 0x34);
        io.pulse(4);
        io.set_irq(4, true);
        io.set_irq(4, true); // no new edge
        let sent = rec.sent.lock().unwrap().clone();
        let msg = MsiMessage {
            address: 0xfee0_2000,
            data: 0x34,
        };
        assert_eq!(sent, vec![msg, msg]);
        assert_eq!(*rec.routes.lock().unwrap(), vec![(4, msg)]);
        // Masking other pins (as guests do at boot) changes no route: no update.
        let updates = *rec.route_updates.lock().unwrap();
        for pin in 5..24 {
            program(&mut io, pin, MASKED);
        }
        assert_eq!(*rec.route_updates.lock().unwrap(), updates);
    }

    #[test]
    fn level_pins_wait_for_eoi() {
        let rec = Arc::new(Recorder::default());
        let mut io = Ioapic::new(0, rec.clone());
        program(&mut io, 10, LEVEL | 0x51);
        io.set_irq(10, true);
        io.set_irq(10, true);
        assert_eq!(
            rec.sent.lock().unwrap().len(),
            1,
            "Remote IRR holds the second"
        );
        assert_ne!(read_reg(&mut io, REG_REDIR + 20) as u64 & REMOTE_IRR, 0);
        io.eoi(0x51);
        assert_eq!(
            rec.sent.lock().unwrap().len(),
            2,
            "still asserted: delivered again"
        );
        io.set_irq(10, false);
        io.eoi(0x51);
        assert_eq!(rec.sent.lock().unwrap().len(), 2);
        assert_eq!(read_reg(&mut io, REG_REDIR + 20) as u64 & REMOTE_IRR, 0);
        let data = rec.sent.lock().unwrap()[0].data;
        assert_eq!(data, 0x51 | (1 << 14) | (1 << 15));
    }
}
