//! Heap bytes per cached verified key, against the target of at most 256 bytes (docs/PERFORMANCE.md).
//!
//! ```text
//! cargo bench -p kms-benches --bench memory
//! ```
//!
//! Not a timing benchmark: it counts the bytes the global allocator hands out (net of
//! frees) while the verified-key cache fills with 20,000 tokens, and divides.

use std::alloc::System;
use std::error::Error;
use std::hint::black_box;

use kms_benches::{full_run, PopulatedKms};
use kms_core::store::{AppStore, TokenRecord, TokenStore};
use kms_core::Application;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Net heap bytes allocated while `f` runs; what `f` returns stays alive until after the
/// count.
fn net_bytes<T>(f: impl FnOnce() -> T) -> (i64, T) {
    let region = Region::new(GLOBAL);
    let out = f();
    let s = region.change();
    let net = s.bytes_allocated as i64 - s.bytes_deallocated as i64 + s.bytes_reallocated as i64;
    (net, out)
}

/// `VmRSS` of this process in bytes: what the allocator holds from the system, including
/// its own overhead and fragmentation, which the counting allocator does not see.
fn rss_bytes() -> Result<i64, Box<dyn Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .ok_or("no VmRSS line")?
        .parse()?;
    Ok(kib * 1024)
}

fn main() -> Result<(), Box<dyn Error>> {
    let count = if full_run() { 20_000 } else { 100 };
    let env = PopulatedKms::new(kms_core::dangerous::insecure_hash_params(), 100_000, count)?;

    let rss_before = rss_bytes()?;
    let (fill, warmed) = net_bytes(|| env.warm());
    warmed?;
    let rss_after = rss_bytes()?;
    let (again, rewarmed) = net_bytes(|| env.warm());
    rewarmed?;
    let entries = env.kms.cache_stats().entries;

    // What one cached key carries: a copy of the token record and of its application.
    let first = env.tokens.first().ok_or("no fixture token")?;
    let id = format!("tok_{}", &first[4..14]);
    let (record_heap, record) = net_bytes(|| env.store.get_token(&id));
    let record = record?.ok_or("the fixture token is not in the store")?;
    let (app_heap, app) = net_bytes(|| env.store.get_app(&env.app_id));
    black_box((&record, &app));

    let per_key = fill as f64 / count as f64;
    println!("memory/verified_key_cache ({count} tokens, {entries} entries reported by the cache)");
    println!("  net heap while filling the cache:     {fill} bytes, {per_key:.0} bytes per key");
    println!("  net heap on a second pass (all hits): {again} bytes");
    println!(
        "  process RSS while filling the cache:  {} bytes, {:.0} bytes per key",
        rss_after - rss_before,
        (rss_after - rss_before) as f64 / count as f64
    );
    println!(
        "  one TokenRecord: {} bytes inline + {record_heap} on the heap",
        std::mem::size_of::<TokenRecord>()
    );
    println!(
        "  one Application: {} bytes inline + {app_heap} on the heap",
        std::mem::size_of::<Application>()
    );
    // The floor under any design built on moka and an id index: the same number of
    // entries with an empty value (a 32-byte digest mapped to an `Arc<()>`), and the
    // token-id -> digest index alone.
    let (moka_floor, floor_cache) = net_bytes(|| {
        let cache: moka::sync::Cache<[u8; 32], std::sync::Arc<()>> = moka::sync::Cache::builder()
            .max_capacity(count as u64 * 2)
            .time_to_live(std::time::Duration::from_secs(3600))
            .eviction_listener(|_k, _v, _cause| {})
            .build();
        let unit = std::sync::Arc::new(());
        for i in 0..count {
            let mut digest = [0u8; 32];
            digest[..8].copy_from_slice(&(i as u64).to_le_bytes());
            cache.insert(digest, unit.clone());
        }
        cache.run_pending_tasks();
        cache
    });
    black_box(&floor_cache);
    let (index_floor, index) = net_bytes(|| {
        let mut index = std::collections::HashMap::new();
        for i in 0..count {
            index.insert(format!("tok_{i:010}"), [0u8; 32]);
        }
        index
    });
    black_box(&index);
    println!(
        "  floor, moka entries with empty values: {:.0} bytes per key",
        moka_floor as f64 / count as f64
    );
    println!(
        "  floor, token-id -> digest index:       {:.0} bytes per key",
        index_floor as f64 / count as f64
    );
    println!("  target: <= 256 bytes per cached verified key");
    Ok(())
}
