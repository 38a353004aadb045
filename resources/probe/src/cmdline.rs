//! The probe's command line: `probe.run=<checks>`, `probe.loop=<n>`, `probe.buf=<MiB>`, the
//! virtio options (`probe.blk_write=`, `probe.blk_ro=`, `probe.blk_qd=`, `probe.blk_bs=`,
//! `probe.blk_pattern=`, `probe.blk_ops=`, `probe.net_frames=`, `probe.net_len=`,
//! `probe.vsock_port=`,
//! `probe.vsock_listen=`) and the loader's `virtio_mmio.device=` announcements.

/// Checks and workloads the probe knows, in the order it runs them.
pub const CHECKS: [&str; 18] = [
    "boot",
    "mem",
    "smp",
    "ring3",
    "loop",
    "membw",
    "memlat",
    "blk",
    "blkbench",
    "rng",
    "console",
    "net",
    "netbench",
    "vsock",
    "irq",
    "serial_in",
    "console_in",
    "pagestate",
];
/// Most `virtio_mmio.device=` tokens kept.
pub const MAX_MMIO: usize = 32;

/// One `virtio_mmio.device=<size>@<base>:<irq>` announcement.
#[derive(Clone, Copy, Debug, Default)]
pub struct MmioWindow {
    /// Base address of the register window.
    pub base: u64,
    /// Size of the window in bytes.
    pub size: u64,
    /// The interrupt line (an IOAPIC pin).
    pub irq: u32,
}
/// The `blkbench` access pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkPattern {
    /// Reads at random block-aligned offsets.
    RandRead,
    /// Writes block after block, wrapping at the end of the disk.
    SeqWrite,
}

/// What runs when the command line has no `probe.run=`.
pub const DEFAULT_RUN: [&str; 4] = ["boot", "mem", "smp", "ring3"];

/// The parsed command line.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    /// `run[i]` is set when `CHECKS[i]` was chosen.
    pub run: [bool; CHECKS.len()],
    /// Iterations of the `loop` workload.
    pub loop_iters: u64,
    /// Buffer size for `membw` and `memlat`, in bytes.
    pub buf_bytes: u64,
    /// `probe.blk_write=`: the 16-byte pattern `blk` writes over sector 1.
    pub blk_write: Option<[u8; 16]>,
    /// `probe.blk_ro=1`: `blk` expects its write to sector 1 to fail with IOERR.
    pub blk_ro: bool,
    /// `probe.blk_qd=`: `blkbench` requests in flight (1..=64).
    pub blk_qd: u16,
    /// `probe.blk_bs=`: `blkbench` bytes per request (a multiple of 512, at most 1 MiB).
    pub blk_bs: u64,
    /// `probe.blk_pattern=randread|seqwrite`.
    pub blk_pattern: BlkPattern,
    /// `probe.blk_ops=`: `blkbench` requests to complete.
    pub blk_ops: u64,
    /// `probe.net_frames=`: frames `netbench` sends.
    pub net_frames: u64,
    /// `probe.net_len=`: bytes per `netbench` frame (60..=1514, no FCS).
    pub net_len: u32,
    /// `probe.vsock_port=`: the host port `vsock` connects to.
    pub vsock_port: Option<u32>,
    /// `probe.vsock_listen=1`: `vsock` accepts one connection on guest port 1234.
    pub vsock_listen: bool,
    /// The virtio-mmio windows announced, `mmio[..nmmio]`.
    pub mmio: [MmioWindow; MAX_MMIO],
    /// Number of valid entries in `mmio`.
    pub nmmio: usize,
}

impl Config {
    /// Whether check `name` was chosen.
    pub fn runs(&self, name: &str) -> bool {
        CHECKS
            .iter()
            .position(|c| *c == name)
            .is_some_and(|i| self.run[i])
    }

    /// The virtio-mmio windows announced on the command line.
    pub fn mmio_windows(&self) -> &[MmioWindow] {
        &self.mmio[..self.nmmio]
    }
}

/// Why the command line was rejected.
#[derive(Debug)]
pub enum Error<'a> {
    /// A token the probe does not know.
    UnknownToken(&'a str),
    /// A `probe.run=` entry that names no check.
    UnknownCheck(&'a str),
    /// A `probe.run=` that names no check.
    NoChecks(&'a str),
    /// A number that does not parse or is out of range.
    BadNumber(&'a str),
    /// A value of the wrong form (not hex, wrong length, not 0 or 1).
    BadValue(&'a str),
    /// A `virtio_mmio.device=` that is not `<size>@<base>:<irq>`, or too many of them.
    BadMmio(&'a str),
}

impl core::fmt::Display for Error<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::UnknownToken(t) => write!(f, "unknown token '{t}'"),
            Error::UnknownCheck(t) => write!(f, "unknown check '{t}' in probe.run"),
            Error::NoChecks(t) => write!(f, "'{t}' names no check"),
            Error::BadNumber(t) => write!(f, "bad number in '{t}'"),
            Error::BadValue(t) => write!(f, "bad value in '{t}'"),
            Error::BadMmio(t) => write!(f, "bad virtio_mmio.device in '{t}'"),
        }
    }
}

fn number(value: &str, min: u64, max: u64) -> Option<u64> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
}

/// A number as Linux's `memparse` reads it: decimal or `0x` hex, with an optional K/M/G suffix.
fn mem_number(v: &str) -> Option<u64> {
    let (digits, shift) = match v.as_bytes().last()? {
        b'K' | b'k' => (&v[..v.len() - 1], 10),
        b'M' | b'm' => (&v[..v.len() - 1], 20),
        b'G' | b'g' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n = match digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None => digits.parse::<u64>().ok()?,
    };
    n.checked_mul(1 << shift)
}

/// `<size>@<base>:<irq>[:<id>]`.
fn mmio_window(v: &str) -> Option<MmioWindow> {
    let (size, rest) = v.split_once('@')?;
    let (base, rest) = rest.split_once(':')?;
    let irq = rest.split(':').next()?;
    let w = MmioWindow {
        base: mem_number(base)?,
        size: mem_number(size)?,
        irq: irq.parse().ok()?,
    };
    (w.size >= 0x200 && w.base.is_multiple_of(4) && w.base.checked_add(w.size).is_some())
        .then_some(w)
}

/// 32 hex digits: 16 bytes.
fn hex16(v: &str) -> Option<[u8; 16]> {
    let b = v.as_bytes();
    if b.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = (b[2 * i] as char).to_digit(16)?;
        let lo = (b[2 * i + 1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn flag(v: &str) -> Option<bool> {
    match v {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// Parses whitespace-separated tokens.
pub fn parse(line: &str) -> Result<Config, Error<'_>> {
    let mut cfg = Config {
        run: [false; CHECKS.len()],
        loop_iters: 100_000_000,
        buf_bytes: 64 << 20,
        blk_write: None,
        blk_ro: false,
        blk_qd: 1,
        blk_bs: 4096,
        blk_pattern: BlkPattern::RandRead,
        blk_ops: 10_000,
        net_frames: 100_000,
        net_len: 1514,
        vsock_port: None,
        vsock_listen: false,
        mmio: [MmioWindow::default(); MAX_MMIO],
        nmmio: 0,
    };
    let mut chose = false;
    for token in line.split_ascii_whitespace() {
        if let Some(list) = token.strip_prefix("probe.run=") {
            chose = true;
            if list.split(',').all(str::is_empty) {
                return Err(Error::NoChecks(token));
            }
            for name in list.split(',').filter(|n| !n.is_empty()) {
                let i = CHECKS
                    .iter()
                    .position(|c| *c == name)
                    .ok_or(Error::UnknownCheck(name))?;
                cfg.run[i] = true;
            }
        } else if let Some(v) = token.strip_prefix("probe.loop=") {
            cfg.loop_iters = number(v, 1, 1 << 40).ok_or(Error::BadNumber(token))?;
        } else if let Some(v) = token.strip_prefix("probe.buf=") {
            let mib = number(v, 1, 1 << 16).ok_or(Error::BadNumber(token))?;
            cfg.buf_bytes = mib << 20;
        } else if let Some(v) = token.strip_prefix("probe.blk_write=") {
            cfg.blk_write = Some(hex16(v).ok_or(Error::BadValue(token))?);
        } else if let Some(v) = token.strip_prefix("probe.blk_ro=") {
            cfg.blk_ro = flag(v).ok_or(Error::BadValue(token))?;
        } else if let Some(v) = token.strip_prefix("probe.blk_qd=") {
            cfg.blk_qd = number(v, 1, 64).ok_or(Error::BadNumber(token))? as u16;
        } else if let Some(v) = token.strip_prefix("probe.blk_bs=") {
            cfg.blk_bs = number(v, 512, 1 << 20)
                .filter(|n| n.is_multiple_of(512))
                .ok_or(Error::BadNumber(token))?;
        } else if let Some(v) = token.strip_prefix("probe.blk_pattern=") {
            cfg.blk_pattern = match v {
                "randread" => BlkPattern::RandRead,
                "seqwrite" => BlkPattern::SeqWrite,
                _ => return Err(Error::BadValue(token)),
            };
        } else if let Some(v) = token.strip_prefix("probe.blk_ops=") {
            cfg.blk_ops = number(v, 1, 1 << 40).ok_or(Error::BadNumber(token))?;
        } else if let Some(v) = token.strip_prefix("probe.net_frames=") {
            cfg.net_frames = number(v, 1, 1 << 40).ok_or(Error::BadNumber(token))?;
        } else if let Some(v) = token.strip_prefix("probe.net_len=") {
            cfg.net_len = number(v, 60, 1514).ok_or(Error::BadNumber(token))? as u32;
        } else if let Some(v) = token.strip_prefix("probe.vsock_port=") {
            let port = number(v, 0, u64::from(u32::MAX)).ok_or(Error::BadNumber(token))?;
            cfg.vsock_port = Some(port as u32);
        } else if let Some(v) = token.strip_prefix("probe.vsock_listen=") {
            cfg.vsock_listen = flag(v).ok_or(Error::BadValue(token))?;
        } else if let Some(v) = token.strip_prefix("virtio_mmio.device=") {
            let w = mmio_window(v).ok_or(Error::BadMmio(token))?;
            if cfg.nmmio == MAX_MMIO {
                return Err(Error::BadMmio(token));
            }
            cfg.mmio[cfg.nmmio] = w;
            cfg.nmmio += 1;
        } else {
            return Err(Error::UnknownToken(token));
        }
    }
    if !chose {
        for name in DEFAULT_RUN {
            if let Some(i) = CHECKS.iter().position(|c| *c == name) {
                cfg.run[i] = true;
            }
        }
    }
    Ok(cfg)
}
