//! The 16550 UART on COM1 (ports `0x3f8..=0x3ff`, IRQ 4), through vm-superio's model. Output goes
//! to whatever `Write` the VMM gives it (stdout, a file, or a sink for `--serial off`); host input
//! is queued into its 64-byte receive FIFO with [`Serial::enqueue_input`], and an optional
//! eventfd tells the input side when the guest has emptied the FIFO (backpressure).

use std::io::Write;
use std::sync::{Arc, Mutex};

use vm_superio::Trigger;
use vm_superio::serial::SerialEvents;
use vmm_sys_util::eventfd::EventFd;

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

/// Signals an eventfd each time the guest reads the receive FIFO empty, so that host input
/// waiting for room can be queued.
#[derive(Debug)]
pub struct InputRoom(Option<Arc<EventFd>>);

impl SerialEvents for InputRoom {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Some(fd) = &self.0 {
            // Only fails when the counter would overflow, and then a wake-up is pending anyway.
            let _ = fd.write(1);
        }
    }
}

type Uart = vm_superio::Serial<IrqLine, InputRoom, Box<dyn Write + Send>>;

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
        Self(vm_superio::Serial::with_events(irq, InputRoom(None), out))
    }

    /// Like [`Serial::new`], and `room` is signalled whenever the guest reads the receive FIFO
    /// empty (where a reader blocked on a full FIFO waits).
    pub fn with_input(irq: IrqLine, out: Box<dyn Write + Send>, room: Arc<EventFd>) -> Self {
        Self(vm_superio::Serial::with_events(
            irq,
            InputRoom(Some(room)),
            out,
        ))
    }

    /// Queues host input in the receive FIFO (raising the receive interrupt if the guest
    /// enabled it) and returns how many leading bytes of `bytes` fitted: 0 when the FIFO is
    /// full or the guest has the UART in loopback mode. The rest is the caller's to retry.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        // The only errors are a full FIFO and the trigger's, which cannot fail (`IrqLine`).
        self.0.enqueue_raw_bytes(bytes).unwrap_or(0)
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

    fn unmasked_pin4() -> (Arc<Mutex<Ioapic>>, Arc<Count>) {
        let msis = Arc::new(Count::default());
        let ioapic = Arc::new(Mutex::new(Ioapic::new(0, msis.clone())));
        {
            let mut io = ioapic.lock().unwrap();
            io.write(0, 0, &0x18u32.to_le_bytes());
            io.write(0, 0x10, &0x24u32.to_le_bytes());
        }
        (ioapic, msis)
    }

    fn read_reg(uart: &mut Serial, offset: u64) -> u8 {
        let mut b = [0u8];
        uart.read(0x3f8, offset, &mut b);
        b[0]
    }

    #[test]
    fn input_fills_the_fifo_raises_the_receive_interrupt_and_signals_room() {
        let (ioapic, msis) = unmasked_pin4();
        let room = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let mut uart = Serial::with_input(
            IrqLine::new(ioapic, 4),
            Box::new(std::io::sink()),
            room.clone(),
        );
        let input: Vec<u8> = (0..100u8).collect();
        // Receive interrupts off: bytes are queued, no interrupt.
        assert_eq!(uart.enqueue_input(&input), 64);
        assert_eq!(*msis.0.lock().unwrap(), 0);
        // The FIFO is full: nothing more fits, nothing is dropped by the device.
        assert_eq!(uart.enqueue_input(&input[64..]), 0);
        // Enabling the receive interrupt (IER bit 0) with data waiting raises it.
        uart.write(0x3f8, 1, &[0x01]);
        assert_eq!(*msis.0.lock().unwrap(), 1);
        assert_eq!(read_reg(&mut uart, 2) & 0x0f, 0x04, "IIR: received data");
        let mut got = Vec::new();
        while read_reg(&mut uart, 5) & 0x01 != 0 {
            got.push(read_reg(&mut uart, 0));
        }
        assert_eq!(got, &input[..64]);
        // Emptying the FIFO signals room once.
        assert_eq!(room.read().unwrap(), 1);
        assert!(
            room.read().is_err(),
            "signalled only when the FIFO became empty"
        );
        // The rest goes in and interrupts again.
        assert_eq!(uart.enqueue_input(&input[64..]), 36);
        assert_eq!(*msis.0.lock().unwrap(), 2);
    }

    #[test]
    fn loopback_mode_takes_no_host_input() {
        let (ioapic, _) = unmasked_pin4();
        let mut uart = Serial::new(IrqLine::new(ioapic, 4), Box::new(std::io::sink()));
        uart.write(0x3f8, 4, &[0x10]); // MCR: loopback
        assert_eq!(uart.enqueue_input(b"abc"), 0);
        uart.write(0x3f8, 4, &[0x03]);
        assert_eq!(uart.enqueue_input(b"abc"), 3);
    }
}
