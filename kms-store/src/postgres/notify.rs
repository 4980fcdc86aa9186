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

/// How often the listener compares the change counter with the notifications it heard; a
/// batch counted but not heard by the next check means a missed notification: flush.
const CHECK_EVERY: Duration = Duration::from_secs(2);

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

/// The notification payload for `changes` from `origin`, the batch that made the change
/// counter `seq`: a first line `from <origin> <seq>`, then one line per change; a single
/// `flush` line when they would not fit.
pub(crate) fn encode(origin: &str, seq: i64, changes: &[Change]) -> String {
    let head = format!("from {origin} {seq}\n");
    let mut out = head.clone();
    for change in changes {
        let line = match change {
            Change::Token(id) => format!("token {id}"),
            Change::App(id) => format!("app {id}"),
            Change::Policy => "policy".to_owned(),
            Change::Keys => "keys".to_owned(),
            Change::Revocation(id) => format!("revocation {id}"),
            Change::User(id) => format!("user {id}"),
            Change::Idp(id) => format!("idp {id}"),
            Change::Session(id) => format!("session {id}"),
            // A kind of change this version does not know: the receivers flush.
            _ => return format!("{head}{FLUSH}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    if out.len() > MAX_PAYLOAD {
        return format!("{head}{FLUSH}");
    }
    out
}

/// The changes a payload announces. "flush", or anything not understood, becomes a policy
/// change (which drops every cached key and recompiles) and a key change (which reloads
/// the signing keys).
pub(crate) fn decode(payload: &str) -> Vec<Change> {
    decode_from(payload).changes
}

/// A decoded notification.
#[derive(Debug, PartialEq, Eq)]
struct Heard<'a> {
    /// The store that sent it, when it says.
    origin: Option<&'a str>,
    /// The change counter its batch made, when it says.
    seq: Option<i64>,
    changes: Vec<Change>,
}

/// The origin and counter (when the payload names them) and the changes of a payload.
fn decode_from(payload: &str) -> Heard<'_> {
    let flush = || vec![Change::Policy, Change::Keys];
    let mut lines = payload.lines().peekable();
    let (origin, seq) = match lines.peek().and_then(|l| l.strip_prefix("from ")) {
        Some(rest) => {
            lines.next();
            match rest.split_once(' ') {
                Some((origin, seq)) => (Some(origin), seq.parse().ok()),
                None => (Some(rest), None),
            }
        }
        None => (None, None),
    };
    let mut changes = Vec::new();
    for line in lines {
        let change = match line.split_once(' ') {
            Some(("token", id)) => Change::Token(id.to_owned()),
            Some(("app", id)) => Change::App(id.to_owned()),
            Some(("revocation", id)) => Change::Revocation(id.to_owned()),
            Some(("user", id)) => Change::User(id.to_owned()),
            Some(("idp", id)) => Change::Idp(id.to_owned()),
            Some(("session", id)) => Change::Session(id.to_owned()),
            None if line == "policy" => Change::Policy,
            None if line == "keys" => Change::Keys,
            _ => {
                changes = flush();
                break;
            }
        };
        changes.push(change);
    }
    Heard {
        origin,
        seq,
        changes,
    }
}

/// Reads the change counter (0 before the first change).
pub(crate) fn read_seq(client: &mut Client) -> Result<i64, ::postgres::Error> {
    let row = client.query_opt("SELECT value FROM meta WHERE key = $1", &[&SEQ_KEY])?;
    Ok(row
        .and_then(|r| r.get::<_, String>(0).parse().ok())
        .unwrap_or(0))
}

/// The `meta` row every batch with changes advances, in its transaction.
pub(crate) const SEQ_KEY: &str = "change_seq";

/// The statement that advances it and gives the new value.
pub(crate) const ADVANCE_SEQ: &str = "INSERT INTO meta (key, value) VALUES ('change_seq', '1') \
     ON CONFLICT (key) DO UPDATE SET value = (meta.value::BIGINT + 1)::TEXT RETURNING value";

/// The listener thread of one store; stops when the store is dropped.
pub(crate) struct ChangeFeed {
    stop: Arc<AtomicBool>,
    connected: Arc<AtomicBool>,
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
        let connected = Arc::new(AtomicBool::new(false));
        let (flag, up) = (Arc::clone(&stop), Arc::clone(&connected));
        std::thread::Builder::new()
            .name("kms-pg-changes".to_owned())
            .spawn(move || listen(&config, &listeners, &own, &flag, &up))?;
        Ok(ChangeFeed { stop, connected })
    }

    /// Waits up to `limit` for the first connection of the listener (the store has just
    /// reached the database, so normally milliseconds); after that the store reports not
    /// ready until it connects.
    pub(crate) fn wait_connected(&self, limit: Duration) {
        let start = std::time::Instant::now();
        while !self.is_connected() && start.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Whether the listener connection is up now.
    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn listen(
    config: &Config,
    listeners: &Listeners,
    own: &str,
    stop: &AtomicBool,
    connected: &AtomicBool,
) {
    let mut connected_before = false;
    while !stop.load(Ordering::SeqCst) {
        connected.store(false, Ordering::SeqCst);
        let Ok(mut client) = connect(config) else {
            std::thread::sleep(POLL);
            continue;
        };
        connected.store(true, Ordering::SeqCst);
        // Changes made while this node was not listening are unknown: flush. (The first
        // connection needs none: the store has just been opened and nothing is cached.)
        if connected_before {
            listeners.notify_changes(&decode(FLUSH));
        }
        connected_before = true;
        let Ok(mut heard_seq) = read_seq(&mut client) else {
            continue; // reconnect
        };
        let mut missing_since: Option<i64> = None;
        let mut last_check = std::time::Instant::now();
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            // A fresh iterator each time: one whose wait has run out answers at once.
            let heard = client.notifications().timeout_iter(POLL).next();
            match heard {
                Ok(Some(n)) => {
                    let heard = decode_from(n.payload());
                    if let Some(seq) = heard.seq {
                        heard_seq = heard_seq.max(seq);
                    }
                    if heard.origin != Some(own) {
                        listeners.notify_changes(&heard.changes);
                    }
                }
                Ok(None) if client.is_closed() => break, // reconnect
                Ok(None) => {}
                Err(_) => break, // the connection failed: reconnect
            }
            if last_check.elapsed() >= CHECK_EVERY {
                last_check = std::time::Instant::now();
                let Ok(stored) = read_seq(&mut client) else {
                    break;
                };
                // A batch counted before the previous check and still not heard was
                // missed (a notification in flight gets one interval to arrive).
                match missing_since {
                    Some(seen) if heard_seq < seen => {
                        listeners.notify_changes(&decode(FLUSH));
                        heard_seq = stored;
                        missing_since = None;
                    }
                    _ => missing_since = (stored > heard_seq).then_some(stored),
                }
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
            Change::User("usr_a".into()),
            Change::Idp("idp_b".into()),
            Change::Session("ses_c".into()),
        ];
        let payload = encode("node-a", 42, &changes);
        assert_eq!(decode(&payload), changes);
        let heard = decode_from(&payload);
        assert_eq!((heard.origin, heard.seq), (Some("node-a"), Some(42)));
    }

    #[test]
    fn too_many_changes_or_an_unknown_payload_flush() {
        let many: Vec<Change> = (0..1000)
            .map(|i| Change::Token(format!("tok_{i:010}")))
            .collect();
        let flush = encode("node-a", 7, &many);
        assert_eq!(decode(&flush), vec![Change::Policy, Change::Keys]);
        assert_eq!(decode_from(&flush).seq, Some(7));
        assert_eq!(decode(FLUSH), vec![Change::Policy, Change::Keys]);
        assert_eq!(decode("gibberish"), vec![Change::Policy, Change::Keys]);
    }
}
