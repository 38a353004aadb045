//! The host's own limit for the block cases: random reads of `bs` bytes from the image file,
//! `qd` in flight through one io_uring on one thread, with no guest and no virtqueue in the
//! way. This is what a VMM's block backend could reach at best on this host and this file, so
//! `dev_bench` prints it next to Veil and QEMU (and `disk_floor` runs it alone).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use io_uring::{IoUring, opcode, types};

/// Buffer alignment O_DIRECT needs (one page covers every block size in use).
const ALIGN: usize = 4096;

/// What one floor run measured.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    /// Completed reads per second.
    pub iops: f64,
    /// Mean microseconds from submitting a read to reaping it (at qd 1: the read's latency).
    pub mean_us: f64,
}

/// `qd` aligned buffers of `bs` bytes, freed on drop.
struct Buffers {
    ptr: *mut u8,
    layout: Layout,
}

impl Buffers {
    fn new(qd: usize, bs: usize) -> Result<Self> {
        let layout = Layout::from_size_align(qd * bs, ALIGN).context("buffer layout")?;
        if layout.size() == 0 {
            bail!("no buffer space for qd {qd} x bs {bs}");
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            bail!("allocating {} bytes of read buffers", layout.size());
        }
        Ok(Self { ptr, layout })
    }
}

impl Drop for Buffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

/// A 64-bit linear congruential generator (Knuth's MMIX constants): cheap random block
/// numbers, from its high bits.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 16
    }
}

/// Reads `ops` random blocks of `bs` bytes from `path` (O_DIRECT if `direct`), keeping `qd` in
/// flight: every loop submits the refills and waits for at least one completion in one
/// `io_uring_enter`, then reaps every completion there is.
pub fn measure(path: &Path, direct: bool, qd: u32, bs: u64, ops: u64) -> Result<Floor> {
    let mut opts = OpenOptions::new();
    opts.read(true);
    if direct {
        opts.custom_flags(libc::O_DIRECT);
    }
    let file = opts
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading the size of {}", path.display()))?
        .len();
    let blocks = size / bs;
    if blocks == 0 || qd == 0 || ops == 0 {
        bail!(
            "{}: {size} bytes, qd {qd}, {ops} ops: nothing to read",
            path.display()
        );
    }
    let bs_usize = usize::try_from(bs).context("block size")?;
    let bufs = Buffers::new(qd as usize, bs_usize)?;
    let mut ring = IoUring::new(qd.next_power_of_two()).context("creating an io_uring")?;
    let fd = types::Fd(file.as_raw_fd());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut started = [Instant::now(); 1024];
    if qd as usize > started.len() {
        bail!("qd {qd} above {}", started.len());
    }
    let base = bufs.ptr;
    let mut push = |ring: &mut IoUring, slot: u32, started: &mut [Instant]| -> Result<()> {
        let offset = (rng.next() % blocks) * bs;
        // SAFETY: slot < qd, so the buffer lies within the allocation of qd * bs bytes.
        let buf = unsafe { base.add(slot as usize * bs_usize) };
        let entry = opcode::Read::new(fd, buf, bs as u32)
            .offset(offset)
            .build()
            .user_data(u64::from(slot));
        started[slot as usize] = Instant::now();
        // SAFETY: the buffer stays allocated while the read is in flight: the loop below reaps
        // every read before `bufs` is dropped, and leaks `bufs` if it cannot.
        unsafe { ring.submission().push(&entry) }.context("io_uring submission queue full")?;
        Ok(())
    };
    let mut submitted = 0u64;
    let mut done = 0u64;
    let mut latency_ns = 0u128;
    let t0 = Instant::now();
    for slot in 0..qd.min(ops as u32) {
        push(&mut ring, slot, &mut started)?;
        submitted += 1;
    }
    let mut failure = None;
    while done < submitted {
        if let Err(e) = ring.submit_and_wait(1) {
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // Reads may still be in flight into the buffers: never free them.
            std::mem::forget(bufs);
            return Err(anyhow::Error::new(e).context("io_uring_enter"));
        }
        let mut finished = [(0u32, 0i32); 1024];
        let mut n = 0;
        for c in ring.completion() {
            finished[n] = (c.user_data() as u32, c.result());
            n += 1;
        }
        for &(slot, res) in &finished[..n] {
            done += 1;
            latency_ns += started[slot as usize].elapsed().as_nanos();
            if res != bs as i32 && failure.is_none() {
                failure = Some(anyhow::anyhow!(
                    "{}: a read returned {res} (want {bs})",
                    path.display()
                ));
            }
            if failure.is_none() && submitted < ops {
                match push(&mut ring, slot, &mut started) {
                    Ok(()) => submitted += 1,
                    Err(e) => failure = Some(e),
                }
            }
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Floor {
        iops: done as f64 / secs,
        mean_us: latency_ns as f64 / 1e3 / done as f64,
    })
}
