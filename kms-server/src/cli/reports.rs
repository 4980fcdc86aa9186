//! `kms report compliance` and `kms stats`: the auditor's report and the capacity numbers,
//! read from the database directly as the local operator.

use std::io::Write;

use kms_core::{ComplianceSettings, Kms};

use crate::cli::args::{ReportCompliance, ReportFormat};
use crate::cli::commands::{print_json, CommandError};
use crate::ops::reports;

/// `kms report compliance`: the report in the format asked, on stdout or in `--output`.
pub(crate) fn compliance(
    kms: &Kms,
    settings: &ComplianceSettings,
    args: &ReportCompliance,
) -> Result<(), CommandError> {
    let report = kms.compliance_report(&kms.operator(), settings)?;
    let text = match args.format {
        ReportFormat::Json => {
            let mut json = serde_json::to_string(&report)
                .map_err(|e| CommandError::new(format!("cannot encode the report: {e}")))?;
            json.push('\n');
            json
        }
        ReportFormat::Html => reports::html(&report),
        ReportFormat::Md => reports::markdown(&report),
    };
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|e| {
            CommandError::new(format!(
                "cannot write the report to {}: {e}",
                path.display()
            ))
        }),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|e| CommandError::new(format!("cannot write the report: {e}")))
        }
    }
}

/// `kms stats`: the JSON of `GET /v1/stats`.
pub(crate) fn stats(kms: &Kms) -> Result<(), CommandError> {
    print_json(&kms.stats(&kms.operator())?)
}
