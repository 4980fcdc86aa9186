//! Runs `tests/smoke.py`, a client in another language built on Python's standard library,
//! against the real binary. Where no `python3` is installed it does not run: a note, or a
//! failure under `CI=true`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::process::Command;

#[test]
fn python_standard_library_client_smoke_test() {
    let Ok(version) = Command::new("python3").arg("--version").output() else {
        common::cannot_run("python3 not found, so the Python smoke test does not run");
        return;
    };
    if !version.status.success() {
        common::cannot_run("python3 is not usable, so the Python smoke test does not run");
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
