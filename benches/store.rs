//! Criterion benchmarks of the SQLite store (`kms_store::SqliteStore`) on a real database
//! file, opened as the server opens it (WAL, `synchronous=FULL`), at 1,000, 100,000 and
//! 1,000,000 tokens. Results and the command that produced them are in
//! `docs/PERFORMANCE.md` ("SQLite store").
//!
//! ```text
//! cargo bench -p kms-benches --bench store -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Groups (each at every size; the parameter is the number of tokens in the database):
//! - `store_create_token`: the store work of `Kms::create_token`: `last_audit_event()`,
//!   then one `Store::apply` of `[InsertToken(record), AppendAudit(event)]` (one
//!   `IMMEDIATE` transaction, one commit). The argon2id hash of the new secret and the
//!   request validation are not timed: records are made (cheap hash) in criterion's setup.
//!   The audit event's hash (SHA-256 over its JSON) is computed inside the timed part, as
//!   `Kms::commit` does.
//! - `store_get_token`: `TokenStore::get_token` of an existing id, drawn at random from
//!   10,000 ids spread over the whole table (so each call walks the B-tree to a different
//!   leaf, not one cached page).
//! - `store_list_tokens`: `TokenStore::list_tokens` of the API's default page
//!   (`DEFAULT_PAGE_LIMIT` = 50; the core asks for 51 to know whether a next page exists),
//!   from the start (`first_page`) and after a cursor in the middle of the table
//!   (`deep_page`).
//!
//! Databases are filled once (cheapest argon2id cost, `kms_benches::BulkFill`, the code of
//! `filldb`) and kept in `$KMS_BENCH_DB_DIR`, by default `target/kms-bench-dbs/`; the time
//! a fill takes is printed. Every size is measured on a fresh copy of its database, which
//! is deleted afterwards, so creates never grow the cached one; gets and lists run before
//! the creates, so they see exactly the stated number of tokens.
//!
//! Under `cargo test` (no `--bench`) only the 1,000-token database is used.

use std::error::Error;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, BenchmarkId, Criterion};
use kms_benches::{default_threads, full_run, BulkFill, FillResult, SetupResult};
use kms_core::internal::SecretHasher;
use kms_core::store::{AppStore, AuditStore, Mutation, Store, TokenStore};
use kms_core::store::{TokenRecord, GENESIS_HASH};
use kms_core::{
    Application, AuditEvent, Clock, Kms, NewApp, Scope, SystemClock, DEFAULT_PAGE_LIMIT,
};
use kms_store::SqliteStore;
use serde_json::json;

/// Ids kept per database for the random gets.
const SAMPLE_IDS: usize = 10_000;
/// Tokens per fill transaction (as `filldb`'s default).
const FILL_BATCH: usize = 10_000;
/// Bump when the way databases are filled changes, so cached ones are rebuilt.
const FIXTURE_VERSION: u32 = 1;
/// Scopes of every token (as `filldb`'s default).
const SCOPES: [&str; 2] = ["app.read", "token.verify"];

fn main() -> Result<(), Box<dyn Error>> {
    let mut c = Criterion::default().configure_from_args();
    let sizes: &[usize] = if full_run() {
        &[1_000, 100_000, 1_000_000]
    } else {
        &[1_000]
    };
    let dir = db_dir()?;
    for &size in sizes {
        let cached = cached_db(&dir, size)?;
        let work = dir.join(format!("work-{size}.db"));
        remove_db(&work)?;
        std::fs::copy(&cached.path, &work)?;
        let result = bench_size(&mut c, &work, &cached, size);
        remove_db(&work)?;
        result?;
    }
    c.final_summary();
    Ok(())
}

/// `$KMS_BENCH_DB_DIR`, or `kms-bench-dbs` in the target directory (three levels above
/// this executable: `target/release/deps/store-…`).
fn db_dir() -> SetupResult<PathBuf> {
    let dir = match std::env::var_os("KMS_BENCH_DB_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe()?;
            let target = exe
                .ancestors()
                .nth(3)
                .ok_or("cannot find the target directory above the bench executable")?;
            target.join("kms-bench-dbs")
        }
    };
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A filled database and what the benchmarks need to know about it.
#[derive(Debug)]
struct CachedDb {
    path: PathBuf,
    app_id: String,
    /// Up to [`SAMPLE_IDS`] token ids, spread over the table (ids are random).
    sample_ids: Vec<String>,
}

/// The database of `size` tokens in `dir`, filled now unless a complete one is there.
///
/// A fill writes `<name>.tmp` and its id list, then renames the database into place: a
/// database under its final name is complete.
fn cached_db(dir: &Path, size: usize) -> SetupResult<CachedDb> {
    let path = dir.join(format!("tokens-{size}-v{FIXTURE_VERSION}.db"));
    let ids_path = path.with_extension("ids.json");
    if path.exists() {
        if let Ok(text) = std::fs::read_to_string(&ids_path) {
            let v: serde_json::Value = serde_json::from_str(&text)?;
            let app_id = v["app_id"].as_str().ok_or("no app_id in the id list")?;
            let sample_ids = v["sample_ids"]
                .as_array()
                .ok_or("no sample_ids in the id list")?
                .iter()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect();
            println!("store: using the cached {}", path.display());
            return Ok(CachedDb {
                path,
                app_id: app_id.to_owned(),
                sample_ids,
            });
        }
    }
    let tmp = path.with_extension("db.tmp");
    remove_db(&tmp)?;
    let started = Instant::now();
    let (app_id, sample_ids, times) = fill(&tmp, size).map_err(|e| -> Box<dyn Error> { e })?;
    std::fs::write(
        &ids_path,
        serde_json::to_string(&json!({ "app_id": app_id, "sample_ids": sample_ids }))?,
    )?;
    std::fs::rename(&tmp, &path)?;
    let bytes = std::fs::metadata(&path)?.len();
    println!(
        "store: filled {} with {size} tokens in {:.1} s (hashing {:.1} s on {} threads, \
         inserting {:.1} s, {FILL_BATCH} per transaction); {:.0} MB",
        path.display(),
        started.elapsed().as_secs_f64(),
        times.hashing.as_secs_f64(),
        times.threads,
        times.inserting.as_secs_f64(),
        bytes as f64 / 1e6,
    );
    Ok(CachedDb {
        path,
        app_id,
        sample_ids,
    })
}

/// Initialises a database at `path`, creates one application and bulk-inserts `size`
/// tokens; returns the application id, sampled token ids and the fill times.
fn fill(path: &Path, size: usize) -> FillResult<(String, Vec<String>, kms_benches::FillTimes)> {
    let store = Arc::new(SqliteStore::open(path)?);
    let kms = Kms::builder(store.clone())
        .hash_params(kms_core::dangerous::insecure_hash_params())
        .build()?;
    kms.initialize()?;
    let app = kms.create_app(
        &kms.operator(),
        NewApp {
            name: "bench".to_owned(),
            ..NewApp::default()
        },
    )?;
    let scopes = scopes()?;
    let step = size.div_ceil(SAMPLE_IDS).max(1);
    let mut sample = Vec::with_capacity(SAMPLE_IDS.min(size));
    let mut serial = 0;
    let times = BulkFill {
        app: &app,
        scopes: &scopes,
        params: kms_core::dangerous::insecure_hash_params(),
        count: size,
        batch: FILL_BATCH,
        threads: default_threads(),
    }
    .run(store.as_ref(), |generated| {
        for (_, record) in generated {
            if serial % step == 0 {
                sample.push(record.id.clone());
            }
            serial += 1;
        }
        Ok(())
    })?;
    // Closing the last connection checkpoints the WAL into the file and deletes it, so
    // the file alone is the database.
    drop(kms);
    drop(store);
    Ok((app.id, sample, times))
}

fn scopes() -> FillResult<Vec<Scope>> {
    Ok(SCOPES
        .iter()
        .map(|s| Scope::parse(s))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Deletes a database file and its `-wal` and `-shm` files, if there.
fn remove_db(path: &Path) -> SetupResult<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        match std::fs::remove_file(PathBuf::from(p)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A small xorshift generator: random sample indexes without a `rand` dependency.
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n.max(1) as u64) as usize
    }
}

fn bench_size(c: &mut Criterion, work: &Path, db: &CachedDb, size: usize) -> SetupResult<()> {
    let store = SqliteStore::open(work)?;
    let app = store
        .get_app(&db.app_id)?
        .ok_or("the cached database lacks its application")?;
    if db.sample_ids.is_empty() {
        return Err("the cached database has no sampled token ids".into());
    }
    let limit = DEFAULT_PAGE_LIMIT as usize + 1;

    // get by id: random ids spread over the table.
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let ids = &db.sample_ids;
    c.benchmark_group("store_get_token")
        .bench_function(BenchmarkId::from_parameter(size), |b| {
            b.iter(|| {
                let id = &ids[rng.below(ids.len())];
                store.get_token(black_box(id))
            })
        });
    if store.get_token(&ids[0])?.is_none() {
        return Err("a sampled token id is not in the database".into());
    }

    // list one page: from the start, and after the median sampled id.
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    let deep = sorted[sorted.len() / 2].clone();
    let mut group = c.benchmark_group("store_list_tokens");
    group.bench_function(BenchmarkId::new("first_page", size), |b| {
        b.iter(|| store.list_tokens(black_box(&app.id), None, limit))
    });
    group.bench_function(BenchmarkId::new("deep_page", size), |b| {
        b.iter(|| store.list_tokens(black_box(&app.id), Some(black_box(&deep)), limit))
    });
    group.finish();
    let page = store.list_tokens(&app.id, Some(&deep), limit)?;
    if size > 2 * limit && page.len() != limit {
        return Err(format!("a deep page held {} tokens, not {limit}", page.len()).into());
    }

    // create: the store calls of Kms::create_token, on records hashed in setup.
    let scopes = scopes().map_err(|e| -> Box<dyn Error> { e })?;
    let hasher = SecretHasher::new(kms_core::dangerous::insecure_hash_params())?;
    let mut serial = size;
    let mut created = 0usize;
    let mut failed = None;
    c.benchmark_group("store_create_token").bench_function(
        BenchmarkId::from_parameter(size),
        |b| {
            b.iter_batched(
                || {
                    serial += 1;
                    kms_benches::new_token_record(&app, &scopes, &hasher, serial)
                },
                |record| match record.map_err(|e| e.to_string()).and_then(|(_, record)| {
                    create_token_writes(&store, &app, record).map_err(|e| e.to_string())
                }) {
                    Ok(()) => created += 1,
                    Err(e) => failed = Some(e),
                },
                BatchSize::SmallInput,
            )
        },
    );
    if let Some(e) = failed {
        return Err(format!("store_create_token failed: {e}").into());
    }
    println!(
        "store_create_token/{size}: {created} tokens created during the run, on a copy of \
         the {size}-token database"
    );
    Ok(())
}

/// What `Kms::create_token` asks of the store once the token is made: the newest audit
/// event (to chain the new one), then the token and its audit event in one batch.
fn create_token_writes(
    store: &SqliteStore,
    app: &Application,
    record: TokenRecord,
) -> Result<(), Box<dyn Error>> {
    let last = store.last_audit_event()?;
    let details = json!({
        "name": record.name, "scopes": record.scopes, "roles": record.roles,
        "rotated_from": record.rotated_from, "expires_at": record.expires_at,
    });
    let mut event = AuditEvent {
        seq: last.as_ref().map_or(1, |e| e.seq + 1),
        at: SystemClock.now(),
        actor: "operator".to_owned(),
        action: "token.create".to_owned(),
        target: record.id.clone(),
        outcome: "success".to_owned(),
        ip: None,
        request_id: None,
        app_id: Some(app.id.clone()),
        details,
        prev_hash: last.map_or_else(|| GENESIS_HASH.to_owned(), |e| e.hash),
        hash: String::new(),
        subject: None,
        sealed_personal: None,
        personal: None,
    };
    event.hash = event.compute_hash();
    store.apply(&[Mutation::InsertToken(record), Mutation::AppendAudit(event)])?;
    Ok(())
}
