//! Helpers for Veil's integration tests: locate the built binaries and run them as processes.

use std::path::PathBuf;

/// The directory holding the workspace's built binaries (`target/<profile>`).
///
/// Test executables live in `target/<profile>/deps`; the binaries one level up. Build them first
/// with `cargo build --workspace --bins` (the README's test command does).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("a test knows its own executable path");
    let deps = exe
        .parent()
        .expect("test executables live in target/<profile>/deps");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// Path of a workspace binary such as `veil` or `veil-jailer`; fails the test if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before the tests",
        path.display()
    );
    path
}

pub mod ovmf_image;

/// Whether an external tool runs (`tool --version` or, as openssl wants, `tool version` exits
/// 0); tests that compare against it are skipped with a printed reason when it does not.
pub fn have_tool(tool: &str) -> bool {
    ["--version", "version"].iter().any(|arg| {
        std::process::Command::new(tool)
            .arg(arg)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// A fresh scratch directory for one test.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("veil-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the temp directory is writable");
    dir
}
