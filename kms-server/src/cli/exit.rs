//! The exit statuses of `kms`, each with one meaning; `kms --help` lists them
//! ([`statuses_help`]) and `docs/API.md` documents them.

/// The command did what was asked.
pub const SUCCESS: u8 = 0;
/// The command failed; the reason is on stderr.
pub const FAILURE: u8 = 1;
/// The command line was not understood (clap's usage error; the reason is on stderr).
pub const USAGE: u8 = 2;
/// `kms verify --fail-invalid`: the token is not valid (the verdict is printed either way).
pub const INVALID_TOKEN: u8 = 3;
/// `kms audit verify`: the audit chain is broken (the verdict is printed either way).
pub const AUDIT_CHAIN_BROKEN: u8 = 4;
/// `kms db check`: a check failed — integrity, migrations or the audit chain (the report
/// is printed either way, the failures named on stderr).
pub const DB_CHECK_FAILED: u8 = 5;

/// The list of exit statuses shown after `kms --help`.
pub(crate) fn statuses_help() -> String {
    format!(
        "Exit status: {SUCCESS} done; {FAILURE} failed (the reason is on stderr); {USAGE} the \
         command line was not understood; {INVALID_TOKEN} `kms verify --fail-invalid`: the \
         token is not valid; {AUDIT_CHAIN_BROKEN} `kms audit verify`: the audit chain is \
         broken; {DB_CHECK_FAILED} `kms db check`: a check failed."
    )
}

/// The help of `kms verify --fail-invalid`.
pub(crate) fn fail_invalid_help() -> String {
    format!("Exit with status {INVALID_TOKEN} when the token is not valid (the verdict is printed either way)")
}

/// The description of `kms audit verify`.
pub(crate) fn audit_verify_about() -> String {
    format!(
        "Check the whole hash chain of the audit log (from its retention anchor, if events \
         were pruned); prints the verdict as `GET /v1/audit/verify` does and exits with \
         status {AUDIT_CHAIN_BROKEN} when the chain is broken"
    )
}

/// The description of `kms db check`.
pub(crate) fn db_check_about() -> String {
    format!(
        "Check the database for a maintenance window: integrity (SQLite's integrity_check), \
         migration status and the audit chain; prints the report and exits with status \
         {DB_CHECK_FAILED} when a check fails"
    )
}
