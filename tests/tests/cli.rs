//! The `veil` binary starts and answers as a command line should.

use std::process::Command;

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = Command::new(veil_tests::bin("veil"))
        .arg("--no-such-flag")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}
