//! Fills an initialised kms SQLite database with many tokens, fast, for the memory and
//! start-up measurements.
//!
//! ```text
//! kms init --db /tmp/big.db
//! filldb --db /tmp/big.db --tokens 1000000 --batch 10000 [--out tokens.txt]
//! ```
//!
//! Creates one application through kms-core (as the local operator), then generates tokens
//! exactly as `Kms::create_token` does (`token_format::generate`, an argon2id hash of the
//! secret, a `TokenRecord`) but hashes at the cheapest argon2id cost
//! (`kms_core::dangerous::insecure_hash_params`, on every core; `--owasp-cost` for the production
//! cost) and inserts `--batch` tokens per
//! `Store::apply` transaction, without audit events (`kms_benches::BulkFill`, shared with
//! `benches/store.rs`). The server verifies these hashes as it
//! would any other: the cost parameters are read from each PHC string. Prints one JSON line
//! with the application id and the time spent hashing and inserting; `--out` receives the
//! plaintext tokens, one a line (benchmark fixtures only).

use std::error::Error;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use kms_benches::{default_threads, BulkFill};
use kms_core::{HashParams, Kms, NewApp, Scope};
use kms_store::SqliteStore;
use serde_json::json;

/// Bulk-inserts tokens into an initialised kms database.
#[derive(Debug, Parser)]
struct Args {
    /// The database (initialise it first with `kms init`).
    #[arg(long)]
    db: PathBuf,
    /// Tokens to create.
    #[arg(long)]
    tokens: usize,
    /// Tokens per transaction.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// Name of the application created for the tokens.
    #[arg(long, default_value = "bulk")]
    app_name: String,
    /// Scopes of every token.
    #[arg(long, value_delimiter = ',', default_value = "app.read,token.verify")]
    scopes: Vec<String>,
    /// File receiving the plaintext tokens, one a line.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Hash at the production (OWASP) argon2id cost instead of the cheapest; slow: about
    /// 20 ms of CPU per token.
    #[arg(long)]
    owasp_cost: bool,
    /// Hashing threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> Result<(), Box<dyn Error + Send + Sync>> {
    let args = Args::parse();
    let started = Instant::now();
    let store = Arc::new(SqliteStore::open(&args.db)?);
    let kms = Kms::builder(store.clone())
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()?;
    if !kms.is_initialized()? {
        return Err(format!(
            "{} is not initialised: run `kms init` first",
            args.db.display()
        )
        .into());
    }
    let app = kms.create_app(
        &kms.operator(),
        NewApp {
            name: args.app_name.clone(),
            ..NewApp::default()
        },
    )?;
    let scopes = args
        .scopes
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<Vec<_>, _>>()?;
    let params = if args.owasp_cost {
        HashParams::default()
    } else {
        kms_core::dangerous::insecure_hash_params()
    };
    let threads = args.threads.unwrap_or_else(default_threads).max(1);
    let batch_size = args.batch.max(1);
    let mut out = match &args.out {
        Some(path) => Some(BufWriter::new(std::fs::File::create(path)?)),
        None => None,
    };

    let fill = BulkFill {
        app: &app,
        scopes: &scopes,
        params,
        count: args.tokens,
        batch: batch_size,
        threads,
    };
    let times = fill.run(store.as_ref(), |generated| {
        if let Some(out) = out.as_mut() {
            for (plaintext, _) in generated {
                writeln!(out, "{plaintext}")?;
            }
        }
        Ok(())
    })?;
    if let Some(mut out) = out {
        out.flush()?;
    }
    println!(
        "{}",
        json!({
            "db": args.db.display().to_string(),
            "app_id": app.id,
            "tokens": args.tokens,
            "batch": batch_size,
            "hash_threads": threads,
            "hash_params": params,
            "hash_seconds": (times.hashing.as_secs_f64() * 10.0).round() / 10.0,
            "insert_seconds": (times.inserting.as_secs_f64() * 10.0).round() / 10.0,
            "total_seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        })
    );
    Ok(())
}
