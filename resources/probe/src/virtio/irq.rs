//! The `irq` check: one request per transport completed by waiting for its interrupt instead
//! of polling: an MSI-X message for virtio-pci (table entry 0 -> local APIC of the BSP,
//! vector 0x40), an IOAPIC redirection entry for the virtio-mmio pin (vector 0x41).
//!
//! The handlers are the only CPL0 code added for virtio: they count the interrupt, write the
//! local APIC's EOI register and `iretq` (a few emulated instructions per interrupt). Ring 3
//! installs their IDT gates (the IDT is a user-accessible page), software-enables the local
//! APIC, masks the 8259 PICs and LINT0/LINT1, and sets RFLAGS.IF with `sti` (emulated by the
//! #GP handler, see `entry.rs`) only while it waits, bounded by the TSC.

use super::mmio::{self, MmioDev};
use super::pci::{self, PciDev};
use super::virtqueue::{Buf, Virtqueue};
use super::{Device, NO_VECTOR, Transport, dma, kind};
use crate::checks::Why;
use crate::cmdline::Config;
use crate::cpu::KERNEL_CS;
use crate::port::outb;
use crate::tsc::Deadline;
use crate::{info, println};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

/// Vector of the MSI-X message.
pub const MSIX_VECTOR: u8 = 0x40;
/// Vector of the IOAPIC redirection entry.
pub const IOAPIC_VECTOR: u8 = 0x41;
/// The local APIC's spurious-interrupt vector.
const SPURIOUS_VECTOR: u8 = 0xff;
/// The IOAPIC (docs/machine.md).
const IOAPIC_BASE: u64 = 0xfec0_0000;
/// How long to wait for an interrupt.
const WAIT_MS: u64 = 2000;

/// Interrupts taken on `MSIX_VECTOR` and `IOAPIC_VECTOR`.
static MSIX_COUNT: AtomicU64 = AtomicU64::new(0);
/// Interrupts taken on `IOAPIC_VECTOR` (virtio-mmio pins, and COM1 for `serial_in`).
pub static IOAPIC_COUNT: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .text
    .p2align 4
irq_vec_msix:
    add qword ptr [rip + {msix}], 1
    jmp 1f
    .p2align 4
irq_vec_ioapic:
    add qword ptr [rip + {ioapic}], 1
1:
    push rax
    mov rax, [rip + apic_base]
    mov dword ptr [rax + 0xb0], 0
    pop rax
    iretq
    .p2align 4
irq_vec_spurious:
    iretq
"#,
    msix = sym MSIX_COUNT,
    ioapic = sym IOAPIC_COUNT,
);

unsafe extern "C" {
    static idt: u8;
    static apic_base: u64;
    fn irq_vec_msix();
    fn irq_vec_ioapic();
    fn irq_vec_spurious();
}

fn apic() -> u64 {
    // SAFETY: written once at CPL0 before ring 3 ran; read-only afterwards.
    unsafe { core::ptr::addr_of!(apic_base).read_volatile() }
}

fn lapic_read(reg: u64) -> u32 {
    super::reg::r32(apic() + reg)
}

fn lapic_write(reg: u64, v: u32) {
    super::reg::w32(apic() + reg, v)
}

/// Writes an interrupt gate (DPL 0, no IST) for `handler` at `vector`.
fn set_gate(vector: u8, handler: unsafe extern "C" fn()) {
    let off = handler as usize as u64;
    let low =
        (off & 0xffff) | u64::from(KERNEL_CS) << 16 | 0x8e << 40 | ((off >> 16) & 0xffff) << 48;
    let gate = (core::ptr::addr_of!(idt) as *mut u64).wrapping_add(2 * usize::from(vector));
    // SAFETY: the IDT has 256 16-byte gates in identity-mapped user RAM; this vector's gate is
    // unused (no source raises it yet: IF is clear and nothing is routed to it).
    unsafe {
        gate.write_volatile(low);
        gate.add(1).write_volatile(off >> 32);
    }
}

/// Gates, local APIC on, legacy interrupt sources masked. Returns the BSP's APIC id.
pub fn setup() -> u32 {
    set_gate(MSIX_VECTOR, irq_vec_msix);
    set_gate(IOAPIC_VECTOR, irq_vec_ioapic);
    set_gate(SPURIOUS_VECTOR, irq_vec_spurious);
    outb(0x21, 0xff);
    outb(0xa1, 0xff);
    lapic_write(0x350, lapic_read(0x350) | 1 << 16); // LINT0 masked
    lapic_write(0x360, lapic_read(0x360) | 1 << 16); // LINT1 masked
    lapic_write(0x80, 0); // TPR: accept every priority
    lapic_write(0xf0, 0x100 | u32::from(SPURIOUS_VECTOR)); // software enable
    lapic_read(0x20) >> 24
}

pub fn interrupts_on() -> bool {
    // SAFETY: `sti` from ring 3 raises #GP, whose handler sets IF and returns past it.
    unsafe { asm!("sti", options(nomem, nostack)) };
    let flags: u64;
    // SAFETY: pushfq/pop only touch their stack slot.
    unsafe { asm!("pushfq", "pop {}", out(reg) flags) };
    flags & 0x200 != 0
}

pub fn interrupts_off() {
    // SAFETY: as in `interrupts_on`; the handler clears IF.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Runs the `irq` check on each transport that has an rng, blk or console device.
pub fn check(cfg: &Config) -> Result<(), Why> {
    const KINDS: [u32; 3] = [kind::RNG, kind::BLK, kind::CONSOLE];
    let p = pci::find(&KINDS)?;
    let m = mmio::find(&KINDS, cfg)?;
    if p.is_none() && m.is_none() {
        return Err(Why::Text(
            "no virtio-rng, virtio-blk or virtio-console device on either transport",
        ));
    }
    let apic_id = setup();
    let mut ok = true;
    if let Some(d) = p {
        ok &= report("irq-msix", msix(d, apic_id));
    }
    if let Some(d) = m {
        ok &= report("irq-mmio", ioapic(d, apic_id));
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

/// A request ready to go: the queue and its chain.
struct Request {
    vq: Virtqueue,
    bufs: [Buf; 3],
    n: usize,
}

/// Sets up the queues of `dev` (request queue with MSI-X `vector`) and builds one request:
/// rng: 16 random bytes; blk: read sector 0; console: one line on port 0.
fn prepare(dev: &Device, kind: u32, vector: u16) -> Result<Request, Why> {
    let mem = dma(2 * 4096)?;
    let (vq, bufs, n) = match kind {
        kind::RNG => (dev.queue(0, vector)?, [Buf::write(mem, 16); 3], 1),
        kind::BLK => {
            // SAFETY: fresh DMA memory: a read request header for sector 0.
            unsafe { super::bytes(mem, 16) }.fill(0);
            let bufs = [
                Buf::read(mem, 16),
                Buf::write(mem + 4096, 512),
                Buf::write(mem + 16, 1),
            ];
            (dev.queue(0, vector)?, bufs, 3)
        }
        _ => {
            const LINE: &[u8] = b"virtio-console: interrupt test\n";
            dev.queue(0, NO_VECTOR)?;
            // SAFETY: fresh DMA memory.
            unsafe { super::bytes(mem, LINE.len()) }.copy_from_slice(LINE);
            let b = Buf::read(mem, LINE.len() as u32);
            (dev.queue(1, vector)?, [b; 3], 1)
        }
    };
    Ok(Request { vq, bufs, n })
}

/// Submits `req` and waits with IF set until `count` moves; then checks the completion.
fn submit_and_wait(dev: &Device, mut req: Request, count: &AtomicU64) -> Result<(), Why> {
    req.vq.set_interrupts(true);
    dev.ready()?;
    let before = count.load(Ordering::Acquire);
    let head = req.vq.add(&req.bufs[..req.n])?;
    dev.t.notify(&req.vq);
    if !interrupts_on() {
        return Err(Why::Text("ring 3 could not set RFLAGS.IF (sti emulation)"));
    }
    let dl = Deadline::after_ms(WAIT_MS);
    while count.load(Ordering::Acquire) == before && !dl.expired() {
        core::hint::spin_loop();
    }
    interrupts_off();
    let done = req.vq.poll()?;
    if count.load(Ordering::Acquire) == before {
        return Err(match done {
            Some(_) => Why::Text("the request completed but no interrupt arrived within 2 s"),
            None => Why::Text("neither a completion nor an interrupt within 2 s"),
        });
    }
    match done {
        Some((id, _)) if id == head => Ok(()),
        Some((id, _)) => Err(Why::At(
            "the device completed an unexpected chain",
            id.into(),
        )),
        None => Err(Why::Text(
            "an interrupt arrived but the used ring holds no completion",
        )),
    }
}

fn msix(d: PciDev, apic_id: u32) -> Result<(), Why> {
    let kind = d.kind;
    info!("irq_msix_device", "virtio-{}", super::kind::name(kind));
    d.msix_route(0, apic_id, MSIX_VECTOR)?;
    let dev = Device::init(Transport::Pci(d), 0)?;
    let r = prepare(&dev, kind, 0).and_then(|req| submit_and_wait(&dev, req, &MSIX_COUNT));
    if let Transport::Pci(d) = &dev.t {
        d.msix_mask(0);
    }
    dev.reset();
    r
}

pub fn ioapic_write(reg: u32, v: u32) {
    super::reg::w32(IOAPIC_BASE, reg);
    super::reg::w32(IOAPIC_BASE + 0x10, v);
}

fn ioapic_read(reg: u32) -> u32 {
    super::reg::w32(IOAPIC_BASE, reg);
    super::reg::r32(IOAPIC_BASE + 0x10)
}

fn ioapic(d: MmioDev, apic_id: u32) -> Result<(), Why> {
    let kind = d.kind;
    let pin = d.window.irq;
    info!("irq_mmio_device", "virtio-{}", super::kind::name(kind));
    info!("irq_mmio_pin", "{}", pin);
    let entries = ((ioapic_read(1) >> 16) & 0xff) + 1;
    if pin >= entries {
        return Err(Why::At("the IOAPIC has no pin", pin.into()));
    }
    let dev = Device::init(Transport::Mmio(d), 0)?;
    // Fixed delivery, physical destination, edge-triggered, active high, unmasked.
    let reg = 0x10 + 2 * pin;
    ioapic_write(reg + 1, (apic_id & 0xff) << 24);
    ioapic_write(reg, u32::from(IOAPIC_VECTOR));
    let r = prepare(&dev, kind, NO_VECTOR)
        .and_then(|req| submit_and_wait(&dev, req, &IOAPIC_COUNT))
        .and_then(|()| match &dev.t {
            Transport::Mmio(m) if m.ack_interrupt() & 1 == 0 => Err(Why::Text(
                "the interrupt status does not show a used-buffer notification",
            )),
            _ => Ok(()),
        });
    ioapic_write(reg, 1 << 16 | u32::from(IOAPIC_VECTOR));
    dev.reset();
    r
}
