//! Writing audit checkpoints while serving: once the chain has grown by
//! `audit_checkpoint_every` events since the last checkpoint (checked every second), the
//! head is signed ([`Kms::audit_checkpoint`]) and appended to the checkpoint file as one
//! JSON line; once more at shutdown. The file is opened in append mode (created 0600) and
//! synced after each line, so a checkpoint written is a checkpoint kept.
//!
//! At start the file's newest checkpoint is read back: when it records an event beyond
//! the chain's head, the newest events were deleted while kms was down, and an error is
//! logged (and the security event recorded) at once rather than at the next audit.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use kms_core::{AuditCheckpoint, Kms};

/// How often the chain's head is looked at.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// Where checkpoints go and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// The file (JSON lines).
    pub file: PathBuf,
    /// Events between checkpoints.
    pub every: u64,
}

/// Reads every checkpoint of a file (one JSON object a line; blank lines skipped).
pub fn read_checkpoints(path: &Path) -> Result<Vec<AuditCheckpoint>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("cannot read the checkpoint file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line =
            line.map_err(|e| format!("cannot read the checkpoint file {}: {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let cp: AuditCheckpoint = serde_json::from_str(&line).map_err(|e| {
            format!(
                "line {} of {} is not a checkpoint: {e}",
                n + 1,
                path.display()
            )
        })?;
        out.push(cp);
    }
    Ok(out)
}

/// The writer: the file and the newest `seq` checkpointed.
#[derive(Debug)]
pub struct CheckpointWriter {
    settings: CheckpointSettings,
    file: std::fs::File,
    last_seq: u64,
}

impl CheckpointWriter {
    /// Opens (or creates, mode 0600) the file and reads back its newest checkpoint.
    pub fn open(settings: CheckpointSettings, kms: &Kms) -> Result<Self, String> {
        let existing = if settings.file.exists() {
            read_checkpoints(&settings.file)?
        } else {
            Vec::new()
        };
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(&settings.file).map_err(|e| {
            format!(
                "cannot open the audit checkpoint file {} (from the audit_checkpoint_file \
                 setting): {e}",
                settings.file.display()
            )
        })?;
        let last_seq = existing.iter().map(|c| c.seq).max().unwrap_or(0);
        let head = kms.audit_head_seq().map_err(|e| e.to_string())?;
        if last_seq > head {
            tracing::error!(
                checkpoint_seq = last_seq,
                head_seq = head,
                file = %settings.file.display(),
                "the audit checkpoint file records events beyond the chain's head: the newest \
                 audit events were deleted; run `kms audit verify --checkpoint` and investigate"
            );
        }
        Ok(CheckpointWriter {
            settings,
            file,
            last_seq: last_seq.min(head),
        })
    }

    /// Writes a checkpoint when the chain has grown by `every` events (or, with `force`,
    /// by any). Returns the checkpoint written.
    pub fn tick(&mut self, kms: &Kms, force: bool) -> Result<Option<AuditCheckpoint>, String> {
        let head = kms.audit_head_seq().map_err(|e| e.to_string())?;
        let grown = head.saturating_sub(self.last_seq);
        if grown == 0 || (!force && grown < self.settings.every) {
            return Ok(None);
        }
        let Some(cp) = kms.audit_checkpoint().map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let mut line = serde_json::to_vec(&cp).map_err(|e| e.to_string())?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| {
                format!(
                    "cannot write to the audit checkpoint file {}: {e}",
                    self.settings.file.display()
                )
            })?;
        self.last_seq = cp.seq;
        Ok(Some(cp))
    }

    /// Polls every [`POLL_EVERY`] on the blocking pool until `stop` resolves, then writes a
    /// last checkpoint.
    pub async fn run(mut self, kms: Kms, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut ticks = tokio::time::interval(POLL_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let force = tokio::select! {
                _ = ticks.tick() => false,
                () = &mut stop => true,
            };
            let k = kms.clone();
            let done = tokio::task::spawn_blocking(move || {
                let result = self.tick(&k, force);
                (self, result)
            })
            .await;
            match done {
                Ok((writer, result)) => {
                    self = writer;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "writing an audit checkpoint failed");
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the audit checkpoint writer stopped");
                    return;
                }
            }
            if force {
                return;
            }
        }
    }
}
