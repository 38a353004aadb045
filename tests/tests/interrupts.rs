//! Device interrupts reach the guest: UART -> IOAPIC (Veil's, split irqchip) -> MSI -> the
//! in-kernel local APIC -> the guest's IDT.

use veil_tests::{code, run_tiny};

#[test]
fn serial_interrupt_is_delivered_through_the_ioapic() {
    let out = run_tiny("serial-irq", &code::serial_interrupt());
    out.expect_status(0x33);
    assert_eq!(out.stdout, "!");
}
