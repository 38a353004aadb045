//! The 16550 UART on COM1 (ports `0x3f8..=0x3ff`, IRQ 4), through vm-superio's model. Output goes
//! to whatever `Write` the VMM gives it (stdout, a file, or a sink for `--serial off`).

use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::{Trigger, serial::NoEvents};

use super::Ioapic;
use crate::bus::BusDevice;

/// An ISA interrupt line: an edge on one IOAPIC pin.
#[derive(Debug, Clone)]
pub struct IrqLine {
    ioapic: Arc<Mutex<Ioapic>>,
    pin: usize,
}

impl IrqLine {
    /// The line to `pin` of `ioapic`.
    pub fn new(ioapic: Arc<Mutex<Ioapic>>, pin: usize) -> Self {
        Self { ioapic, pin }
    }
}

impl Trigger for IrqLine {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.ioapic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pulse(self.pin);
        Ok(())
    }
}

type Uart = vm_superio::Serial<IrqLine, NoEvents, Box<dyn Write + Send>>;

/// A 16550 UART whose transmitted bytes go to `out`.
pub struct Serial(Uart);

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Serial")
    }
}

impl Serial {
    /// A UART raising `irq` for its interrupts and writing the guest's output to `out`.
    pub fn new(irq: IrqLine, out: Box<dyn Write + Send>) -> Self {
        Self(vm_superio::Serial::new(irq, out))
    }

    /// Flushes buffered output (call before the process ends).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.0.writer_mut().flush()
    }
}

impl BusDevice for Serial {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        if let (Ok(off), [first]) = (u8::try_from(offset), data) {
            *first = self.0.read(off);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        if let (Ok(off), [value]) = (u8::try_from(offset), data) {
            if let Err(err) = self.0.write(off, *value) {
                // The guest cannot be told about a host-side output error; say it once per byte
                // at debug level rather than stall the vCPU.
                log::debug!("serial: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::{MsiMessage, MsiSink};

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[derive(Default)]
    struct Count(Mutex<usize>);
    impl MsiSink for Count {
        fn send_msi(&self, _msg: MsiMessage) {
            *self.0.lock().unwrap() += 1;
        }
        fn set_routes(&self, _routes: &[(u32, MsiMessage)]) {}
    }

    #[test]
    fn transmitted_bytes_reach_the_writer_and_raise_the_irq() {
        let out = Shared::default();
        let msis = Arc::new(Count::default());
        let ioapic = Arc::new(Mutex::new(Ioapic::new(0, msis.clone())));
        // Unmask pin 4 with vector 0x24.
        {
            let mut io = ioapic.lock().unwrap();
            io.write(0, 0, &0x18u32.to_le_bytes());
            io.write(0, 0x10, &0x24u32.to_le_bytes());
        }
        let mut uart = Serial::new(IrqLine::new(ioapic, 4), Box::new(out.clone()));
        // Enable the THR-empty interrupt (IER bit 1), then send "hi".
        uart.write(0x3f8, 1, &[0x02]);
        for b in b"hi" {
            uart.write(0x3f8, 0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        assert!(*msis.0.lock().unwrap() >= 1);
        // Line status: transmitter empty.
        let mut lsr = [0u8];
        uart.read(0x3f8, 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
    }
}
