//! Device interrupts reach the guest: UART -> IOAPIC (Veil's, split irqchip) -> MSI -> the
//! in-kernel local APIC -> the guest's IDT.

use veil_tests::{code, temp_dir, tiny_pvh_kernel, veil, write_file};

#[test]
fn serial_interrupt_is_delivered_through_the_ioapic() {
    let dir = temp_dir("serial-irq");
    let kernel = write_file(&dir, "kernel", &tiny_pvh_kernel(&code::serial_interrupt()));
    let out = veil(&["run", "--kernel", kernel.to_str().unwrap()]);
    out.expect_status(0x33);
    assert_eq!(out.stdout, "!");
}
