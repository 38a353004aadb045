//! Virtio drivers for the probe, all in ring 3: the two transports (modern virtio-pci found
//! through PCI configuration space, virtio-mmio version 2 windows announced on the command
//! line), split virtqueues polled through their used rings, and one check per device type.
//! `irq` proves the interrupt paths (MSI-X and IOAPIC) with tiny CPL0 handlers.

pub mod blk;
pub mod blkbench;
pub mod console;
pub mod irq;
pub mod mmio;
pub mod net;
pub mod netbench;
pub mod pci;
pub mod rng;
pub mod virtqueue;
pub mod vsock;

use crate::checks::Why;
use crate::cmdline::Config;
use crate::info;
use virtqueue::Virtqueue;

/// Device types (virtio 1.2, 5).
pub mod kind {
    /// virtio-net.
    pub const NET: u32 = 1;
    /// virtio-blk.
    pub const BLK: u32 = 2;
    /// virtio-console.
    pub const CONSOLE: u32 = 3;
    /// virtio-rng (entropy).
    pub const RNG: u32 = 4;
    /// virtio-vsock.
    pub const VSOCK: u32 = 19;

    /// The name used in output: `virtio-<name>`.
    pub fn name(kind: u32) -> &'static str {
        match kind {
            NET => "net",
            BLK => "blk",
            CONSOLE => "console",
            RNG => "rng",
            VSOCK => "vsock",
            _ => "other",
        }
    }
}

/// Device status bits.
mod status {
    pub const ACKNOWLEDGE: u8 = 1;
    pub const DRIVER: u8 = 2;
    pub const DRIVER_OK: u8 = 4;
    pub const FEATURES_OK: u8 = 8;
    pub const NEEDS_RESET: u8 = 0x40;
    pub const FAILED: u8 = 0x80;
}

/// VIRTIO_F_VERSION_1: the only feature every driver here needs.
pub const F_VERSION_1: u64 = 1 << 32;
/// VIRTIO_F_ACCESS_PLATFORM: the device reaches memory through the platform's translation (the
/// memory a confidential guest shares). Accepted when offered: the probe's buffers are
/// guest-physical addresses in memory the host can reach.
pub const F_ACCESS_PLATFORM: u64 = 1 << 33;
/// "No MSI-X vector" for a queue or the configuration.
pub const NO_VECTOR: u16 = 0xffff;
/// How long a device gets to complete a request before a check gives up.
pub const REQUEST_MS: u64 = 5000;

/// Device register access (MMIO windows and BARs are identity-mapped, uncached, user pages).
pub mod reg {
    /// Reads a 32-bit register.
    pub fn r32(addr: u64) -> u32 {
        // SAFETY: callers pass addresses inside a device window they found (PCI BAR or
        // virtio-mmio window), identity-mapped; device reads have no memory side effects here.
        unsafe { (addr as *const u32).read_volatile() }
    }
    /// Reads a 16-bit register.
    pub fn r16(addr: u64) -> u16 {
        // SAFETY: as in `r32`.
        unsafe { (addr as *const u16).read_volatile() }
    }
    /// Reads an 8-bit register.
    pub fn r8(addr: u64) -> u8 {
        // SAFETY: as in `r32`.
        unsafe { (addr as *const u8).read_volatile() }
    }
    /// Writes a 32-bit register.
    pub fn w32(addr: u64, v: u32) {
        // SAFETY: as in `r32`; device registers, not memory Rust knows about.
        unsafe { (addr as *mut u32).write_volatile(v) }
    }
    /// Writes a 16-bit register.
    pub fn w16(addr: u64, v: u16) {
        // SAFETY: as in `w32`.
        unsafe { (addr as *mut u16).write_volatile(v) }
    }
    /// Writes an 8-bit register.
    pub fn w8(addr: u64, v: u8) {
        // SAFETY: as in `w32`.
        unsafe { (addr as *mut u8).write_volatile(v) }
    }
}

/// Zeroed, page-aligned memory the devices may read and write (guest-physical = virtual).
pub fn dma(len: u64) -> Result<u64, Why> {
    // SAFETY: only the BSP allocates (the APs halt once they checked in).
    unsafe { crate::heap::alloc_zeroed(crate::BOOT.get_ref(), len, 4096) }
        .ok_or(Why::At("no RAM for device buffers of bytes:", len))
}

/// A byte slice over DMA memory at `addr`.
///
/// # Safety
/// `[addr, addr + len)` came from [`dma`] and no device writes it while the slice lives.
pub unsafe fn bytes<'a>(addr: u64, len: usize) -> &'a mut [u8] {
    // SAFETY: the caller's contract.
    unsafe { core::slice::from_raw_parts_mut(addr as *mut u8, len) }
}

/// A virtio device behind one of the two transports.
pub enum Transport {
    /// Modern virtio-pci function.
    Pci(pci::PciDev),
    /// virtio-mmio version 2 window.
    Mmio(mmio::MmioDev),
}

impl Transport {
    /// The virtio device type.
    pub fn kind(&self) -> u32 {
        match self {
            Transport::Pci(d) => d.kind,
            Transport::Mmio(d) => d.kind,
        }
    }

    /// `pci` or `mmio`.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Pci(_) => "pci",
            Transport::Mmio(_) => "mmio",
        }
    }

    fn status(&self) -> u8 {
        match self {
            Transport::Pci(d) => d.status(),
            Transport::Mmio(d) => d.status(),
        }
    }

    fn set_status(&self, s: u8) {
        match self {
            Transport::Pci(d) => d.set_status(s),
            Transport::Mmio(d) => d.set_status(s),
        }
    }

    fn device_features(&self) -> u64 {
        match self {
            Transport::Pci(d) => d.device_features(),
            Transport::Mmio(d) => d.device_features(),
        }
    }

    fn set_driver_features(&self, f: u64) {
        match self {
            Transport::Pci(d) => d.set_driver_features(f),
            Transport::Mmio(d) => d.set_driver_features(f),
        }
    }

    fn queue_max(&self, q: u16) -> u16 {
        match self {
            Transport::Pci(d) => d.queue_max(q),
            Transport::Mmio(d) => d.queue_max(q),
        }
    }

    fn queue_setup(&self, vq: &mut Virtqueue, vector: u16) -> Result<(), Why> {
        match self {
            Transport::Pci(d) => d.queue_setup(vq, vector),
            Transport::Mmio(d) => d.queue_setup(vq),
        }
    }

    /// Tells the device that `vq` has new buffers.
    pub fn notify(&self, vq: &Virtqueue) {
        match self {
            Transport::Pci(_) => reg::w16(vq.notify_addr, vq.index),
            Transport::Mmio(d) => d.notify(vq.index),
        }
    }

    fn config8(&self, off: u64) -> u8 {
        match self {
            Transport::Pci(d) => d.config8(off),
            Transport::Mmio(d) => d.config8(off),
        }
    }

    fn generation(&self) -> u32 {
        match self {
            Transport::Pci(d) => d.generation(),
            Transport::Mmio(d) => d.generation(),
        }
    }
}

/// Finds the first device of type `kind`: virtio-pci functions first, then the virtio-mmio
/// windows of the command line.
pub fn find(kind: u32, cfg: &Config) -> Result<Option<Transport>, Why> {
    if let Some(d) = pci::find(&[kind])? {
        return Ok(Some(Transport::Pci(d)));
    }
    Ok(mmio::find(&[kind], cfg)?.map(Transport::Mmio))
}

/// Finds the device of type `kind` for check `check`, or fails with
/// `no virtio-<type> device`; prints `PROBE info <check>_transport=pci|mmio`.
pub fn find_for(check: &str, kind: u32, cfg: &Config) -> Result<Transport, Why> {
    let Some(t) = find(kind, cfg)? else {
        crate::println!("PROBE FAIL {check}: no virtio-{} device", kind::name(kind));
        return Err(Why::Reported);
    };
    info!(Key(check, "_transport"), "{}", t.name());
    Ok(t)
}

/// A `PROBE info` key made of two parts.
pub struct Key<'a>(pub &'a str, pub &'a str);

impl core::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{}", self.0, self.1)
    }
}

/// A device being driven: reset, features negotiated, queues set up, DRIVER_OK.
pub struct Device {
    /// How to reach it.
    pub t: Transport,
    /// The features both sides accepted.
    pub features: u64,
}

impl Device {
    /// Resets the device and negotiates VERSION_1 (and ACCESS_PLATFORM if offered) plus those
    /// of `wanted` the device offers (status ACKNOWLEDGE, DRIVER, FEATURES_OK); prints
    /// `PROBE info <type>_features=<hex>` and `<type>_access_platform=0|1`.
    pub fn init(t: Transport, wanted: u64) -> Result<Self, Why> {
        t.set_status(0);
        let dl = crate::tsc::Deadline::after_ms(1000);
        while t.status() != 0 {
            if dl.expired() {
                return Err(Why::At(
                    "the device did not reset; status",
                    t.status().into(),
                ));
            }
            core::hint::spin_loop();
        }
        t.set_status(status::ACKNOWLEDGE);
        t.set_status(status::ACKNOWLEDGE | status::DRIVER);
        let offered = t.device_features();
        if offered & F_VERSION_1 == 0 {
            t.set_status(status::FAILED);
            return Err(Why::At(
                "the device does not offer VERSION_1; features",
                offered,
            ));
        }
        let features = offered & (wanted | F_VERSION_1 | F_ACCESS_PLATFORM);
        t.set_driver_features(features);
        t.set_status(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK);
        if t.status() & status::FEATURES_OK == 0 {
            t.set_status(status::FAILED);
            return Err(Why::At(
                "the device refused FEATURES_OK for features",
                features,
            ));
        }
        let name = kind::name(t.kind());
        info!(Key(name, "_features"), "{:#x}", features);
        info!(
            Key(name, "_access_platform"),
            "{}",
            u8::from(features & F_ACCESS_PLATFORM != 0)
        );
        Ok(Self { t, features })
    }

    /// Sets up queue `index` with up to `virtqueue::MAX_SIZE` entries and MSI-X vector `vector`
    /// (PCI; `NO_VECTOR` for none).
    pub fn queue(&self, index: u16, vector: u16) -> Result<Virtqueue, Why> {
        self.queue_up_to(index, vector, virtqueue::MAX_SIZE)
    }

    /// Sets up queue `index` with up to `cap` entries (at most `virtqueue::LIMIT`).
    pub fn queue_up_to(&self, index: u16, vector: u16, cap: u16) -> Result<Virtqueue, Why> {
        let max = self.t.queue_max(index);
        if max == 0 {
            return Err(Why::At("the device has no queue", index.into()));
        }
        let mut vq = Virtqueue::new(index, max.min(cap))?;
        self.t.queue_setup(&mut vq, vector)?;
        Ok(vq)
    }

    /// Sets DRIVER_OK and checks the device accepted it.
    pub fn ready(&self) -> Result<(), Why> {
        let s = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK;
        self.t.set_status(s);
        let now = self.t.status();
        if now & status::NEEDS_RESET != 0 || now & status::DRIVER_OK == 0 {
            return Err(Why::At(
                "the device did not accept DRIVER_OK; status",
                now.into(),
            ));
        }
        Ok(())
    }

    /// Whether the device flagged DEVICE_NEEDS_RESET.
    pub fn needs_reset(&self) -> bool {
        self.t.status() & status::NEEDS_RESET != 0
    }

    /// Reads `out.len()` bytes of device configuration at `off`, retrying while the
    /// configuration generation changes.
    pub fn config(&self, off: u64, out: &mut [u8]) {
        for _ in 0..16 {
            let g = self.t.generation();
            for (i, b) in out.iter_mut().enumerate() {
                *b = self.t.config8(off + i as u64);
            }
            if self.t.generation() == g {
                return;
            }
        }
    }

    /// Resets the device (it stops using the rings).
    pub fn reset(&self) {
        self.t.set_status(0);
    }

    /// Offers `bufs` on `vq`, notifies, and waits (bounded) for the device to return them.
    /// Returns the number of bytes the device wrote.
    pub fn transact(&self, vq: &mut Virtqueue, bufs: &[virtqueue::Buf]) -> Result<u32, Why> {
        let head = vq.add(bufs)?;
        self.t.notify(vq);
        let dl = crate::tsc::Deadline::after_ms(REQUEST_MS);
        loop {
            if let Some((id, len)) = vq.poll()? {
                if id != head {
                    return Err(Why::At(
                        "the device returned an unexpected chain",
                        id.into(),
                    ));
                }
                return Ok(len);
            }
            if dl.expired() {
                if self.needs_reset() {
                    return Err(Why::Text("the device set DEVICE_NEEDS_RESET"));
                }
                return Err(Why::At(
                    "no completion within 5 s on queue",
                    vq.index.into(),
                ));
            }
            core::hint::spin_loop();
        }
    }
}

impl Device {
    /// Average TSC cycles of `n` round trips of the chain `bufs` (offer, notify, poll).
    pub fn time_requests(
        &self,
        vq: &mut Virtqueue,
        bufs: &[virtqueue::Buf],
        n: u64,
    ) -> Result<u64, Why> {
        let start = crate::tsc::now();
        for _ in 0..n {
            self.transact(vq, bufs)?;
        }
        Ok(crate::tsc::now().wrapping_sub(start) / n.max(1))
    }
}

/// Requests timed for the `*_read_cycles` figures.
pub const TIMED_REQUESTS: u64 = 64;

/// Lower-case hex of `b`.
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
