//! Every node hears every change: each batch announces its changes with `pg_notify` inside
//! its own transaction (a rolled-back batch announces nothing), and each store runs one
//! listener connection on its own thread that feeds what it hears to the store's change
//! hook, exactly as a local commit does. A batch too large for one notification, and every
//! (re)connection of the listener, announce "flush": caches are dropped and definitions
//! reloaded, since something may have been missed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::{Client, Config, NoTls};
use kms_core::store::Change;

use crate::listeners::Listeners;

/// The channel every node listens on.
pub(crate) const CHANNEL: &str = "kms_changes";

/// PostgreSQL refuses payloads of 8,000 bytes or more.
const MAX_PAYLOAD: usize = 7_900;

/// The payload that means "something may have been missed: drop everything".
const FLUSH: &str = "flush";

/// How long the listener waits for a notification before checking whether to stop, and
/// before reconnecting after a failure.
const POLL: Duration = Duration::from_millis(500);

/// A name for one store instance, carried in its notifications so that its own listener
/// skips what the store already told its listeners at commit: process id, start time and a
/// counter.
pub(crate) fn origin() -> String {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// The notification payload for `changes` from `origin`: the origin, then one line per
/// change; [`FLUSH`] when too large.
pub(crate) fn encode(origin: &str, changes: &[Change]) -> String {
    let mut out = format!("from {origin}\n");
    for change in changes {
        let line = match change {
            Change::Token(id) => format!("token {id}"),
            Change::App(id) => format!("app {id}"),
            Change::Policy => "policy".to_owned(),
            Change::Keys => "keys".to_owned(),
            Change::Revocation(id) => format!("revocation {id}"),
            // A kind of change this version does not know: the receivers flush.
            _ => return FLUSH.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if out.len() > MAX_PAYLOAD {
        return FLUSH.to_owned();
    }
    out
}

/// The changes a payload announces. "flush", or anything not understood, becomes a policy
/// change (which drops every cached key and recompiles) and a key change (which reloads
/// the signing keys).
pub(crate) fn decode(payload: &str) -> Vec<Change> {
    decode_from(payload).1
}

/// The origin (when the payload names one) and the changes of a payload.
fn decode_from(payload: &str) -> (Option<&str>, Vec<Change>) {
    let flush = || vec![Change::Policy, Change::Keys];
    let mut lines = payload.lines().peekable();
    let origin = lines
        .peek()
        .and_then(|l| l.strip_prefix("from "))
        .inspect(|_| {
            lines.next();
        });
    let mut changes = Vec::new();
    for line in lines {
        let change = match line.split_once(' ') {
            Some(("token", id)) => Change::Token(id.to_owned()),
            Some(("app", id)) => Change::App(id.to_owned()),
            Some(("revocation", id)) => Change::Revocation(id.to_owned()),
            None if line == "policy" => Change::Policy,
            None if line == "keys" => Change::Keys,
            _ => return (origin, flush()),
        };
        changes.push(change);
    }
    (origin, changes)
}

/// The listener thread of one store; stops when the store is dropped.
pub(crate) struct ChangeFeed {
    stop: Arc<AtomicBool>,
}

impl ChangeFeed {
    /// Starts listening on `config`'s database, feeding `listeners` every change announced
    /// by a store other than `own` (the store's own changes were told at commit).
    pub(crate) fn start(
        config: Config,
        listeners: Arc<Listeners>,
        own: String,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("kms-pg-changes".to_owned())
            .spawn(move || listen(&config, &listeners, &own, &flag))?;
        Ok(ChangeFeed { stop })
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn listen(config: &Config, listeners: &Listeners, own: &str, stop: &AtomicBool) {
    let mut connected_before = false;
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut client) = connect(config) else {
            std::thread::sleep(POLL);
            continue;
        };
        // Changes made while this node was not listening are unknown: flush. (The first
        // connection needs none: the store has just been opened and nothing is cached.)
        if connected_before {
            listeners.notify_changes(&decode(FLUSH));
        }
        connected_before = true;
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            // A fresh iterator each time: one whose wait has run out answers at once.
            let heard = client.notifications().timeout_iter(POLL).next();
            match heard {
                Ok(Some(n)) => match decode_from(n.payload()) {
                    (Some(origin), _) if origin == own => {}
                    (_, changes) => listeners.notify_changes(&changes),
                },
                Ok(None) if client.is_closed() => break, // reconnect
                Ok(None) => {}
                Err(_) => break, // the connection failed: reconnect
            }
        }
    }
}

fn connect(config: &Config) -> Result<Client, ::postgres::Error> {
    let mut client = config.connect(NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANNEL}"))?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_a_payload() {
        let changes = vec![
            Change::Token("tok_a".into()),
            Change::App("app_b".into()),
            Change::Policy,
            Change::Keys,
            Change::Revocation("family:fam_1".into()),
        ];
        let payload = encode("node-a", &changes);
        assert_eq!(decode(&payload), changes);
        assert_eq!(decode_from(&payload).0, Some("node-a"));
    }

    #[test]
    fn too_many_changes_or_an_unknown_payload_flush() {
        let many: Vec<Change> = (0..1000)
            .map(|i| Change::Token(format!("tok_{i:010}")))
            .collect();
        assert_eq!(encode("node-a", &many), FLUSH);
        assert_eq!(decode(FLUSH), vec![Change::Policy, Change::Keys]);
        assert_eq!(decode("gibberish"), vec![Change::Policy, Change::Keys]);
    }
}
