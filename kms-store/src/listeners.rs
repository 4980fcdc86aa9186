//! The change hook shared by every store: who is subscribed, and telling them what a
//! committed batch changed.

use std::sync::{Mutex, PoisonError, Weak};

use kms_core::store::{Change, ChangeListener, Mutation};

/// The listeners subscribed to one store.
#[derive(Default)]
pub(crate) struct Listeners(Mutex<Vec<Weak<dyn ChangeListener>>>);

impl Listeners {
    pub(crate) fn subscribe(&self, listener: Weak<dyn ChangeListener>) {
        let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        list.retain(|l| l.strong_count() > 0);
        list.push(listener);
    }

    /// Tells every live listener about the changes of a committed `batch`, consecutive
    /// duplicates folded. Callers must hold no store lock: listeners may call back into the
    /// store (to reload the policy, say).
    pub(crate) fn notify(&self, batch: &[Mutation]) {
        self.notify_changes(&changes_of(batch));
    }

    /// Tells every live listener about `changes` (another node's, heard from the
    /// database). Callers must hold no store lock.
    pub(crate) fn notify_changes(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        // Upgrade under the lock, call without it, so a listener may subscribe another.
        let live: Vec<_> = {
            let mut list = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            list.retain(|l| l.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        for listener in &live {
            for change in changes {
                listener.on_change(change);
            }
        }
    }
}

/// The changes a committed `batch` makes, consecutive duplicates folded.
pub(crate) fn changes_of(batch: &[Mutation]) -> Vec<Change> {
    let mut changes: Vec<Change> = Vec::new();
    for change in batch.iter().filter_map(Mutation::change) {
        if changes.last() != Some(&change) {
            changes.push(change);
        }
    }
    changes
}

impl std::fmt::Debug for Listeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.0.lock().map(|l| l.len()).unwrap_or(0);
        f.debug_struct("Listeners").field("subscribed", &n).finish()
    }
}
