//! How guests end `veil`: the debug-exit value, reset and shutdown as 0, failures as 1 with the
//! vCPU's registers printed.

use veil_tests::{code, run_tiny, veil};

#[test]
fn debug_exit_value_is_the_exit_status() {
    run_tiny("exit42", &code::debug_exit(42)).expect_status(42);
}

#[test]
fn i8042_reset_ends_cleanly() {
    let out = run_tiny("reset", &code::i8042_reset());
    out.expect_status(0);
    assert!(out.stderr.is_empty(), "{out:#?}");
}

#[test]
fn acpi_power_off_ends_cleanly() {
    let out = run_tiny("poweroff", code::ACPI_POWER_OFF);
    out.expect_status(0);
    assert!(out.stderr.is_empty(), "{out:#?}");
}

#[test]
fn triple_fault_fails_and_prints_registers() {
    let out = run_tiny("triple", code::TRIPLE_FAULT);
    out.expect_status(1);
    assert!(out.stderr.contains("triple fault"), "{out:#?}");
    assert!(
        out.stderr.contains("rip=") && out.stderr.contains("cr0="),
        "{out:#?}"
    );
}

#[test]
fn executing_from_the_mmio_hole_fails_and_prints_registers() {
    let out = run_tiny("mmio-exec", code::EXECUTE_MMIO);
    out.expect_status(1);
    assert!(
        out.stderr.contains("vCPU 0: KVM internal error"),
        "{out:#?}"
    );
    assert!(out.stderr.contains("rip="), "{out:#?}");
}
#[test]
fn a_failing_probe_ends_with_status_1() {
    // The probe reports unknown command-line tokens as a failure (docs/probe.md).
    let out = veil(&["run", "--cmdline", "probe.no-such-option"]);
    out.expect_status(1);
    assert!(out.stdout.contains("PROBE FAIL"), "{out:#?}");
}
