//! The vsock device with its real worker thread and real Unix sockets, driven by a fake guest
//! that writes packets into the rings.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

use super::packet::{HDR_LEN, HOST_CID, Header, TYPE_STREAM, op};
use super::*;
use crate::virtio::testing::{CountingInterrupt, TestRing, guest_mem};
use crate::virtio::{GuestMem, VirtioDevice};

const CID: u64 = 3;
const RX_BUFS: u16 = 8;
const RX_BUF_LEN: u32 = 4096;

struct Guest {
    mem: GuestMem,
    rx: TestRing,
    tx: TestRing,
    rx_kick: EventFd,
    tx_kick: EventFd,
    rx_seen: u16,
    tx_next: u16,
    dev: Vsock,
    uds: PathBuf,
}

fn uds(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("veil-vsock-{tag}-{}", std::process::id()))
}

fn rx_buf(i: u16) -> u64 {
    0x20000 + u64::from(i) * u64::from(RX_BUF_LEN)
}

impl Guest {
    fn new(tag: &str) -> Self {
        let path = uds(tag);
        let _ = std::fs::remove_file(&path);
        let mut dev = Vsock::new(CID, &path).unwrap();
        let mem = guest_mem(0x10_0000);
        let mut rx = TestRing::new(&mem, 0, 16);
        let tx = TestRing::new(&mem, 0x4000, 16);
        let ev = TestRing::new(&mem, 0x8000, 16);
        for i in 0..RX_BUFS {
            rx.add_chain(i, &[(rx_buf(i), RX_BUF_LEN, true)]);
        }
        let (rxq, rx_kick) = rx.active(0);
        let (txq, tx_kick) = tx.active(1);
        let (evq, _) = ev.active(2);
        dev.activate(CountingInterrupt::new().activate_params(&mem, vec![rxq, txq, evq], 0))
            .unwrap();
        Self {
            mem,
            rx,
            tx,
            rx_kick,
            tx_kick,
            rx_seen: 0,
            tx_next: 0,
            dev,
            uds: path,
        }
    }

    fn hdr(&self, op: u16, src_port: u32, dst_port: u32, len: u32) -> Header {
        Header {
            src_cid: CID,
            dst_cid: HOST_CID,
            src_port,
            dst_port,
            len,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: 64 * 1024,
            fwd_cnt: 0,
        }
    }

    fn send(&mut self, h: Header, payload: &[u8]) {
        let slot = self.tx_next % 16;
        let addr = 0x60000 + u64::from(slot) * 0x1000;
        self.mem
            .write_slice(&h.to_bytes(), GuestAddress(addr))
            .unwrap();
        self.mem
            .write_slice(payload, GuestAddress(addr + HDR_LEN as u64))
            .unwrap();
        self.tx
            .add_chain(slot, &[(addr, (HDR_LEN + payload.len()) as u32, false)]);
        self.tx_next += 1;
        self.tx_kick.write(1).unwrap();
    }

    /// Waits for the next packet the device put in the receive ring, and recycles its buffer.
    fn recv(&mut self) -> (Header, Vec<u8>) {
        let start = Instant::now();
        while self.rx.used_idx() == self.rx_seen {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no packet for the guest"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let (id, len) = self.rx.used_elem(self.rx_seen);
        self.rx_seen = self.rx_seen.wrapping_add(1);
        let mut b = vec![0u8; len as usize];
        self.mem
            .read_slice(&mut b, GuestAddress(rx_buf(id as u16)))
            .unwrap();
        let h = Header::from_bytes(b[..HDR_LEN].try_into().unwrap());
        self.rx.publish(id as u16);
        self.rx_kick.write(1).unwrap();
        (h, b[HDR_LEN..].to_vec())
    }

    fn no_packet_for(&self, ms: u64) -> bool {
        std::thread::sleep(Duration::from_millis(ms));
        self.rx.used_idx() == self.rx_seen
    }
}

fn read_exact_timeout(s: &mut UnixStream, n: usize) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).unwrap();
    b
}

#[test]
fn host_initiated_connection_with_the_firecracker_protocol() {
    let mut g = Guest::new("host");
    let mut host = UnixStream::connect(&g.uds).unwrap();
    host.write_all(b"CONNECT 1234\n").unwrap();
    let (req, _) = g.recv();
    assert_eq!(
        (req.op, req.src_cid, req.dst_cid, req.dst_port),
        (op::REQUEST, HOST_CID, CID, 1234)
    );
    let host_port = req.src_port;
    assert!(host_port >= 1 << 30);
    g.send(g.hdr(op::RESPONSE, 1234, host_port, 0), &[]);
    let mut line = String::new();
    host.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    BufReader::new(host.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, format!("OK {host_port}\n"));
    // Host to guest.
    host.write_all(b"ping").unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, h.len, &data[..]), (op::RW, 4, &b"ping"[..]));
    assert_eq!(h.buf_alloc, CONN_BUF);
    // Guest to host.
    g.send(g.hdr(op::RW, 1234, host_port, 4), b"pong");
    assert_eq!(read_exact_timeout(&mut host, 4), b"pong");
    // The guest asks for credit: it gets an update showing the 4 bytes forwarded.
    g.send(g.hdr(op::CREDIT_REQUEST, 1234, host_port, 0), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.fwd_cnt), (op::CREDIT_UPDATE, 4));
    // The host closes: the guest is told, answers with RST, the connection is gone.
    drop(host);
    let (h, _) = g.recv();
    assert_eq!(h.op, op::SHUTDOWN);
    g.send(g.hdr(op::RST, 1234, host_port, 0), &[]);
    let start = Instant::now();
    while VsockMetrics::get(&g.dev.metrics().conns_closed) == 0 {
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn guest_initiated_connections_reach_socket_port() {
    let mut g = Guest::new("guest");
    let listener = UnixListener::bind(format!("{}_5000", g.uds.display())).unwrap();
    g.send(g.hdr(op::REQUEST, 777, 5000, 0), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.src_port, h.dst_port), (op::RESPONSE, 5000, 777));
    let (mut s, _) = listener.accept().unwrap();
    g.send(g.hdr(op::RW, 777, 5000, 5), b"hello");
    assert_eq!(read_exact_timeout(&mut s, 5), b"hello");
    s.write_all(b"back").unwrap();
    let (h, data) = g.recv();
    assert_eq!((h.op, &data[..]), (op::RW, &b"back"[..]));
    // Nobody listens on port 5001: refused with RST.
    g.send(g.hdr(op::REQUEST, 778, 5001, 0), &[]);
    let (h, _) = g.recv();
    assert_eq!((h.op, h.dst_port), (op::RST, 778));
    // The guest shuts down both directions: the host sees EOF, the guest gets RST.
    g.send(
        Header {
            flags: 3,
            ..g.hdr(op::SHUTDOWN, 777, 5000, 0)
        },
        &[],
    );
    let (h, _) = g.recv();
    assert_eq!(h.op, op::RST);
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let _ = std::fs::remove_file(format!("{}_5000", g.uds.display()));
}

#[test]
fn host_data_respects_the_guest_credit() {
    let mut g = Guest::new("credit");
    let listener = UnixListener::bind(format!("{}_6000", g.uds.display())).unwrap();
    // The guest offers only 8 bytes of receive buffer.
    g.send(
        Header {
            buf_alloc: 8,
            ..g.hdr(op::REQUEST, 900, 6000, 0)
        },
        &[],
    );
    assert_eq!(g.recv().0.op, op::RESPONSE);
    let (mut s, _) = listener.accept().unwrap();
    s.write_all(&[b'x'; 20]).unwrap();
    let (h, d) = g.recv();
    assert_eq!((h.op, d.len()), (op::RW, 8));
    assert!(g.no_packet_for(50), "sent beyond the guest's credit");
    // The guest consumed 8 bytes: 8 more may flow.
    g.send(
        Header {
            buf_alloc: 8,
            fwd_cnt: 8,
            ..g.hdr(op::CREDIT_UPDATE, 900, 6000, 0)
        },
        &[],
    );
    let (_, d) = g.recv();
    assert_eq!(d.len(), 8);
    assert!(g.no_packet_for(50));
    g.send(
        Header {
            buf_alloc: 64,
            fwd_cnt: 16,
            ..g.hdr(op::CREDIT_UPDATE, 900, 6000, 0)
        },
        &[],
    );
    let (_, d) = g.recv();
    assert_eq!(d, vec![b'x'; 4]);
    let _ = std::fs::remove_file(format!("{}_6000", g.uds.display()));
}

#[test]
fn hostile_packets_are_dropped_or_reset() {
    let mut g = Guest::new("hostile");
    // Spoofed source CID: dropped silently (counted).
    let spoof = Header {
        src_cid: 42,
        ..g.hdr(op::REQUEST, 1, 2, 0)
    };
    g.send(spoof, &[]);
    // Length beyond the buffer: reset.
    g.send(g.hdr(op::RW, 10, 20, 4000), b"short");
    let (h, _) = g.recv();
    assert_eq!((h.op, h.dst_port), (op::RST, 10));
    // Data on a connection that does not exist: reset.
    g.send(g.hdr(op::RW, 11, 21, 3), b"abc");
    assert_eq!(g.recv().0.op, op::RST);
    // A packet shorter than a header, and a datagram type: dropped / reset.
    let slot = g.tx_next % 16;
    let addr = 0x60000 + u64::from(slot) * 0x1000;
    g.tx.add_chain(slot, &[(addr, 10, false)]);
    g.tx_next += 1;
    g.tx_kick.write(1).unwrap();
    g.send(
        Header {
            kind: 2,
            ..g.hdr(op::REQUEST, 12, 22, 0)
        },
        &[],
    );
    assert_eq!(g.recv().0.op, op::RST);
    assert!(g.no_packet_for(30));
    assert!(VsockMetrics::get(&g.dev.metrics().bad_packets) >= 4);
    // The device still works.
    let mut host = UnixStream::connect(&g.uds).unwrap();
    host.write_all(b"CONNECT 9\n").unwrap();
    assert_eq!(g.recv().0.op, op::REQUEST);
    // A malformed CONNECT line closes that client only.
    let mut bad = UnixStream::connect(&g.uds).unwrap();
    bad.write_all(b"HELLO\n").unwrap();
    bad.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut b = Vec::new();
    bad.read_to_end(&mut b).unwrap();
    assert!(b.is_empty());
    let mut cfg = [0u8; 8];
    g.dev.read_config(0, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), CID);
    assert!(matches!(
        Vsock::new(2, &uds("cid")),
        Err(VsockError::Cid(2))
    ));
}

#[test]
fn a_guest_that_never_takes_replies_is_held_back() {
    let path = uds("flood");
    let _ = std::fs::remove_file(&path);
    let dev = Vsock::new(CID, &path).unwrap();
    let mem = guest_mem(0x10_0000);
    let mut rx = TestRing::new(&mem, 0, 16);
    let mut tx = TestRing::new(&mem, 0x4000, 16);
    let ev = TestRing::new(&mem, 0x8000, 16);
    let mut w = dev
        .worker_for(CountingInterrupt::new().activate_params(
            &mem,
            vec![rx.active(0).0, tx.active(1).0, ev.active(2).0],
            0,
        ))
        .unwrap();
    // Every packet asks for a port nobody listens on: each needs an RST the guest never takes.
    // Like a real driver, the guest only publishes into free ring slots.
    let mut published = 0u32;
    let mut publish = |tx: &mut TestRing, upto: u32| {
        let outstanding = published - u32::from(tx.used_idx());
        for _ in outstanding..upto.min(16) {
            let i = (published % 16) as u16;
            let h = Header {
                src_cid: CID,
                dst_cid: HOST_CID,
                src_port: published,
                dst_port: 1,
                kind: TYPE_STREAM,
                op: op::REQUEST,
                ..Header::default()
            };
            let addr = 0x60000 + u64::from(i) * 0x100;
            mem.write_slice(&h.to_bytes(), GuestAddress(addr)).unwrap();
            tx.add_chain(i, &[(addr, HDR_LEN as u32, false)]);
            published += 1;
        }
        published
    };
    let mut total = 0;
    for _ in 0..100 {
        total = publish(&mut tx, 16);
        w.process_tx();
        w.process_rx();
    }
    let taken = u32::from(tx.used_idx());
    assert!(
        taken <= (MAX_CONTROL + 16) as u32,
        "took {taken} packets it cannot answer"
    );
    assert!(taken >= MAX_CONTROL as u32);
    assert!(w.mux().control.len() <= MAX_CONTROL + 16);
    assert!(!w.mux().control.is_empty());
    // The guest posts receive buffers: replies flow and its packets are taken again.
    let mut rx_published = 0u16;
    for round in 0..500 {
        let outstanding = rx_published.wrapping_sub(rx.used_idx());
        for _ in outstanding..16 {
            let i = rx_published % 16;
            rx.add_chain(i, &[(0x20000 + u64::from(i) * 0x100, 64, true)]);
            rx_published = rx_published.wrapping_add(1);
        }
        w.process_rx();
        w.process_tx();
        w.process_rx();
        if w.mux().control.is_empty() && u32::from(tx.used_idx()) == total {
            break;
        }
        assert!(round < 499, "backlog never drained");
    }
    // One RST per request, none lost.
    assert_eq!(u32::from(rx.used_idx()), total);
    let _ = std::fs::remove_file(&path);
}
