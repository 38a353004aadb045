//! The `vsock` check on virtio-vsock (stream sockets, virtio 1.2, 5.10): the guest CID; with
//! `probe.vsock_port=P` a connection to host CID 2 port P that sends `veil-vsock-ping\n` and
//! expects `veil-vsock-pong\n`; with `probe.vsock_listen=1` one host-initiated connection on
//! guest port 1234, echoed until the host shuts it down.
//!
//! Credit: every packet the probe sends carries `buf_alloc` (the 64 KiB it accepts per
//! connection) and `fwd_cnt` (the payload bytes it consumed, which is all it received: data is
//! handled as it arrives). It sends no more than the peer's `buf_alloc - (tx_cnt - fwd_cnt)`,
//! asking with CREDIT_REQUEST when that is too little, and answers CREDIT_REQUEST.

use super::virtqueue::{Buf, Virtqueue};
use super::{Device, NO_VECTOR, bytes, dma, find_for, kind};
use crate::checks::Why;
use crate::cmdline::Config;
use crate::tsc::Deadline;
use crate::{info, println};

const HDR: usize = 44;
const HOST_CID: u64 = 2;
const TYPE_STREAM: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_RESPONSE: u16 = 2;
const OP_RST: u16 = 3;
const OP_SHUTDOWN: u16 = 4;
const OP_RW: u16 = 5;
const OP_CREDIT_UPDATE: u16 = 6;
const OP_CREDIT_REQUEST: u16 = 7;
/// SHUTDOWN flags: no more receiving, no more sending.
const SHUTDOWN_BOTH: u32 = 3;
/// Receive buffer space the probe advertises per connection.
const BUF_ALLOC: u32 = 64 << 10;
/// The guest port `probe.vsock_listen=1` accepts on.
pub const LISTEN_PORT: u32 = 1234;
/// The guest port of the probe's own connection.
const LOCAL_PORT: u32 = 49152;
/// What the probe sends on its own connection.
pub const PING: &[u8] = b"veil-vsock-ping\n";
/// What it expects back.
pub const PONG: &[u8] = b"veil-vsock-pong\n";
const RX_BUFS: usize = 16;
const RX_LEN: u32 = 4096;
/// Most payload per packet the probe sends.
const TX_MAX: usize = 4096 - 64;
/// Bounds: each step of a connection, and waiting for the host to connect.
const STEP_MS: u64 = 5000;
const ACCEPT_MS: u64 = 10000;

/// A packet header.
#[derive(Clone, Copy, Debug, Default)]
struct Header {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    kind: u16,
    op: u16,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Header {
    fn parse(b: &[u8]) -> Self {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap_or([0; 4]));
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            kind: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    fn write(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
    }
}

/// One stream connection.
#[derive(Clone, Copy, Debug, Default)]
struct Conn {
    local_port: u32,
    peer_port: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent.
    tx_cnt: u32,
    /// Payload bytes received and consumed.
    fwd_cnt: u32,
}

impl Conn {
    fn credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    fn matches(&self, h: &Header) -> bool {
        h.src_cid == HOST_CID && h.src_port == self.peer_port && h.dst_port == self.local_port
    }
}

/// What arrived for a connection: payload bytes, or a control packet's op.
enum Got {
    Data(usize),
    Control(u16),
}

struct Vsock {
    dev: Device,
    rx: Virtqueue,
    tx: Virtqueue,
    cid: u64,
    rx_heads: [u64; super::virtqueue::MAX_SIZE as usize],
    tx_mem: u64,
    /// A host REQUEST for `LISTEN_PORT` that arrived before the listen step.
    pending: Option<Header>,
}

/// Runs the `vsock` check.
pub fn check(cfg: &Config) -> Result<(), Why> {
    let t = find_for("vsock", kind::VSOCK, cfg)?;
    let dev = Device::init(t, 0)?;
    let mut cid = [0u8; 8];
    dev.config(0, &mut cid);
    let cid = u64::from_le_bytes(cid);
    info!("vsock_cid", "{}", cid);
    let r = start(dev, cid).and_then(|mut v| {
        let r = run(&mut v, cfg);
        v.dev.reset();
        r
    });
    r?;
    println!("PROBE ok vsock");
    Ok(())
}

fn start(dev: Device, cid: u64) -> Result<Vsock, Why> {
    let mut rx = dev.queue(0, NO_VECTOR)?;
    let mut tx = dev.queue(1, NO_VECTOR)?;
    let mut ev = dev.queue(2, NO_VECTOR)?;
    rx.set_interrupts(false);
    tx.set_interrupts(false);
    ev.set_interrupts(false);
    dev.ready()?;
    let rx_mem = dma(RX_BUFS as u64 * u64::from(RX_LEN))?;
    let ev_mem = dma(4096)?;
    let mut v = Vsock {
        dev,
        rx,
        tx,
        cid,
        rx_heads: [0; super::virtqueue::MAX_SIZE as usize],
        tx_mem: dma(4096)?,
        pending: None,
    };
    for i in 0..RX_BUFS.min(usize::from(v.rx.size())) {
        v.post(rx_mem + i as u64 * u64::from(RX_LEN))?;
    }
    for i in 0..4.min(u64::from(ev.size())) {
        ev.add(&[Buf::write(ev_mem + i * 8, 8)])?;
    }
    v.dev.t.notify(&v.rx);
    v.dev.t.notify(&ev);
    Ok(v)
}

fn run(v: &mut Vsock, cfg: &Config) -> Result<(), Why> {
    let mut ok = true;
    if let Some(port) = cfg.vsock_port {
        ok &= report("vsock-connect", connect(v, port));
    }
    if cfg.vsock_listen {
        ok &= report("vsock-listen", listen(v));
    }
    if ok { Ok(()) } else { Err(Why::Reported) }
}

fn report(name: &str, r: Result<(), Why>) -> bool {
    match r {
        Ok(()) => {
            println!("PROBE ok {name}");
            true
        }
        Err(Why::Reported) => false,
        Err(why) => {
            println!("PROBE FAIL {name}: {why}");
            false
        }
    }
}

impl Vsock {
    fn post(&mut self, addr: u64) -> Result<(), Why> {
        let head = self.rx.add(&[Buf::write(addr, RX_LEN)])?;
        self.rx_heads[usize::from(head)] = addr;
        Ok(())
    }

    /// Sends one packet on `c` (credit fields filled in).
    fn send(&mut self, c: &Conn, op: u16, flags: u32, payload: &[u8]) -> Result<(), Why> {
        let h = Header {
            src_cid: self.cid,
            dst_cid: HOST_CID,
            src_port: c.local_port,
            dst_port: c.peer_port,
            len: payload.len() as u32,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: c.fwd_cnt,
        };
        self.send_header(&h, payload)
    }

    fn send_header(&mut self, h: &Header, payload: &[u8]) -> Result<(), Why> {
        // SAFETY: the transmit page is only used here, one packet at a time; the device
        // finished with the previous one (transact waits).
        let b = unsafe { bytes(self.tx_mem, HDR + payload.len()) };
        h.write(&mut b[..HDR]);
        b[HDR..].copy_from_slice(payload);
        let mut bufs = [Buf::read(self.tx_mem, HDR as u32); 2];
        let n = if payload.is_empty() {
            1
        } else {
            bufs[1] = Buf::read(self.tx_mem + HDR as u64, payload.len() as u32);
            2
        };
        self.dev.transact(&mut self.tx, &bufs[..n]).map(|_| ())
    }

    /// The next received packet: its header, its payload copied to `data`.
    fn recv(&mut self, data: &mut [u8], dl: &Deadline) -> Result<Option<Header>, Why> {
        loop {
            if let Some((id, len)) = self.rx.poll()? {
                let addr = self.rx_heads.get(usize::from(id)).copied().unwrap_or(0);
                if addr == 0 || (len as usize) < HDR || len > RX_LEN {
                    return Err(Why::At(
                        "the device returned a bad receive buffer",
                        id.into(),
                    ));
                }
                // SAFETY: the device returned the buffer and no longer writes it.
                let b = unsafe { bytes(addr, len as usize) };
                let mut h = Header::parse(b);
                let n = (h.len as usize).min(len as usize - HDR).min(data.len());
                data[..n].copy_from_slice(&b[HDR..HDR + n]);
                h.len = n as u32;
                self.post(addr)?;
                self.dev.t.notify(&self.rx);
                return Ok(Some(h));
            }
            if dl.expired() {
                return Ok(None);
            }
            core::hint::spin_loop();
        }
    }

    /// Answers a packet for no connection of ours: RST (never to an RST), or keeps a host
    /// REQUEST for the listen port for later.
    fn stray(&mut self, h: &Header) -> Result<(), Why> {
        if h.op == OP_REQUEST && h.dst_port == LISTEN_PORT && h.src_cid == HOST_CID {
            self.pending = Some(*h);
            return Ok(());
        }
        if h.op == OP_RST {
            return Ok(());
        }
        let c = Conn {
            local_port: h.dst_port,
            peer_port: h.src_port,
            ..Conn::default()
        };
        self.send(&c, OP_RST, 0, &[])
    }

    /// Waits for the next packet on `c`, handling credit traffic and strays.
    fn next(&mut self, c: &mut Conn, data: &mut [u8], ms: u64) -> Result<Got, Why> {
        let dl = Deadline::after_ms(ms);
        loop {
            let Some(h) = self.recv(data, &dl)? else {
                return Err(Why::At("no packet from the host within ms:", ms));
            };
            if !c.matches(&h) {
                self.stray(&h)?;
                continue;
            }
            c.peer_buf_alloc = h.buf_alloc;
            c.peer_fwd_cnt = h.fwd_cnt;
            match h.op {
                OP_RW => {
                    c.fwd_cnt = c.fwd_cnt.wrapping_add(h.len);
                    return Ok(Got::Data(h.len as usize));
                }
                OP_CREDIT_REQUEST => self.send(c, OP_CREDIT_UPDATE, 0, &[])?,
                OP_CREDIT_UPDATE => {}
                op => return Ok(Got::Control(op)),
            }
        }
    }

    /// Sends `payload` on `c` within the peer's credit.
    fn write(&mut self, c: &mut Conn, mut payload: &[u8]) -> Result<(), Why> {
        let mut scratch = [0u8; RX_LEN as usize];
        while !payload.is_empty() {
            let n = payload.len().min(TX_MAX).min(c.credit() as usize);
            if n == 0 {
                self.send(c, OP_CREDIT_REQUEST, 0, &[])?;
                match self.next(c, &mut scratch, STEP_MS)? {
                    Got::Control(op) => {
                        return Err(Why::At(
                            "the host ended the connection while we wrote; op",
                            op.into(),
                        ));
                    }
                    Got::Data(_) => {
                        return Err(Why::Text(
                            "the host sent data while the probe waited for credit",
                        ));
                    }
                }
            }
            let (now, rest) = payload.split_at(n);
            self.send(c, OP_RW, 0, now)?;
            c.tx_cnt = c.tx_cnt.wrapping_add(n as u32);
            payload = rest;
        }
        Ok(())
    }
}

/// Connects to host port `port`, sends the ping, expects the pong, shuts down.
fn connect(v: &mut Vsock, port: u32) -> Result<(), Why> {
    let mut c = Conn {
        local_port: LOCAL_PORT,
        peer_port: port,
        ..Conn::default()
    };
    let mut data = [0u8; RX_LEN as usize];
    v.send(&c, OP_REQUEST, 0, &[])?;
    match v.next(&mut c, &mut data, STEP_MS)? {
        Got::Control(OP_RESPONSE) => {}
        Got::Control(OP_RST) => {
            return Err(Why::At(
                "the host refused the connection (RST) to port",
                port.into(),
            ));
        }
        Got::Control(op) => return Err(Why::At("the host answered REQUEST with op", op.into())),
        Got::Data(_) => return Err(Why::Text("the host sent data before RESPONSE")),
    }
    v.write(&mut c, PING)?;
    let mut got = [0u8; 16];
    let mut have = 0;
    while have < PONG.len() {
        match v.next(&mut c, &mut data, STEP_MS)? {
            Got::Data(n) => {
                let take = n.min(got.len() - have);
                got[have..have + take].copy_from_slice(&data[..take]);
                have += take;
            }
            Got::Control(op) => {
                return Err(Why::At(
                    "the connection ended before the pong; op",
                    op.into(),
                ));
            }
        }
    }
    if got[..] != *PONG {
        return Err(Why::Text("the host's reply is not veil-vsock-pong"));
    }
    close(v, &mut c)
}

/// Shuts `c` down and waits (briefly) for the host's RST.
fn close(v: &mut Vsock, c: &mut Conn) -> Result<(), Why> {
    v.send(c, OP_SHUTDOWN, SHUTDOWN_BOTH, &[])?;
    let mut data = [0u8; RX_LEN as usize];
    loop {
        match v.next(c, &mut data, 1000) {
            Ok(Got::Control(OP_RST)) => return Ok(()),
            Ok(_) => continue,
            // No RST in time: reset it ourselves.
            Err(_) => return v.send(c, OP_RST, 0, &[]),
        }
    }
}

/// Accepts one host connection on `LISTEN_PORT` and echoes until the host shuts down.
fn listen(v: &mut Vsock) -> Result<(), Why> {
    info!("vsock_listen_port", "{}", LISTEN_PORT);
    let mut data = [0u8; RX_LEN as usize];
    let dl = Deadline::after_ms(ACCEPT_MS);
    let req = loop {
        if let Some(h) = v.pending.take() {
            break h;
        }
        let Some(h) = v.recv(&mut data, &dl)? else {
            return Err(Why::Text(
                "no connection from the host to port 1234 within 10 s",
            ));
        };
        v.stray(&h)?;
    };
    let mut c = Conn {
        local_port: LISTEN_PORT,
        peer_port: req.src_port,
        peer_buf_alloc: req.buf_alloc,
        peer_fwd_cnt: req.fwd_cnt,
        ..Conn::default()
    };
    v.send(&c, OP_RESPONSE, 0, &[])?;
    let mut echoed = 0u64;
    loop {
        match v.next(&mut c, &mut data, STEP_MS * 2)? {
            Got::Data(n) => {
                let mut chunk = [0u8; RX_LEN as usize];
                chunk[..n].copy_from_slice(&data[..n]);
                v.write(&mut c, &chunk[..n])?;
                echoed += n as u64;
            }
            Got::Control(OP_SHUTDOWN) => {
                v.send(&c, OP_RST, 0, &[])?;
                break;
            }
            Got::Control(OP_RST) => break,
            Got::Control(op) => {
                return Err(Why::At(
                    "unexpected op on the accepted connection",
                    op.into(),
                ));
            }
        }
    }
    info!("vsock_echoed_bytes", "{}", echoed);
    Ok(())
}
