//! `kms usage`: the usage reports of an application or a token, read from the database
//! as `GET /v1/apps/{app_id}/usage` and `GET /v1/tokens/{id}/usage` answer them (what the
//! servers flushed; at most one flush interval behind).

use clap::{Args, Subcommand};
use kms_core::{Kms, UsageQuery};

use crate::cli::commands::{print_json, CommandError};

/// `kms usage`.
#[derive(Debug, Clone, Subcommand)]
pub enum UsageCommand {
    /// Print an application's usage report: {"granularity", "series", "totals", "trend",
    /// "cost" (with a usage price)}.
    App {
        /// The application's id.
        app_id: String,
        /// The period.
        #[command(flatten)]
        period: PeriodArgs,
    },
    /// Print a token's usage report: {"granularity", "series", "totals", "trend"}.
    Token {
        /// The token's id (`tok_...`).
        token_id: String,
        /// The period.
        #[command(flatten)]
        period: PeriodArgs,
    },
}

/// The period of a report, as the HTTP query gives it.
#[derive(Debug, Clone, Default, Args)]
pub struct PeriodArgs {
    /// Start (RFC 3339); default --to minus 24 hours (hour) or 30 days (day).
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// End (RFC 3339, exclusive); default now.
    #[arg(long, value_name = "TIME")]
    pub to: Option<String>,
    /// `hour` (default) or `day`.
    #[arg(long, value_name = "hour|day")]
    pub granularity: Option<String>,
}

impl From<PeriodArgs> for UsageQuery {
    fn from(p: PeriodArgs) -> Self {
        UsageQuery {
            from: p.from,
            to: p.to,
            granularity: p.granularity,
        }
    }
}

/// Runs `kms usage ...` as the local operator.
pub(crate) fn usage(kms: &Kms, cmd: UsageCommand) -> Result<(), CommandError> {
    let operator = kms.operator();
    let report = match cmd {
        UsageCommand::App { app_id, period } => {
            kms.app_usage(&operator, &app_id, &period.into())?
        }
        UsageCommand::Token { token_id, period } => {
            kms.token_usage(&operator, &token_id, &period.into())?
        }
    };
    print_json(&report)
}
