//! virtio-blk through the real KVM path (ioeventfds, MSI-X routes / the IOAPIC pin's irqfd) with
//! the probe guest's driver, on both transports: guest writes land in the image file (after a
//! FLUSH) and stay there across a second boot, read-only disks refuse writes, GET_ID answers the
//! configured id, and several queues come up.

use std::fs;
use std::path::Path;

use veil_tests::{temp_dir, veil, veil_fails};

const PATTERN: &str = "00112233445566778899aabbccddeeff";
const PATTERN2: &str = "a5a5a5a5deadbeef0102030405060708";

/// A 1 MiB image whose sector 0 starts with `marker` and whose sector 1 holds `fill` bytes.
fn image(dir: &Path, marker: &[u8; 16], fill: u8) -> std::path::PathBuf {
    let mut bytes = vec![0u8; 1 << 20];
    bytes[..16].copy_from_slice(marker);
    bytes[512..1024].fill(fill);
    let path = dir.join("disk.img");
    fs::write(&path, bytes).unwrap();
    path
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pattern_bytes(p: &str) -> Vec<u8> {
    (0..16)
        .map(|i| u8::from_str_radix(&p[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

fn sector1(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap()[512..1024].to_vec()
}

fn run_blk(transport: &str, disk: &str, cmdline: &str) -> veil_tests::Output {
    let out = veil(&[
        "run",
        "--transport",
        transport,
        "--disk",
        disk,
        "--cmdline",
        cmdline,
    ]);
    out.expect_status(0);
    assert_eq!(
        out.probe_info("blk_transport").as_deref(),
        Some(transport),
        "{out:#?}"
    );
    out
}

fn writes_persist(transport: &str) {
    let dir = temp_dir(&format!("blk-persist-{transport}"));
    let img = image(&dir, b"veil-blk-marker!", 0);
    let disk = format!("path={}", img.display());
    // Boot 1: the guest writes the pattern over sector 1, flushes and reads it back.
    let out = run_blk(
        transport,
        &disk,
        &format!("probe.run=blk probe.blk_write={PATTERN}"),
    );
    assert!(out.stdout.contains("PROBE ok blk\r\n"), "{out:#?}");
    assert_eq!(
        out.probe_info("blk_sector0"),
        Some(hex(b"veil-blk-marker!"))
    );
    assert_eq!(out.probe_info("blk_capacity").as_deref(), Some("2048"));
    let want: Vec<u8> = pattern_bytes(PATTERN).repeat(32);
    assert_eq!(
        sector1(&img),
        want,
        "the guest's write is in the image file"
    );
    // Boot 2 on the same image, read-only: the guest's write attempt is refused and the data of
    // boot 1 is still there afterwards.
    let out = run_blk(
        transport,
        &format!("{disk},readonly=on"),
        &format!("probe.run=blk probe.blk_ro=1 probe.blk_write={PATTERN2}"),
    );
    assert!(out.stdout.contains("PROBE ok blk-ro\r\n"), "{out:#?}");
    assert_eq!(
        out.probe_info("blk_sector0"),
        Some(hex(b"veil-blk-marker!"))
    );
    assert_eq!(sector1(&img), want, "boot 1's data survives boot 2");
    // Boot 3, writable again: a new pattern replaces it.
    run_blk(
        transport,
        &disk,
        &format!("probe.run=blk probe.blk_write={PATTERN2}"),
    );
    assert_eq!(sector1(&img), pattern_bytes(PATTERN2).repeat(32));
}

#[test]
fn guest_writes_reach_the_image_and_survive_a_second_boot_pci() {
    writes_persist("pci");
}

#[test]
fn guest_writes_reach_the_image_and_survive_a_second_boot_mmio() {
    writes_persist("mmio");
}

fn read_only(transport: &str) {
    let dir = temp_dir(&format!("blk-ro-{transport}"));
    let img = image(&dir, b"read-only-disk!!", 0x5a);
    let before = fs::read(&img).unwrap();
    let out = run_blk(
        transport,
        &format!("path={},readonly=on,engine=sync", img.display()),
        &format!("probe.run=blk probe.blk_ro=1 probe.blk_write={PATTERN}"),
    );
    assert!(out.stdout.contains("PROBE ok blk-ro\r\n"), "{out:#?}");
    assert_eq!(fs::read(&img).unwrap(), before, "the image is untouched");
}

#[test]
fn read_only_disks_refuse_guest_writes_pci() {
    read_only("pci");
}

#[test]
fn read_only_disks_refuse_guest_writes_mmio() {
    read_only("mmio");
}

#[test]
fn the_configured_id_and_several_queues_reach_the_guest() {
    let dir = temp_dir("blk-id");
    let img = image(&dir, b"multi-queue-disk", 0);
    for (engine, transport) in [("sync", "pci"), ("auto", "pci"), ("auto", "mmio")] {
        let out = run_blk(
            transport,
            &format!(
                "path={},id=veil-disk-7,num_queues=4,engine={engine}",
                img.display()
            ),
            &format!("probe.run=blk probe.blk_write={PATTERN}"),
        );
        assert_eq!(out.probe_info("blk_id").as_deref(), Some("veil-disk-7"));
        assert_eq!(sector1(&img), pattern_bytes(PATTERN).repeat(32));
        fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    }
}

#[test]
fn a_missing_image_is_a_clear_error() {
    veil_fails(
        &["run", "--disk", "path=/nonexistent/veil.img"],
        1,
        &["/nonexistent/veil.img"],
    );
    veil_fails(
        &["run", "--disk", "path=a,num_queues=0"],
        2,
        &["num_queues"],
    );
}

#[test]
fn o_direct_images_take_guest_writes_with_either_engine() {
    let dir = temp_dir("blk-direct");
    let img = image(&dir, b"direct-io-disk!!", 0);
    for (engine, transport) in [("sync", "mmio"), ("auto", "pci")] {
        let out = veil(&[
            "run",
            "--transport",
            transport,
            "--disk",
            &format!("path={},direct=on,engine={engine}", img.display()),
            "--cmdline",
            &format!("probe.run=blk probe.blk_write={PATTERN}"),
        ]);
        if out.status == Some(1) && out.stderr.contains("Invalid argument") {
            eprintln!(
                "skipping: the file system of {} does not support O_DIRECT: {}",
                dir.display(),
                out.stderr.trim()
            );
            return;
        }
        out.expect_status(0);
        assert!(out.stdout.contains("PROBE ok blk\r\n"), "{out:#?}");
        assert_eq!(sector1(&img), pattern_bytes(PATTERN).repeat(32));
        fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    }
}

/// `poll_us=0` (no polling: every request comes by notification) and the longest window both
/// serve the guest's writes through the real device.
#[test]
fn writes_reach_the_image_with_polling_off_and_at_its_longest() {
    let dir = temp_dir("blk-poll");
    let img = image(&dir, b"polling-setting!", 0);
    for (poll, transport) in [("0", "pci"), ("1000", "mmio")] {
        run_blk(
            transport,
            &format!("path={},poll_us={poll}", img.display()),
            &format!("probe.run=blk probe.blk_write={PATTERN}"),
        );
        assert_eq!(
            sector1(&img),
            pattern_bytes(PATTERN).repeat(32),
            "poll_us={poll}"
        );
        fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    }
    veil_fails(
        &["run", "--disk", "path=a,poll_us=5000"],
        2,
        &["poll_us", "1000"],
    );
}
