//! Cold verifications of one token are coalesced: threads presenting the same token at
//! once share one store lookup and one argon2id run (counted with the hashing module's
//! per-thread work counter), and an unknown token presented at once is refused for everyone
//! after one (dummy) hash.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::sync::{Arc, Barrier};

use kms_core::internal::hash_work_on_this_thread;
use kms_core::token_format::{self, TokenPrefix};
use kms_core::{HashParams, Kms, OsRandom};
use kms_store::MemoryStore;

const THREADS: usize = 8;

/// Costly enough (tens of milliseconds) that the threads' cold verifications overlap.
fn slow_enough() -> HashParams {
    HashParams {
        memory_kib: 16 * 1024,
        iterations: 3,
        parallelism: 1,
    }
}

/// Every thread verifies `token` at once; returns the verdicts and the argon2id runs.
fn verify_at_once(kms: &Kms, token: &str) -> (Vec<bool>, u64) {
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let (kms, token, barrier) = (kms.clone(), token.to_owned(), barrier.clone());
            std::thread::spawn(move || {
                let before = hash_work_on_this_thread().verifications;
                barrier.wait();
                let valid = kms.verify_token(&token, None, None).unwrap().is_valid();
                (valid, hash_work_on_this_thread().verifications - before)
            })
        })
        .collect();
    let results: Vec<(bool, u64)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let hashes = results.iter().map(|r| r.1).sum();
    (results.into_iter().map(|r| r.0).collect(), hashes)
}

#[test]
fn concurrent_cold_verifications_of_one_token_hash_once() {
    let kms = Kms::builder(Arc::new(MemoryStore::new()))
        .hash_params(slow_enough())
        .build()
        .unwrap();
    let token = kms.initialize().unwrap().token;

    let (verdicts, hashes) = verify_at_once(&kms, &token);
    assert!(verdicts.iter().all(|v| *v), "{verdicts:?}");
    assert_eq!(hashes, 1, "{THREADS} concurrent cold verifications");
    // And the verdict was cached: one more verification hashes nothing.
    let before = hash_work_on_this_thread().verifications;
    assert!(kms.verify_token(&token, None, None).unwrap().is_valid());
    assert_eq!(hash_work_on_this_thread().verifications, before);

    // An unknown token presented at once: refused for every thread, after one lookup and
    // one (dummy) argon2id run.
    let unknown = token_format::generate(&TokenPrefix::default_prefix(), &OsRandom)
        .unwrap()
        .into_plaintext();
    let (verdicts, hashes) = verify_at_once(&kms, &unknown);
    assert!(verdicts.iter().all(|v| !*v), "{verdicts:?}");
    // Exactly one when every thread arrives while the first one hashes; a thread the
    // scheduler starts only after that runs its own. Without coalescing: one per thread.
    assert!(
        (1..THREADS as u64).contains(&hashes),
        "{hashes} hashes for {THREADS} concurrent verifications of an unknown token"
    );
}
