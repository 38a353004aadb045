//! Polled output on COM1 (16550 at 0x3f8) and the `PROBE ...` line macros.

use crate::port::{inb, outb};
use core::fmt;

const COM1: u16 = 0x3f8;
/// Bound on polls of the line status register per byte, so a missing UART cannot hang the probe.
const MAX_POLLS: u32 = 100_000;

/// Programs COM1 for 115200 8N1 with FIFOs, interrupts off.
pub fn init() {
    outb(COM1 + 1, 0x00); // IER: no interrupts
    outb(COM1 + 3, 0x80); // LCR: DLAB
    outb(COM1, 0x01); // DLL: 115200 baud
    outb(COM1 + 1, 0x00); // DLM
    outb(COM1 + 3, 0x03); // LCR: 8N1
    outb(COM1 + 2, 0xc7); // FCR: FIFO on, cleared
    outb(COM1 + 4, 0x03); // MCR: DTR, RTS
}

fn put(byte: u8) {
    for _ in 0..MAX_POLLS {
        if inb(COM1 + 5) & 0x20 != 0 {
            break;
        }
    }
    outb(COM1, byte);
}

/// A `fmt::Write` sink for COM1.
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                put(b'\r');
            }
            put(b);
        }
        Ok(())
    }
}

/// Prints formatted text on the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Console, $($arg)*);
    }};
}

/// Prints formatted text on the console, then a newline.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Console, $($arg)*);
    }};
}

/// Prints a `PROBE info <key>=<value>` line.
#[macro_export]
macro_rules! info {
    ($key:expr, $($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Console, "PROBE info {}=", $key);
        $crate::println!($($arg)*);
    }};
}
