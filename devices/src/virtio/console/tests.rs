//! The console fed crafted rings: output to a sink, input from a pipe with backpressure.

use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::GuestMem;
use crate::virtio::testing::{CountingInterrupt, TestRing, guest_mem};

fn pipe() -> (OwnedFd, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array we pass.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK) };
    assert_eq!(r, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    unsafe {
        (
            OwnedFd::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

struct Rig {
    mem: GuestMem,
    rx: TestRing,
    tx: TestRing,
    irq: Arc<CountingInterrupt>,
    out: Arc<Mutex<Vec<u8>>>,
    worker: ConsoleWorker,
}

fn rig(input: Option<OwnedFd>) -> Rig {
    let mem = guest_mem(0x10_0000);
    let rx = TestRing::new(&mem, 0, 16);
    let tx = TestRing::new(&mem, 0x4000, 16);
    let irq = CountingInterrupt::new();
    let out = Arc::new(Mutex::new(Vec::new()));
    let worker = ConsoleWorker::new(
        irq.activate_params(&mem, vec![rx.active(0).0, tx.active(1).0], 0),
        out.clone(),
        input,
        Arc::new(ConsoleMetrics::default()),
    )
    .unwrap();
    Rig {
        mem,
        rx,
        tx,
        irq,
        out,
        worker,
    }
}

#[test]
fn guest_output_reaches_the_sink() {
    let mut r = rig(None);
    r.mem.write_slice(b"hello, ", GuestAddress(0x8000)).unwrap();
    r.mem.write_slice(b"world\n", GuestAddress(0x9000)).unwrap();
    r.tx.add_chain(0, &[(0x8000, 7, false), (0x9000, 6, false)]);
    // A writable-only buffer on the transmit queue carries nothing.
    r.tx.add_chain(2, &[(0xa000, 8, true)]);
    assert_eq!(r.worker.process_tx(), 2);
    assert_eq!(&*r.out.lock().unwrap(), b"hello, world\n");
    assert_eq!(r.tx.used_idx(), 2);
    assert_eq!(r.irq.queue_signals(), 1);
}

#[test]
fn input_waits_for_guest_buffers() {
    let (rd, mut wr) = pipe();
    let mut r = rig(Some(rd));
    wr.write_all(b"typed").unwrap();
    // No receive buffers: nothing is read or dropped, and the worker says to stop polling.
    assert!(!r.worker.process_input());
    r.rx.add_chain(0, &[(0x8000, 3, true)]);
    r.rx.add_chain(1, &[(0x9000, 64, true)]);
    r.rx.add_chain(2, &[(0xa000, 64, true)]);
    // Input drained into the first two buffers; the third stays for later input.
    assert!(r.worker.process_input());
    assert_eq!(r.rx.used_idx(), 2);
    assert_eq!(r.rx.used_elem(0), (0, 3));
    assert_eq!(r.rx.used_elem(1), (1, 2));
    let mut got = [0u8; 5];
    r.mem
        .read_slice(&mut got[..3], GuestAddress(0x8000))
        .unwrap();
    r.mem
        .read_slice(&mut got[3..], GuestAddress(0x9000))
        .unwrap();
    assert_eq!(&got, b"typed");
    wr.write_all(b"!").unwrap();
    r.worker.process_input();
    assert_eq!(r.rx.used_idx(), 3);
    assert_eq!(r.rx.used_elem(2), (2, 1));
}

#[test]
fn end_of_input_leaves_the_guest_buffers_alone() {
    let (rd, mut wr) = pipe();
    let mut r = rig(Some(rd));
    r.rx.add_chain(0, &[(0x8000, 64, true)]);
    r.rx.add_chain(1, &[(0x9000, 64, true)]);
    wr.write_all(b"last").unwrap();
    drop(wr);
    r.worker.process_input();
    // The bytes arrive; the end of input completes no buffer and stops the input.
    assert_eq!(r.rx.used_idx(), 1);
    assert_eq!(r.rx.used_elem(0), (0, 4));
    assert!(r.worker.input_ended);
    assert_eq!(r.irq.queue_signals(), 1);
    // Later calls read nothing more and keep the buffer for nobody.
    assert!(!r.worker.process_input());
    assert_eq!(r.rx.used_idx(), 1);
}

#[test]
fn worker_thread_serves_output_and_input() {
    use crate::virtio::VirtioDevice;
    let (rd, mut wr) = pipe();
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut dev = Console::new(out.clone(), Some(rd));
    let mem = guest_mem(0x10_0000);
    let mut rx = TestRing::new(&mem, 0, 16);
    let mut tx = TestRing::new(&mem, 0x4000, 16);
    let (rxq, rx_kick) = rx.active(0);
    let (txq, tx_kick) = tx.active(1);
    dev.activate(CountingInterrupt::new().activate_params(&mem, vec![rxq, txq], 0))
        .unwrap();
    mem.write_slice(b"boot ok\n", GuestAddress(0x8000)).unwrap();
    tx.add_chain(0, &[(0x8000, 8, false)]);
    tx_kick.write(1).unwrap();
    let wait = |what: &str, f: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !f() {
            assert!(start.elapsed().as_secs() < 10, "timed out: {what}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    wait("output", &|| out.lock().unwrap().as_slice() == b"boot ok\n");
    // Input typed before any receive buffer waits; it arrives once buffers are posted.
    wr.write_all(b"ls\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(rx.used_idx(), 0);
    rx.add_chain(0, &[(0x9000, 64, true)]);
    rx_kick.write(1).unwrap();
    wait("input", &|| rx.used_idx() == 1);
    assert_eq!(rx.used_elem(0), (0, 3));
    dev.reset();
}
