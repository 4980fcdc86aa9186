//! Decision logs, as Open Policy Agent keeps them: one record per sampled verification with
//! the token id, the caller's application, the query, the names of the context values
//! (their values only when configured), the decision and its code. Never a token or any
//! other secret. Off unless `--decision-log` or `--decision-log-file`.
//!
//! A record goes either to the structured log (target `kms::decision`, a line at `info`)
//! or, with `--decision-log-file`, to that file as one JSON object per line with the same
//! fields and a `timestamp`. The file is opened once at start-up in append mode (created
//! with mode 0600 when missing) and written by a thread of its own, so a slow disk never
//! holds up a verification: records queue (at most [`FILE_QUEUE`]) and those that find the
//! queue full are dropped and counted in a warning.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kms_core::{Caller, Clock, SystemClock, Verification, VerifyRequest};

/// How decisions are logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionLogSettings {
    /// Share of decisions logged, in millionths.
    pub sample_per_million: u32,
    /// Whether context values are logged too (otherwise only their names).
    pub with_values: bool,
    /// Append records to this file (JSON lines) instead of the structured log.
    pub file: Option<PathBuf>,
}

/// Records waiting for the file writer, at most; more are dropped (and counted).
pub const FILE_QUEUE: usize = 10_000;

/// The decision logger of this process, made by [`DecisionLog::open`] and put in place by
/// [`install`].
#[derive(Debug)]
pub struct DecisionLog {
    sample_per_million: u32,
    with_values: bool,
    sink: Sink,
}

#[derive(Debug)]
enum Sink {
    /// The structured log, target `kms::decision`.
    Log,
    /// The file writer's queue.
    File(FileSink),
}

#[derive(Debug)]
struct FileSink {
    queue: SyncSender<Message>,
    /// Records dropped because the queue was full, since the writer last reported.
    dropped: std::sync::Arc<AtomicU64>,
}

/// What the file writer is sent.
#[derive(Debug)]
enum Message {
    /// A record: one JSON line, newline included.
    Line(Vec<u8>),
    /// Answer once every record sent before is written.
    Flush(mpsc::Sender<()>),
}

impl DecisionLog {
    /// Prepares logging as `settings` say: for a file, opens it (append mode, created with
    /// mode 0600 when missing) and starts its writer. Fails when the file cannot be opened.
    pub fn open(settings: &DecisionLogSettings) -> Result<DecisionLog, String> {
        let sink = match &settings.file {
            None => Sink::Log,
            Some(path) => Sink::File(FileSink::open(path)?),
        };
        Ok(DecisionLog {
            sample_per_million: settings.sample_per_million,
            with_values: settings.with_values,
            sink,
        })
    }

    /// Hands a record to its sink.
    fn emit(&self, record: &Record<'_>) {
        match &self.sink {
            Sink::Log => tracing::info!(
                target: "kms::decision",
                caller_app = record.caller_app,
                caller_token = record.caller_token,
                token_id = record.token_id,
                app_id = record.app_id,
                query = record.query,
                context_keys = %record.context_keys,
                context = record.context,
                decision = record.decision,
                code = record.code,
                "decision"
            ),
            Sink::File(file) => file.send(record),
        }
    }
}

impl FileSink {
    fn open(path: &Path) -> Result<FileSink, String> {
        let mut options = std::fs::OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path).map_err(|e| {
            format!(
                "cannot open the decision log file {} (from the decision_log_file setting): {e}",
                path.display()
            )
        })?;
        let (queue, received) = mpsc::sync_channel(FILE_QUEUE);
        let dropped = std::sync::Arc::new(AtomicU64::new(0));
        let writer = Writer {
            file,
            path: path.to_path_buf(),
            dropped: dropped.clone(),
            failing: false,
        };
        std::thread::Builder::new()
            .name("kms-decision-log".to_owned())
            .spawn(move || writer.run(received))
            .map_err(|e| format!("cannot start the decision log writer: {e}"))?;
        Ok(FileSink { queue, dropped })
    }

    fn send(&self, record: &Record<'_>) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "a decision record could not be encoded");
                return;
            }
        };
        line.push(b'\n');
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => {
                // The writer is gone (it only stops when the queue closes): nothing to do.
            }
        }
    }

    /// Waits until every record sent so far is written, for at most `timeout`.
    fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (done, wait) = mpsc::channel();
        let mut message = Message::Flush(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        wait.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// The thread that appends records to the file.
struct Writer {
    file: std::fs::File,
    path: PathBuf,
    dropped: std::sync::Arc<AtomicU64>,
    /// Whether the last write failed (so a run of failures is reported once).
    failing: bool,
}

impl Writer {
    fn run(mut self, received: Receiver<Message>) {
        for message in received {
            match message {
                Message::Line(line) => self.write(&line),
                Message::Flush(done) => {
                    let _ = self.file.flush();
                    let _ = done.send(());
                }
            }
        }
    }

    /// One record, in one `write` of the whole line (the file is in append mode, so lines
    /// of several processes sharing the file do not interleave within a line).
    fn write(&mut self, line: &[u8]) {
        match self.file.write_all(line) {
            Ok(()) => {
                if self.failing {
                    self.failing = false;
                    tracing::info!(file = %self.path.display(), "decision records are written again");
                }
            }
            Err(e) => {
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        file = %self.path.display(),
                        error = %e,
                        "cannot write decision records; they are lost until writing works again"
                    );
                }
            }
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                file = %self.path.display(),
                dropped,
                "decision records were dropped: the file writer fell behind"
            );
        }
    }
}

/// One decision, as logged: the fields of the `kms::decision` log line.
#[derive(Debug, serde::Serialize)]
struct Record<'a> {
    /// When it was decided (the file only; log lines carry their own).
    timestamp: String,
    caller_app: &'a str,
    caller_token: &'a str,
    token_id: &'a str,
    app_id: &'a str,
    query: &'a str,
    /// The context's names, comma-separated.
    context_keys: String,
    /// The context as JSON text with `--decision-log-values`; empty otherwise.
    context: &'a str,
    decision: &'static str,
    code: &'static str,
}

static LOGGER: OnceLock<DecisionLog> = OnceLock::new();

/// Turns decision logging on for this process (the first call wins).
pub fn install(log: DecisionLog) {
    let _ = LOGGER.set(log);
}

/// Waits (at most `timeout`) until the records logged so far are in the decision log file,
/// when there is one; at shutdown. Whether everything was written.
pub fn flush(timeout: Duration) -> bool {
    match LOGGER.get().map(|l| &l.sink) {
        Some(Sink::File(file)) => file.flush(timeout),
        _ => true,
    }
}

fn sampled(per_million: u32) -> bool {
    if per_million >= 1_000_000 {
        return true;
    }
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).is_ok() && u32::from_le_bytes(b) % 1_000_000 < per_million
}

/// What a decision record needs from the request, taken before the request is consumed.
#[derive(Debug, Default)]
pub struct Pending {
    query: Option<String>,
    context: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Whether this request's decision is logged; if so, what of the request the record needs.
pub fn start(req: &VerifyRequest) -> Option<Pending> {
    let log = LOGGER.get()?;
    if !sampled(log.sample_per_million) {
        return None;
    }
    let query = req
        .permissions
        .clone()
        .or_else(|| req.scopes.as_ref().map(|s| s.join(" AND ")));
    Some(Pending {
        query,
        context: req.context.clone(),
    })
}

/// Writes the record of a decision started with [`start`].
pub fn finish(pending: Pending, caller: &Caller, v: &Verification) {
    let Some(log) = LOGGER.get() else {
        return;
    };
    let keys: Vec<&str> = pending
        .context
        .as_ref()
        .map(|c| c.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let values = if log.with_values {
        pending
            .context
            .as_ref()
            .map(|c| serde_json::Value::Object(c.clone()).to_string())
    } else {
        None
    };
    log.emit(&Record {
        timestamp: SystemClock.now().to_rfc3339(),
        caller_app: caller.app_id(),
        caller_token: caller.token_id().unwrap_or(""),
        token_id: v.token_id().unwrap_or(""),
        app_id: v.app_id().unwrap_or(""),
        query: pending.query.as_deref().unwrap_or(""),
        context_keys: keys.join(","),
        context: values.as_deref().unwrap_or(""),
        decision: if v.is_valid() { "allow" } else { "deny" },
        code: v.code().as_str(),
    });
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    fn record() -> Record<'static> {
        Record {
            timestamp: "2026-01-01T00:00:00Z".to_owned(),
            caller_app: "app_system",
            caller_token: "tok_1",
            token_id: "tok_2",
            app_id: "app_x",
            query: "app.read",
            context_keys: "region".to_owned(),
            context: "",
            decision: "allow",
            code: "VALID",
        }
    }

    #[test]
    fn the_file_gets_one_json_line_per_record_appended_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("decisions.jsonl");
        std::fs::write(&path, "{\"earlier\":true}\n").unwrap();
        let sink = FileSink::open(&path).unwrap();
        sink.send(&record());
        sink.send(&record());
        assert!(sink.flush(Duration::from_secs(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0]["earlier"], true, "appended, not truncated");
        assert_eq!(lines[1]["code"], "VALID");
        assert_eq!(lines[2]["context_keys"], "region");

        let fresh = dir.path().join("new.jsonl");
        let sink = FileSink::open(&fresh).unwrap();
        sink.send(&record());
        assert!(sink.flush(Duration::from_secs(5)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&fresh).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        }
    }

    #[test]
    fn a_file_that_cannot_be_opened_names_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let err = FileSink::open(&dir.path().join("missing/dir/file")).unwrap_err();
        assert!(err.contains("decision_log_file"), "{err}");
    }
}
