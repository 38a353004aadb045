//! virtio-rng and virtio-console through the real KVM path on both transports, each with one
//! interrupt-driven completion (MSI-X on PCI, the IOAPIC pin's irqfd on MMIO).

use std::fs;

use veil_tests::{temp_dir, veil, veil_fails};

fn rng_and_irq(transport: &str) {
    let out = veil(&[
        "run",
        "--transport",
        transport,
        "--rng",
        "--cmdline",
        "probe.run=rng,irq",
    ]);
    out.expect_status(0);
    assert!(out.stdout.contains("PROBE ok rng\r\n"), "{out:#?}");
    assert_eq!(out.probe_info("rng_transport").as_deref(), Some(transport));
    let irq = if transport == "pci" {
        "PROBE ok irq-msix\r\n"
    } else {
        "PROBE ok irq-mmio\r\n"
    };
    assert!(out.stdout.contains(irq), "{out:#?}");
}

#[test]
fn rng_reads_differ_and_interrupts_arrive_pci() {
    rng_and_irq("pci");
}

#[test]
fn rng_reads_differ_and_interrupts_arrive_mmio() {
    rng_and_irq("mmio");
}

fn console(transport: &str) {
    let dir = temp_dir(&format!("console-{transport}"));
    let sink = dir.join("console.txt");
    let out = veil(&[
        "run",
        "--transport",
        transport,
        "--console",
        &format!("file={}", sink.display()),
        "--cmdline",
        "probe.run=console,irq",
    ]);
    out.expect_status(0);
    assert!(out.stdout.contains("PROBE ok console\r\n"), "{out:#?}");
    let text = fs::read_to_string(&sink).unwrap();
    assert!(
        text.contains("virtio-console: hello from the probe\n"),
        "{text:?}"
    );
    // The irq check's request on the console (no rng or disk here) completed too.
    assert!(
        text.contains("virtio-console: interrupt test\n"),
        "{text:?}"
    );
    // And the serial console did not get it.
    assert!(!out.stdout.contains("hello from the probe"), "{out:#?}");
}

#[test]
fn console_output_reaches_its_file_pci() {
    console("pci");
}

#[test]
fn console_output_reaches_its_file_mmio() {
    console("mmio");
}

#[test]
fn console_to_stdio_shares_the_serial_stream() {
    let out = veil(&[
        "run",
        "--console",
        "stdio",
        "--cmdline",
        "probe.run=console",
    ]);
    out.expect_status(0);
    assert!(
        out.stdout
            .contains("virtio-console: hello from the probe\n"),
        "{out:#?}"
    );
}

#[test]
fn devices_mixed_across_transports() {
    // The rng on virtio-mmio, the console on virtio-pci: both checks find their device and
    // the irq check drives one of each transport.
    let dir = temp_dir("mixed");
    let sink = dir.join("c.txt");
    let img = dir.join("d.img");
    fs::write(&img, vec![0u8; 1 << 16]).unwrap();
    let out = veil(&[
        "run",
        "--transport",
        "mmio",
        "--rng",
        "--disk",
        &format!("path={},transport=pci", img.display()),
        "--console",
        &format!("file={}", sink.display()),
        "--cmdline",
        "probe.run=blk,rng,console,irq",
    ]);
    out.expect_status(0);
    assert_eq!(out.probe_info("rng_transport").as_deref(), Some("mmio"));
    assert_eq!(out.probe_info("blk_transport").as_deref(), Some("pci"));
    assert_eq!(out.probe_info("console_transport").as_deref(), Some("mmio"));
    assert!(out.stdout.contains("PROBE ok irq-msix\r\n"), "{out:#?}");
    assert!(out.stdout.contains("PROBE ok irq-mmio\r\n"), "{out:#?}");
}

#[test]
fn confidential_flags_with_virtio_devices_fail_only_for_what_is_missing() {
    // Virtio devices are allowed for confidential guests now (tests/tests/guest_memfd.rs);
    // a dry run without a platform is still a usage error, naming --platform.
    veil_fails(&["run", "--dry-run", "--rng"], 2, &["need --platform"]);
}
