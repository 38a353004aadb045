//! Legacy PC devices: the 16550 UART, the i8042 reset line, the boot marker (port `0x80`), the
//! debug-exit port (`0xf4`) and the IOAPIC. See docs/machine.md for where they answer.

pub mod i8042;
pub mod ioapic;
pub mod ports;
pub mod serial;

pub use i8042::I8042;
pub use ioapic::{Ioapic, MsiMessage, MsiSink};
pub use ports::{AcpiSleep, BootMarker, DebugExit};
pub use serial::{InputRoom, IrqLine, Serial};

/// Why a device asks the VMM to end the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitRequest {
    /// The guest reset the machine (i8042 command `0xfe`); Veil treats it as a clean end.
    Reset,
    /// The guest powered the machine off (ACPI sleep state S5).
    PowerOff,
    /// The guest wrote `value` to the debug-exit port; Veil ends with status `value`.
    DebugExit(u8),
}

/// Where devices send their requests to end the guest; the VMM implements it.
pub trait ExitSink: Send + Sync {
    /// Asks the VMM to stop the guest; the first request wins, later ones are ignored.
    fn request_exit(&self, request: ExitRequest);
}
