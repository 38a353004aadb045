//! The device manager for plain guests: builds the port-I/O bus of docs/machine.md.

use std::fs::File;
use std::io::{LineWriter, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use veil_devices::bus::{Bus, BusError};
use veil_devices::legacy::i8042::I8042_BASE;
use veil_devices::legacy::ioapic::{IOAPIC_BASE, IOAPIC_SIZE};
use veil_devices::legacy::{
    AcpiSleep, BootMarker, DebugExit, ExitSink, I8042, Ioapic, IrqLine, MsiSink, Serial,
};

use crate::config::SerialOutput;

const COM1_BASE: u64 = 0x3f8;
const COM1_IRQ: usize = 4;
const BOOT_MARKER_PORT: u64 = 0x80;
const DEBUG_EXIT_PORT: u64 = 0xf4;
/// The ACPI sleep control/status registers (FADT SLEEP_CONTROL_REG / SLEEP_STATUS_REG).
pub(crate) const ACPI_SLEEP_PORT: u64 = 0x600;

/// Errors from creating devices.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The serial output file cannot be created.
    #[error("--serial file={path}: {source}")]
    SerialFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Two devices on one address (a bug in this table).
    #[error("I/O bus: {0}")]
    Bus(#[from] BusError),
    /// COM1's input signal (an eventfd) cannot be created.
    #[error("COM1 input: creating its eventfd: {0}")]
    SerialInput(#[source] std::io::Error),
    /// Stdin cannot be given to the guest.
    #[error(transparent)]
    Stdin(#[from] crate::stdin::StdinError),
}

/// The legacy devices of a plain guest.
#[derive(Debug)]
pub(crate) struct Devices {
    /// The port-I/O bus.
    pub pio: Bus,
    /// The MMIO bus.
    pub mmio: Bus,
    /// The IOAPIC, for EOIs from the in-kernel LAPICs.
    pub ioapic: Arc<Mutex<Ioapic>>,
    /// COM1, kept to flush its output at the end.
    pub serial: Arc<Mutex<Serial>>,
    /// Signalled when the guest empties COM1's receive FIFO (with `--serial stdio`, which may
    /// take stdin: see `crate::stdin`).
    pub serial_room: Option<Arc<EventFd>>,
    /// Time of the first boot-marker write.
    pub boot_time: Arc<OnceLock<Duration>>,
}

fn serial_writer(out: &SerialOutput) -> Result<Box<dyn Write + Send>, DeviceError> {
    Ok(match out {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
        SerialOutput::File(path) => {
            Box::new(LineWriter::new(File::create(path).map_err(|source| {
                DeviceError::SerialFile {
                    path: path.clone(),
                    source,
                }
            })?))
        }
        SerialOutput::Off => Box::new(std::io::sink()),
    })
}

/// Creates the IOAPIC (APIC id `ioapic_id`), COM1, the i8042, the boot marker, the debug-exit
/// port and the ACPI sleep registers.
pub(crate) fn create(
    ioapic_id: u8,
    msi: Arc<dyn MsiSink>,
    serial_out: &SerialOutput,
    start: Instant,
    sink: Arc<dyn ExitSink>,
) -> Result<Devices, DeviceError> {
    let ioapic = Arc::new(Mutex::new(Ioapic::new(ioapic_id, msi)));
    let irq = IrqLine::new(ioapic.clone(), COM1_IRQ);
    let out = serial_writer(serial_out)?;
    let (serial, serial_room) = if *serial_out == SerialOutput::Stdout {
        let room = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map(Arc::new)
            .map_err(DeviceError::SerialInput)?;
        (Serial::with_input(irq, out, room.clone()), Some(room))
    } else {
        (Serial::new(irq, out), None)
    };
    let serial = Arc::new(Mutex::new(serial));
    let marker = BootMarker::new(start);
    let boot_time = marker.first_write();
    let i8042 = Arc::new(Mutex::new(I8042::new(sink.clone())));

    let mut pio = Bus::new();
    pio.insert(serial.clone(), COM1_BASE, 8)?;
    pio.insert(i8042.clone(), I8042_BASE, 1)?;
    pio.insert(i8042, I8042_BASE + 4, 1)?;
    pio.insert(Arc::new(Mutex::new(marker)), BOOT_MARKER_PORT, 1)?;
    pio.insert(
        Arc::new(Mutex::new(DebugExit::new(sink.clone()))),
        DEBUG_EXIT_PORT,
        1,
    )?;
    pio.insert(
        Arc::new(Mutex::new(AcpiSleep::new(sink))),
        ACPI_SLEEP_PORT,
        2,
    )?;
    let mut mmio = Bus::new();
    mmio.insert(ioapic.clone(), IOAPIC_BASE, IOAPIC_SIZE)?;
    Ok(Devices {
        pio,
        mmio,
        ioapic,
        serial,
        serial_room,
        boot_time,
    })
}
