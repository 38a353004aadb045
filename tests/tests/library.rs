//! Veil embedded as a library: launch, wait, stop.

use std::time::Duration;

use veil_tests::{code, temp_dir, tiny_pvh_kernel, write_file};
use veil_vmm::{GuestExit, Kernel, SerialOutput, VmConfig, launch, probe_image};

#[test]
fn launch_the_probe_and_wait_for_it() {
    let dir = temp_dir("lib-probe");
    let console = dir.join("console");
    let config = VmConfig::builder(Kernel::probe())
        .cpus(2)
        .memory(128 << 20)
        .serial(SerialOutput::File(console.clone()))
        .build()
        .unwrap();
    let vm = launch(&config).unwrap();
    assert_eq!(vm.wait(), GuestExit::DebugExit(0));
    assert!(vm.boot_time().is_some());
    let text = std::fs::read_to_string(&console).unwrap();
    assert!(text.contains("PROBE PASS"), "{text}");
}

#[test]
fn a_kernel_image_in_memory_boots() {
    // An embedder hands Veil an image it holds (here: the probe's bzImage, owned).
    let config = VmConfig::builder(Kernel::Image {
        name: "in-memory bzImage".into(),
        bytes: probe_image::PROBE_BZIMAGE.to_vec().into(),
    })
    .memory(64 << 20)
    .serial(SerialOutput::Off)
    .build()
    .unwrap();
    let vm = launch(&config).unwrap();
    assert_eq!(vm.wait(), GuestExit::DebugExit(0));
    assert_eq!(vm.protocol(), veil_vmm::BootProtocol::Linux);
}

#[test]
fn stop_ends_a_guest_that_would_run_forever() {
    let dir = temp_dir("lib-stop");
    let kernel = write_file(&dir, "halt", &tiny_pvh_kernel(code::HALT));
    let config = VmConfig::builder(Kernel::File(kernel))
        .cpus(2)
        .memory(16 << 20)
        .serial(SerialOutput::Off)
        .build()
        .unwrap();
    let vm = launch(&config).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    vm.stop();
    assert_eq!(vm.wait(), GuestExit::Stopped);
}

#[test]
fn the_handle_can_be_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<veil_vmm::VmHandle>();
    send_sync::<VmConfig>();
}

#[test]
fn config_errors_name_the_setting() {
    let err = VmConfig::builder(Kernel::File("k".into()))
        .cpus(0)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("--cpus"));
}
