//! The serial console goes to stdout, a file, or nowhere.

use veil_tests::{code, run_tiny, temp_dir, veil};

#[test]
fn serial_to_stdout_carries_the_guests_bytes() {
    let out = run_tiny("serial-stdout", &code::print(b"hello\n"));
    out.expect_status(0);
    assert_eq!(out.stdout, "hello\n");
}

#[test]
fn string_io_carries_every_byte() {
    let text = b"rep outsb: one exit, many bytes\n";
    let out = run_tiny("serial-rep", &code::print_rep_outsb(text));
    out.expect_status(0);
    assert_eq!(out.stdout.as_bytes(), text);
}

#[test]
fn serial_to_a_file() {
    let dir = temp_dir("serial-file");
    let log = dir.join("console.log");
    let arg = format!("file={}", log.display());
    let out = veil(&["run", "--serial", &arg]);
    out.expect_status(0);
    assert!(out.stdout.is_empty(), "{out:#?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("PROBE ok boot"), "{text}");
    assert!(text.trim_end().ends_with("PROBE PASS"), "{text}");
}

#[test]
fn serial_off_prints_nothing() {
    let out = veil(&["run", "--serial", "off"]);
    out.expect_status(0);
    assert!(out.stdout.is_empty(), "{out:#?}");
}
