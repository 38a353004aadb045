//! The `serial_in` check: host input read from COM1 through its receive interrupt. IOAPIC pin 4
//! goes to vector `IOAPIC_VECTOR` (the `irq` check's handler counts it), IER bit 0 enables the
//! received-data interrupt, and each interrupt drains the FIFO while the line status shows data
//! ready, until a newline or `MAX` bytes.

use crate::checks::Why;
use crate::port::{inb, outb};
use crate::tsc::Deadline;
use crate::virtio::irq::{self, IOAPIC_COUNT, IOAPIC_VECTOR};
use crate::virtio::{Hex, dma};
use crate::{info, println};
use core::sync::atomic::Ordering;

const COM1: u16 = 0x3f8;
/// COM1's IOAPIC pin (docs/machine.md).
const COM1_PIN: u32 = 4;
/// Most bytes read before giving up on a newline.
pub const MAX: usize = 4096;
/// How long to wait for the next interrupt.
const WAIT_MS: u64 = 20_000;

/// Reads up to `MAX` bytes or a newline; returns the bytes before it (the newline excluded)
/// and the interrupts taken, or why it stopped.
fn receive(buf: &mut [u8]) -> Result<(usize, u64), Why> {
    let mut n = 0;
    let mut seen = IOAPIC_COUNT.load(Ordering::Acquire);
    let first = seen;
    if !irq::interrupts_on() {
        return Err(Why::Text("ring 3 could not set RFLAGS.IF (sti emulation)"));
    }
    // Enabling the interrupt with bytes already waiting raises it at once.
    outb(COM1 + 1, 0x01);
    // From here on every arrival interrupts (a test may wait for this line before sending).
    info!("serial_in_ready", "1");
    let mut dl = Deadline::after_ms(WAIT_MS);
    let result = loop {
        let count = IOAPIC_COUNT.load(Ordering::Acquire);
        if count != seen {
            seen = count;
            dl = Deadline::after_ms(WAIT_MS);
            let mut done = false;
            while inb(COM1 + 5) & 0x01 != 0 {
                let b = inb(COM1);
                if b == b'\n' {
                    done = true;
                    break;
                }
                buf[n] = b;
                n += 1;
                if n == buf.len() {
                    done = true;
                    break;
                }
            }
            if done {
                break Ok((n, seen - first));
            }
        }
        if dl.expired() {
            break Err(if inb(COM1 + 5) & 0x01 != 0 {
                Why::At(
                    "data is ready but no receive interrupt came within 20 s; bytes so far:",
                    n as u64,
                )
            } else {
                Why::At("no input within 20 s; bytes so far:", n as u64)
            });
        }
        core::hint::spin_loop();
    };
    outb(COM1 + 1, 0x00);
    irq::interrupts_off();
    result
}

/// Runs the `serial_in` check.
pub fn check() -> Result<(), Why> {
    let apic_id = irq::setup();
    let buf_addr = dma(MAX as u64)?;
    // SAFETY: fresh probe RAM that no device uses.
    let buf = unsafe { crate::virtio::bytes(buf_addr, MAX) };
    // Pin 4: fixed delivery, physical destination = the BSP, edge, active high, unmasked.
    let reg = 0x10 + 2 * COM1_PIN;
    irq::ioapic_write(reg + 1, (apic_id & 0xff) << 24);
    irq::ioapic_write(reg, u32::from(IOAPIC_VECTOR));
    // MCR: DTR, RTS and OUT2 (which gates a PC UART's interrupt line).
    outb(COM1 + 4, 0x0b);
    let r = receive(buf);
    irq::ioapic_write(reg, 1 << 16 | u32::from(IOAPIC_VECTOR));
    outb(COM1 + 4, 0x03);
    let (n, interrupts) = r?;
    info!("serial_in_bytes", "{}", n);
    info!("serial_in_interrupts", "{}", interrupts);
    info!("serial_in", "{}", Hex(&buf[..n]));
    println!("PROBE ok serial_in: {n} bytes");
    Ok(())
}
