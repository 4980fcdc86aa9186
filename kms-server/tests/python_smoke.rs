//! Runs `tests/smoke.py`, a client in another language built on Python's standard library,
//! against the real binary. Skipped (with a note) where no `python3` is installed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::process::Command;

#[test]
fn python_standard_library_client_smoke_test() {
    let Ok(version) = Command::new("python3").arg("--version").output() else {
        eprintln!("python3 not found; skipping the Python smoke test");
        return;
    };
    if !version.status.success() {
        eprintln!("python3 not usable; skipping the Python smoke test");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smoke.py");
    let out = Command::new("python3")
        .arg(script)
        .arg("--kms")
        .arg(env!("CARGO_BIN_EXE_kms"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "smoke.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("smoke test passed"), "{stdout}");
}
