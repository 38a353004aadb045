//! The network device against a real tap inside a network namespace made for the test.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::virtio::features::bit;
use crate::virtio::testing::{CountingInterrupt, TestRing, guest_mem};
use crate::virtio::{GuestMem, VirtioDevice};

const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const TAP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// A network namespace with a tap in it, removed on drop.
struct NetNs {
    name: String,
}

impl NetNs {
    fn new(tag: &str) -> Option<Self> {
        let name = format!("veil-{tag}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("SKIPPED: cannot create a network namespace (needs root and iproute2)");
            return None;
        }
        Some(Self { name })
    }

    fn ip(&self, args: &[&str]) {
        let st = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "ip -n {} {args:?} failed", self.name);
    }

    /// Runs `f` on a thread that joined the namespace; descriptors it opens stay usable.
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: setns on a namespace fd we opened; it only changes this thread.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

struct Rig {
    _ns: NetNs,
    mem: GuestMem,
    rx: TestRing,
    tx: TestRing,
    irq: Arc<CountingInterrupt>,
    dev: Net,
    worker: NetWorker,
    sock: UdpSocket,
}

fn rig(tag: &str, features: u64) -> Option<Rig> {
    let ns = NetNs::new(tag)?;
    let (tap, sock) = ns.run(|| {
        let tap = Tap::open("veiltap0").expect("tap in netns");
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        (tap, sock)
    });
    ns.ip(&["link", "set", "veiltap0", "address", "02:00:00:00:00:01"]);
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "sysctl",
            "-q",
            "-w",
            "net.ipv6.conf.all.disable_ipv6=1",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    ns.ip(&["addr", "add", "10.0.0.1/24", "dev", "veiltap0"]);
    ns.ip(&["link", "set", "veiltap0", "up"]);
    ns.ip(&[
        "neigh",
        "add",
        "10.0.0.2",
        "lladdr",
        "52:54:00:12:34:56",
        "dev",
        "veiltap0",
    ]);
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let dev = Net::with_tap(tap, GUEST_MAC);
    let mem = guest_mem(0x10_0000);
    let rx = TestRing::new(&mem, 0, 16);
    let tx = TestRing::new(&mem, 0x4000, 16);
    let irq = CountingInterrupt::new();
    let worker = dev
        .worker_for(irq.activate_params(&mem, vec![rx.active(0).0, tx.active(1).0], features))
        .unwrap();
    Some(Rig {
        _ns: ns,
        mem,
        rx,
        tx,
        irq,
        dev,
        worker,
        sock,
    })
}

fn csum(data: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A virtio-net header plus an Ethernet/IPv4/UDP frame from the guest to 10.0.0.1:`port`.
fn udp_frame(port: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; HDR_LEN];
    f.extend_from_slice(&TAP_MAC);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + 8 + payload.len()) as u16;
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = csum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&5555u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

const MRG: u64 = 1 << features::MRG_RXBUF;

#[test]
fn transmits_guest_frames_to_the_tap() {
    let Some(mut r) = rig("tx", MRG) else { return };
    let port = r.sock.local_addr().unwrap().port();
    let frame = udp_frame(port, b"hello from the guest");
    // Header and frame in separate buffers, as Linux sends them.
    r.mem
        .write_slice(&frame[..HDR_LEN], GuestAddress(0x8000))
        .unwrap();
    r.mem
        .write_slice(&frame[HDR_LEN..], GuestAddress(0x9000))
        .unwrap();
    r.tx.add_chain(
        0,
        &[
            (0x8000, HDR_LEN as u32, false),
            (0x9000, (frame.len() - HDR_LEN) as u32, false),
        ],
    );
    // A hostile transmit buffer shorter than the header is dropped, not sent.
    r.tx.add_chain(2, &[(0x8000, 4, false)]);
    assert_eq!(r.worker.process_tx(), 2);
    let mut buf = [0u8; 64];
    let (n, from) = r.sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello from the guest");
    assert_eq!(from.to_string(), "10.0.0.2:5555");
    assert_eq!(NetMetrics::get(&r.dev.metrics().tx_frames), 1);
    assert_eq!(NetMetrics::get(&r.dev.metrics().dropped), 1);
    assert_eq!(r.irq.queue_signals(), 1);
}

/// Reassembles the frames in the used ring starting at used index `from`: (num_buffers, bytes).
fn received(r: &Rig, from: u16, bufs: &[(u64, u32)]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut i = from;
    while i != r.rx.used_idx() {
        let (id, len) = r.rx.used_elem(i);
        let (addr, _) = bufs[id as usize];
        let mut first = vec![0u8; len as usize];
        r.mem.read_slice(&mut first, GuestAddress(addr)).unwrap();
        let nbuf = u16::from_le_bytes([first[10], first[11]]);
        let mut frame = first;
        for _ in 1..nbuf {
            i = i.wrapping_add(1);
            let (id, len) = r.rx.used_elem(i);
            let mut more = vec![0u8; len as usize];
            r.mem
                .read_slice(&mut more, GuestAddress(bufs[id as usize].0))
                .unwrap();
            frame.extend_from_slice(&more);
        }
        out.push((nbuf, frame));
        i = i.wrapping_add(1);
    }
    out
}

fn udp_payload(frame: &[u8], port: u16) -> Option<&[u8]> {
    let eth = &frame[HDR_LEN..];
    if eth.len() < 42 || eth[12..14] != [8, 0] || eth[23] != 17 {
        return None;
    }
    (u16::from_be_bytes([eth[36], eth[37]]) == port).then(|| &eth[42..])
}

#[test]
fn receives_into_mergeable_buffers_with_backpressure() {
    let Some(mut r) = rig("rx", MRG) else { return };
    r.dev.metrics();
    // Three frames arrive before the guest posted any receive buffer.
    for i in 0..3u8 {
        r.sock.send_to(&[b'a' + i; 40], "10.0.0.2:7777").unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    assert!(!r.worker.process_rx(), "no buffers: stop reading the tap");
    assert_eq!(NetMetrics::get(&r.dev.metrics().rx_backpressure), 1);
    assert_eq!(r.rx.used_idx(), 0);
    // Small 32-byte buffers: each frame (12 + 14 + 20 + 8 + 40 = 94 bytes) needs three.
    let bufs: Vec<(u64, u32)> = (0..16).map(|i| (0x20000 + i * 0x100, 32)).collect();
    for (i, &(a, l)) in bufs.iter().enumerate().take(15) {
        r.rx.add_chain(i as u16, &[(a, l, true)]);
    }
    r.worker.process_rx();
    let frames = received(&r, 0, &bufs);
    let ours: Vec<(u16, Vec<u8>)> = frames
        .into_iter()
        .filter(|(_, f)| udp_payload(f, 7777).is_some())
        .collect();
    assert_eq!(ours.len(), 3, "all three frames delivered, none dropped");
    for (i, (nbuf, f)) in ours.iter().enumerate() {
        assert_eq!(*nbuf, 3);
        assert_eq!(udp_payload(f, 7777).unwrap(), &[b'a' + i as u8; 40]);
        assert_eq!(&f[HDR_LEN..HDR_LEN + 6], &GUEST_MAC);
    }
    assert_eq!(NetMetrics::get(&r.dev.metrics().dropped), 0);
    assert!(r.irq.queue_signals() >= 1);
}

#[test]
fn without_mergeable_buffers_a_frame_needs_one_big_buffer() {
    let Some(mut r) = rig("rx1", 0) else { return };
    let bufs: Vec<(u64, u32)> = vec![(0x20000, 64), (0x30000, 2048)];
    r.rx.add_chain(0, &[(bufs[0].0, bufs[0].1, true)]);
    r.sock.send_to(&[7u8; 100], "10.0.0.2:7777").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    r.worker.process_rx();
    // Too small: the frame is dropped (counted), the buffer stays with the device.
    assert_eq!(r.rx.used_idx(), 0);
    assert!(NetMetrics::get(&r.dev.metrics().dropped) >= 1);
    r.rx.set_desc(0, bufs[1].0, bufs[1].1, 2, 0);
    r.sock.send_to(&[8u8; 100], "10.0.0.2:7777").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    r.worker.process_rx();
    let frames = received(&r, 0, &[(bufs[1].0, 0)]);
    assert!(
        frames
            .iter()
            .any(|(n, f)| *n == 1 && udp_payload(f, 7777) == Some(&[8u8; 100][..]))
    );
}

#[test]
fn offloads_follow_the_guest_features() {
    let f = |bits: &[u32]| bits.iter().fold(0u64, |a, b| a | bit(*b));
    assert_eq!(tap_offloads(0), 0);
    assert_eq!(
        tap_offloads(f(&[features::GUEST_TSO4])),
        0,
        "TSO needs checksum offload"
    );
    assert_eq!(
        tap_offloads(f(&[
            features::GUEST_CSUM,
            features::GUEST_TSO4,
            features::GUEST_TSO6
        ])),
        tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6
    );
    let Some(r) = rig("offload", 0) else { return };
    let all = r.dev.features();
    assert_ne!(all & bit(features::MRG_RXBUF), 0);
    let tap = Tap::open("veil-bad-name-too-long").unwrap_err();
    assert!(tap.to_string().contains("1..=15"));
    let mut mac = [0u8; 6];
    r.dev.read_config(0, &mut mac);
    assert_eq!(mac, GUEST_MAC);
    // The tap accepts every offload combination the device can negotiate.
    r.worker.tap.set_offload(tap_offloads(all)).unwrap();
}

#[test]
fn worker_thread_stops_and_resumes_reading_the_tap() {
    let Some(r) = rig("thread", MRG) else { return };
    let Rig {
        _ns,
        mem,
        sock,
        mut dev,
        ..
    } = r;
    let mut rx = TestRing::new(&mem, 0x40000, 16);
    let mut tx = TestRing::new(&mem, 0x44000, 16);
    let (rxq, rx_kick) = rx.active(0);
    let (txq, tx_kick) = tx.active(1);
    dev.activate(CountingInterrupt::new().activate_params(&mem, vec![rxq, txq], MRG))
        .unwrap();
    // Frames arrive while the guest has no receive buffers: the worker parks the tap.
    for i in 0..4u8 {
        sock.send_to(&[b'k' + i; 300], "10.0.0.2:7777").unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(NetMetrics::get(&dev.metrics().rx_backpressure) >= 1);
    assert_eq!(rx.used_idx(), 0);
    // Buffers arrive with a notification: every frame is delivered, none dropped.
    let bufs: Vec<(u64, u32)> = (0..16).map(|i| (0x50000 + i * 0x1000, 2048)).collect();
    for (i, &(a, l)) in bufs.iter().enumerate() {
        rx.add_chain(i as u16, &[(a, l, true)]);
    }
    rx_kick.write(1).unwrap();
    let start = std::time::Instant::now();
    let ours = loop {
        let frames: Vec<Vec<u8>> = (0..rx.used_idx())
            .map(|i| {
                let (id, len) = rx.used_elem(i);
                let mut b = vec![0u8; len as usize];
                mem.read_slice(&mut b, GuestAddress(bufs[id as usize].0))
                    .unwrap();
                b
            })
            .filter(|f| udp_payload(f, 7777).is_some())
            .collect();
        if frames.len() == 4 || start.elapsed() > Duration::from_secs(10) {
            break frames;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert_eq!(ours.len(), 4);
    for (i, f) in ours.iter().enumerate() {
        assert_eq!(udp_payload(f, 7777).unwrap(), &[b'k' + i as u8; 300][..]);
    }
    // And the tap is read again for later frames.
    sock.send_to(b"later", "10.0.0.2:7777").unwrap();
    let start = std::time::Instant::now();
    while NetMetrics::get(&dev.metrics().rx_frames) < 5 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tap not re-armed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // Transmit through the thread too.
    let port = sock.local_addr().unwrap().port();
    let frame = udp_frame(port, b"threaded");
    mem.write_slice(&frame, GuestAddress(0x70000)).unwrap();
    tx.add_chain(0, &[(0x70000, frame.len() as u32, false)]);
    tx_kick.write(1).unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"threaded");
    dev.reset();
}
