//! Micro-benchmarks of the virtio hot path: popping and parsing descriptor chains, putting them
//! in the used ring, parsing block requests, and a whole 4 KiB block read through the worker
//! (synchronous and io_uring backends), all on rings written the way a guest driver writes them.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veil_devices::virtio::block::request::{Limits, Request, req_type};
use veil_devices::virtio::block::{Block, BlockConfig, Engine};
use veil_devices::virtio::chain::Chain;
use veil_devices::virtio::device::{ActivateParams, DeviceHealth};
use veil_devices::virtio::queue::{DeviceQueue, Popped};
use veil_devices::virtio::testing::{CountingInterrupt, TestRing, guest_mem};
use veil_devices::virtio::{VirtioDevice, VirtioInterrupt};
use vm_memory::{Bytes, GuestAddress};

const SIZE: u16 = 256;
const BATCH: u16 = 64;

/// A ring whose every avail slot already names a 3-descriptor block-style chain, so a batch is
/// published by moving the avail index alone.
fn block_ring() -> (veil_devices::virtio::GuestMem, TestRing) {
    let mem = guest_mem(16 << 20);
    let mut ring = TestRing::new(&mem, 0, SIZE);
    for c in 0..SIZE / 4 {
        let first = c * 3;
        let data = 0x10_0000 + u64::from(c) * 0x2000;
        mem.write_obj(req_type::IN, GuestAddress(data)).unwrap();
        mem.write_obj(u64::from(c), GuestAddress(data + 8)).unwrap();
        ring.add_chain(
            first,
            &[
                (data, 16, false),
                (data + 0x1000, 4096, true),
                (data + 0x100, 1, true),
            ],
        );
    }
    // Fill the remaining avail slots by reusing the same chains.
    for i in SIZE / 4..SIZE {
        ring.publish((i % (SIZE / 4)) * 3);
    }
    ring.set_avail_idx(0);
    (mem, ring)
}

fn queue_benches(c: &mut Criterion) {
    let (mem, ring) = block_ring();
    let (active, _) = ring.active(0);
    let mut q = DeviceQueue::new("bench", active, 0, 128);
    let mut chain = Chain::with_capacity(128);
    let mut avail: u16 = 0;
    let mut g = c.benchmark_group("queue");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    g.bench_function("pop_parse_3desc_x64", |b| {
        b.iter(|| {
            avail = avail.wrapping_add(BATCH);
            ring.set_avail_idx(avail);
            for _ in 0..BATCH {
                let p = q.pop(&mem, &mut chain).unwrap();
                assert_eq!(p, Popped::Chain);
                black_box(chain.writable_len());
            }
        })
    });
    g.bench_function("add_used_x64", |b| {
        b.iter(|| {
            for i in 0..BATCH {
                q.complete(&mem, (i % (SIZE / 4)) * 3, 4097).unwrap();
            }
        })
    });
    g.finish();

    let limits = Limits {
        capacity: 1 << 20,
        read_only: false,
        max_discard_seg: 1,
    };
    avail = avail.wrapping_add(1);
    ring.set_avail_idx(avail);
    assert_eq!(q.pop(&mem, &mut chain).unwrap(), Popped::Chain);
    c.bench_function("block/parse_request", |b| {
        b.iter(|| black_box(Request::parse(&mem, &chain, &limits).unwrap()))
    });
}

fn block_read(c: &mut Criterion, engine: Engine, name: &str) {
    let path = std::env::temp_dir().join(format!("veil-bench-{name}-{}", std::process::id()));
    std::fs::write(&path, vec![0x5a; 1 << 20]).unwrap();
    let mut cfg = BlockConfig::new(&path);
    cfg.engine = engine;
    let dev = match Block::new(&cfg) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIPPED block/{name}: {e}");
            let _ = std::fs::remove_file(&path);
            return;
        }
    };
    let (mem, ring) = block_ring();
    let (active, _) = ring.active(0);
    let irq = CountingInterrupt::new();
    let params = ActivateParams {
        mem: mem.clone(),
        queues: Vec::new(),
        interrupt: irq as Arc<dyn VirtioInterrupt>,
        health: Arc::new(DeviceHealth::new()),
        features: dev.features(),
    };
    let mut w = dev.worker_for(&params, active);
    let mut avail: u16 = 0;
    let mut g = c.benchmark_group("block");
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    g.bench_function(format!("{name}_4k_read_x64"), |b| {
        b.iter(|| {
            avail = avail.wrapping_add(BATCH);
            ring.set_avail_idx(avail);
            let mut done = w.process_queue();
            if w.uses_uring() {
                done = 0;
                while ring.used_idx() != avail {
                    done += w.process_completions();
                }
            }
            black_box(done);
        })
    });
    g.finish();
    let _ = std::fs::remove_file(&path);
}

fn block_benches(c: &mut Criterion) {
    block_read(c, Engine::Sync, "sync");
    block_read(c, Engine::IoUring, "io_uring");
}

criterion_group!(benches, queue_benches, block_benches);
criterion_main!(benches);
