//! The block device fed crafted rings through its real worker and a real image file.

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress};

use super::request::{req_type, status};
use super::*;
use crate::virtio::GuestMem;
use crate::virtio::device::DeviceHealth;
use crate::virtio::testing::{CountingInterrupt, TestRing, guest_mem};

/// A temporary image file, removed on drop.
struct Image(PathBuf);

impl Image {
    fn new(tag: &str, bytes: &[u8]) -> Self {
        let p = std::env::temp_dir().join(format!(
            "veil-blk-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::write(&p, bytes).unwrap();
        Self(p)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Rig {
    mem: GuestMem,
    ring: TestRing,
    irq: Arc<CountingInterrupt>,
    health: Arc<DeviceHealth>,
    worker: BlockWorker,
    dev: Block,
    _img: Image,
}

const HDR: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STATUS: u64 = 0x30000;

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 512) as u8).collect()
}

thread_local! {
    static ENGINE: std::cell::Cell<Engine> = const { std::cell::Cell::new(Engine::Sync) };
    /// The rig serves through [`BlockWorker::poll`] instead of `process_queue`.
    static POLLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Feature bits the rig's driver does not accept.
    static REFUSED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Runs a test body once per backend.
macro_rules! both_engines {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn sync() {
                super::ENGINE.with(|e| e.set(super::Engine::Sync));
                super::$body();
            }
            #[test]
            fn io_uring() {
                super::ENGINE.with(|e| e.set(super::Engine::IoUring));
                super::$body();
            }
        }
    };
}

/// Like `both_engines!`, plus both engines served through the polling path.
macro_rules! all_modes {
    (@test $test:ident, $body:ident, $engine:ident, $polled:expr) => {
        #[test]
        fn $test() {
            super::ENGINE.with(|e| e.set(super::Engine::$engine));
            super::POLLED.with(|p| p.set($polled));
            super::$body();
        }
    };
    ($name:ident, $body:ident) => {
        mod $name {
            all_modes!(@test sync, $body, Sync, false);
            all_modes!(@test io_uring, $body, IoUring, false);
            all_modes!(@test sync_polled, $body, Sync, true);
            all_modes!(@test io_uring_polled, $body, IoUring, true);
        }
    };
}

fn rig_with(tag: &str, bytes: &[u8], tweak: impl FnOnce(&mut BlockConfig)) -> Rig {
    let engine = ENGINE.with(|e| e.get());
    let img = Image::new(&format!("{tag}-{engine:?}"), bytes);
    let mut cfg = BlockConfig::new(&img.0);
    cfg.id = Some("veil-test-disk".into());
    cfg.engine = engine;
    tweak(&mut cfg);
    let mut dev = Block::new(&cfg).unwrap();
    if POLLED.with(|p| p.get()) {
        dev.set_poll_max(std::time::Duration::from_millis(1));
    }
    let mem = guest_mem(0x10_0000);
    let ring = TestRing::new(&mem, 0, 16);
    let (active, _) = ring.active(0);
    let irq = CountingInterrupt::new();
    let features = crate::virtio::VirtioDevice::features(&dev) & !REFUSED.with(|r| r.get());
    let params = irq.activate_params(&mem, Vec::new(), features);
    let health = params.health.clone();
    let worker = dev.worker_for(&params, active);
    assert_eq!(
        worker.uses_uring(),
        engine == Engine::IoUring,
        "backend as configured"
    );
    Rig {
        mem,
        ring,
        irq,
        health,
        worker,
        dev,
        _img: img,
    }
}

fn rig(tag: &str) -> Rig {
    rig_with(tag, &pattern(64 * 1024), |_| {})
}

impl Rig {
    fn header(&self, at: u64, kind: u32, sector: u64) {
        self.mem.write_obj(kind, GuestAddress(at)).unwrap();
        self.mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        self.mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn status(&self, at: u64) -> u8 {
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    /// Submits one chain and runs the worker; returns (status byte, used length).
    fn run(&mut self, bufs: &[(u64, u32, bool)]) -> (u8, u32) {
        self.mem.write_obj(0xeeu8, GuestAddress(STATUS)).unwrap();
        let before = self.ring.used_idx();
        let head = self.ring.add_chain(0, bufs);
        self.pump(before.wrapping_add(1));
        let (id, len) = self.ring.used_elem(before);
        assert_eq!(id, u32::from(head));
        (self.status(STATUS), len)
    }

    /// Runs the worker until the used index reaches `target` (waiting for io_uring).
    fn pump(&mut self, target: u16) {
        if POLLED.with(|p| p.get()) {
            assert!(self.worker.poll(), "the worker polls");
        } else {
            self.worker.process_queue();
        }
        let start = std::time::Instant::now();
        while self.ring.used_idx() != target {
            assert!(start.elapsed().as_secs() < 10, "requests never completed");
            let Some(fd) = self.worker.completion_event().map(|e| e.as_raw_fd()) else {
                panic!("synchronous backend left requests unanswered");
            };
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: polls one descriptor we own, with a timeout.
            unsafe { libc::poll(&mut pfd, 1, 1000) };
            self.worker.process_completions();
        }
    }

    fn file(&self) -> Vec<u8> {
        std::fs::read(&self._img.0).unwrap()
    }
}

fn reads_into_guest_memory_body() {
    let mut r = rig("read");
    r.header(HDR, req_type::IN, 2);
    let (st, len) = r.run(&[
        (HDR, 16, false),
        (DATA, 512, true),
        (DATA + 0x1000, 1024, true),
        (STATUS, 1, true),
    ]);
    assert_eq!((st, len), (status::OK, 1537));
    let want = pattern(64 * 1024);
    let mut got = vec![0u8; 512];
    r.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, want[1024..1536]);
    let mut got = vec![0u8; 1024];
    r.mem
        .read_slice(&mut got, GuestAddress(DATA + 0x1000))
        .unwrap();
    assert_eq!(got, want[1536..2560]);
    assert_eq!(BlockMetrics::get(&r.dev.metrics().read_bytes), 1536);
}

fn writes_and_flushes_body() {
    let mut r = rig("write");
    r.header(HDR, req_type::OUT, 4);
    r.mem
        .write_slice(&[0x5a; 1024], GuestAddress(DATA))
        .unwrap();
    let (st, len) = r.run(&[(HDR, 16, false), (DATA, 1024, false), (STATUS, 1, true)]);
    assert_eq!((st, len), (status::OK, 1));
    let f = r.file();
    assert!(f[2048..3072].iter().all(|&b| b == 0x5a));
    assert_eq!(f[..2048], pattern(64 * 1024)[..2048]);
    r.header(HDR, req_type::FLUSH, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (STATUS, 1, true)]),
        (status::OK, 1)
    );
    assert_eq!(BlockMetrics::get(&r.dev.metrics().flushes), 1);
}

fn header_and_data_may_share_a_buffer_body() {
    // Some drivers put the header and data in one readable buffer.
    let mut r = rig("shared");
    r.header(HDR, req_type::OUT, 0);
    r.mem
        .write_slice(&[0x11; 512], GuestAddress(HDR + 16))
        .unwrap();
    let (st, _) = r.run(&[(HDR, 16 + 512, false), (STATUS, 1, true)]);
    assert_eq!(st, status::OK);
    assert!(r.file()[..512].iter().all(|&b| b == 0x11));
}

fn get_id_body() {
    let mut r = rig("id");
    r.header(HDR, req_type::GET_ID, 0);
    let (st, len) = r.run(&[(HDR, 16, false), (DATA, 20, true), (STATUS, 1, true)]);
    assert_eq!((st, len), (status::OK, 21));
    let mut id = [0u8; 20];
    r.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..14], b"veil-test-disk");
    assert!(id[14..].iter().all(|&b| b == 0));
}

fn discard_seg(r: &Rig, sector: u64, num: u32, flags: u32) {
    r.mem.write_obj(sector, GuestAddress(DATA)).unwrap();
    r.mem.write_obj(num, GuestAddress(DATA + 8)).unwrap();
    r.mem.write_obj(flags, GuestAddress(DATA + 12)).unwrap();
}

fn discard_punches_holes_and_write_zeroes_zeroes_body() {
    let size = 1 << 20;
    let mut r = rig_with("discard", &vec![0xaa; size], |_| {});
    let blocks_before = std::fs::metadata(&r._img.0).unwrap().blocks();
    r.header(HDR, req_type::DISCARD, 0);
    discard_seg(&r, 0, 1024, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .0,
        status::OK
    );
    let f = r.file();
    assert_eq!(f.len(), size, "discard must keep the size");
    assert!(f[..512 * 1024].iter().all(|&b| b == 0));
    assert!(f[512 * 1024..].iter().all(|&b| b == 0xaa));
    let blocks_after = std::fs::metadata(&r._img.0).unwrap().blocks();
    assert!(
        blocks_after < blocks_before,
        "no hole: {blocks_before} -> {blocks_after}"
    );
    for unmap in [0, 1] {
        r.header(HDR, req_type::WRITE_ZEROES, 0);
        discard_seg(&r, 1024 + u64::from(unmap) * 8, 8, unmap);
        assert_eq!(
            r.run(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
                .0,
            status::OK
        );
    }
    let f = r.file();
    assert!(f[512 * 1024..512 * 1024 + 8192].iter().all(|&b| b == 0));
    assert!(f[512 * 1024 + 8192..].iter().all(|&b| b == 0xaa));
}

fn read_only_disks_refuse_writes_body() {
    let mut r = rig_with("ro", &pattern(8192), |c| c.read_only = true);
    let f = crate::virtio::VirtioDevice::features(&r.dev);
    assert_ne!(f & (1 << features::RO), 0);
    assert_eq!(f & (1 << features::DISCARD), 0);
    r.header(HDR, req_type::OUT, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)]),
        (status::IOERR, 1)
    );
    r.header(HDR, req_type::WRITE_ZEROES, 0);
    discard_seg(&r, 0, 1, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .0,
        status::IOERR
    );
    assert_eq!(r.file(), pattern(8192));
    r.header(HDR, req_type::IN, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)])
            .0,
        status::OK
    );
}

fn hostile_requests_get_error_statuses_body() {
    let mut r = rig("hostile");
    let cap = 64 * 1024 / 512;
    // Past the end, at the end, and a sector number that overflows.
    for sector in [cap, cap - 1, u64::MAX - 1] {
        r.header(HDR, req_type::IN, sector);
        assert_eq!(
            r.run(&[(HDR, 16, false), (DATA, 1024, true), (STATUS, 1, true)]),
            (status::IOERR, 1),
            "sector {sector}"
        );
    }
    // Data not a multiple of the sector size, and no data at all.
    r.header(HDR, req_type::IN, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 100, true), (STATUS, 1, true)])
            .0,
        status::IOERR
    );
    assert_eq!(
        r.run(&[(HDR, 16, false), (STATUS, 1, true)]).0,
        status::IOERR
    );
    // A read whose data buffer is readable (device would have to write a read-only buffer).
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 512, false), (STATUS, 1, true)])
            .0,
        status::IOERR
    );
    // A write whose data buffer is writable.
    r.header(HDR, req_type::OUT, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, true)])
            .0,
        status::IOERR
    );
    // The header in a write-only buffer.
    assert_eq!(
        r.run(&[(HDR, 16, true), (STATUS, 1, true)]).0,
        status::IOERR
    );
    // A header split over two buffers is fine; a short one is not.
    r.header(HDR, req_type::FLUSH, 0);
    assert_eq!(
        r.run(&[(HDR, 8, false), (HDR + 8, 8, false), (STATUS, 1, true)])
            .0,
        status::OK
    );
    assert_eq!(
        r.run(&[(HDR, 8, false), (STATUS, 1, true)]).0,
        status::IOERR
    );
    // Unknown request type.
    r.header(HDR, 0x77, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (STATUS, 1, true)]).0,
        status::UNSUPP
    );
    // Discard: two segments (max is one), a partial segment, unknown flags, past the end.
    r.header(HDR, req_type::DISCARD, 0);
    discard_seg(&r, 0, 1, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 32, false), (STATUS, 1, true)])
            .0,
        status::IOERR
    );
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 8, false), (STATUS, 1, true)])
            .0,
        status::IOERR
    );
    discard_seg(&r, 0, 1, 1);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .0,
        status::UNSUPP
    );
    discard_seg(&r, cap, 1, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .0,
        status::IOERR
    );
    discard_seg(&r, 0, 0, 0);
    assert_eq!(
        r.run(&[(HDR, 16, false), (DATA, 16, false), (STATUS, 1, true)])
            .0,
        status::IOERR
    );
    // No writable byte for the status: completed with nothing written.
    r.header(HDR, req_type::IN, 0);
    assert_eq!(r.run(&[(HDR, 16, false)]).1, 0);
    // The image is untouched and the device healthy.
    assert_eq!(r.file(), pattern(64 * 1024));
    assert!(!r.health.needs_reset());
    assert!(BlockMetrics::get(&r.dev.metrics().errors) >= 14);
}

fn a_batch_gets_one_interrupt_body() {
    let mut r = rig("batch");
    for i in 0..5u16 {
        let h = HDR + u64::from(i) * 0x100;
        r.header(h, req_type::IN, u64::from(i));
        r.ring.add_chain(
            i * 3,
            &[
                (h, 16, false),
                (DATA + u64::from(i) * 0x1000, 512, true),
                (STATUS + u64::from(i), 1, true),
            ],
        );
    }
    assert_eq!(r.worker.process_queue(), 5);
    if r.worker.uses_uring() {
        // Reads that finished while being submitted (page-cache hits) were answered in the
        // first batch; the rest finish later and are reaped as a second one.
        std::thread::sleep(std::time::Duration::from_millis(100));
        r.worker.process_completions();
    }
    assert_eq!(r.ring.used_idx(), 5);
    let batches = BlockMetrics::get(&r.dev.metrics().batches);
    assert!(batches >= 1 && batches <= if r.worker.uses_uring() { 2 } else { 1 });
    assert_eq!(
        r.irq.queue_signals() as u64,
        batches,
        "one interrupt per batch"
    );
    for i in 0..5u16 {
        assert_eq!(r.status(STATUS + u64::from(i)), status::OK);
        let mut got = vec![0u8; 512];
        r.mem
            .read_slice(&mut got, GuestAddress(DATA + u64::from(i) * 0x1000))
            .unwrap();
        let s = usize::from(i) * 512;
        assert_eq!(got, pattern(64 * 1024)[s..s + 512]);
    }
}

#[test]
fn config_space_and_bad_configs() {
    let r = rig_with("cfg", &pattern(4096 + 100), |c| c.num_queues = 2);
    let dev: &dyn crate::virtio::VirtioDevice = &r.dev;
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(
        u64::from_le_bytes(cap),
        8,
        "capacity rounds down to whole sectors"
    );
    let mut nq = [0u8; 2];
    dev.read_config(34, &mut nq);
    assert_eq!(u16::from_le_bytes(nq), 2);
    assert_eq!(dev.queue_max_sizes().len(), 2);
    let mut past = [0xffu8; 4];
    dev.read_config(0x1000, &mut past);
    assert_eq!(past, [0; 4]);
    let missing = BlockConfig::new("/nonexistent/veil.img");
    let e = Block::new(&missing).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/veil.img"), "{e}");
    let tiny = Image::new("tiny", &[0u8; 100]);
    assert!(matches!(
        Block::new(&BlockConfig::new(&tiny.0)),
        Err(BlockError::Disk(DiskError::TooSmall { .. }))
    ));
    let mut c = BlockConfig::new(&tiny.0);
    c.num_queues = 0;
    assert!(matches!(Block::new(&c), Err(BlockError::NumQueues(0))));
}
all_modes!(reads_into_guest_memory, reads_into_guest_memory_body);
all_modes!(writes_and_flushes, writes_and_flushes_body);
all_modes!(
    header_and_data_may_share_a_buffer,
    header_and_data_may_share_a_buffer_body
);
all_modes!(get_id, get_id_body);
all_modes!(
    discard_punches_holes_and_write_zeroes_zeroes,
    discard_punches_holes_and_write_zeroes_zeroes_body
);
all_modes!(
    read_only_disks_refuse_writes,
    read_only_disks_refuse_writes_body
);
all_modes!(
    hostile_requests_get_error_statuses,
    hostile_requests_get_error_statuses_body
);
both_engines!(a_batch_gets_one_interrupt, a_batch_gets_one_interrupt_body);

mod poll;
mod transport;

fn o_direct_reads_and_writes_body() {
    let probe = Image::new("direct-probe", &[0u8; 4096]);
    if let Err(e) = Disk::open(&probe.0, false, true, None) {
        eprintln!(
            "SKIPPED: O_DIRECT is not supported for {}: {e}",
            probe.0.display()
        );
        return;
    }
    let mut r = rig_with("direct", &pattern(64 * 1024), |c| c.direct = true);
    r.header(HDR, req_type::IN, 8);
    let (st, _) = r.run(&[(HDR, 16, false), (DATA, 4096, true), (STATUS, 1, true)]);
    assert_eq!(st, status::OK);
    let mut got = vec![0u8; 4096];
    r.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, pattern(64 * 1024)[4096..8192]);
    r.header(HDR, req_type::OUT, 0);
    r.mem
        .write_slice(&[0x77; 4096], GuestAddress(DATA))
        .unwrap();
    let (st, _) = r.run(&[(HDR, 16, false), (DATA, 4096, false), (STATUS, 1, true)]);
    assert_eq!(st, status::OK);
    assert!(r.file()[..4096].iter().all(|&b| b == 0x77));
}
all_modes!(o_direct_reads_and_writes, o_direct_reads_and_writes_body);
