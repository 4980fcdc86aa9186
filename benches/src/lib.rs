//! Fixtures shared by the kms benchmarks (`benches/core.rs`, `benches/memory.rs`,
//! `benches/store.rs`) and the bulk database filler (`src/bin/filldb.rs`).
//!
//! Everything here is setup: building policies, snapshots, populated services and filled
//! databases. The benchmarks time only the calls under test.

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_core::internal::{EffectiveSet, PermissionSnapshot, SecretHasher};
use kms_core::store::{Mutation, Store};
use kms_core::store::{Policy, TokenRecord};
use kms_core::token_format;
use kms_core::{
    Application, Caller, Clock, HashParams, Kms, KmsBuilder, LockoutPolicy, MasterKey, NewApp,
    NewToken, OsRandom, Permission, Role, RoleName, Scope, SystemClock, TokenLimits, TokenStatus,
};
use kms_store::MemoryStore;

/// Errors from fixture setup.
pub type SetupResult<T> = Result<T, Box<dyn Error>>;

/// Number of roles in a [`PermissionFixture`].
pub const ROLES: usize = 50;
/// Depth of each role inheritance chain in a [`PermissionFixture`].
pub const CHAIN_DEPTH: usize = 5;

/// Whether the binary was started by `cargo bench` (as opposed to `cargo test`, which runs
/// each benchmark once to check that it works). Fixtures are smaller under `cargo test`.
pub fn full_run() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

/// The `k`-th granted scope: `svc<k/200>.res<(k/2)%100>.read` for even `k`, `.write` for
/// odd `k`; three segments, and every `write` implies the `read` beside it.
pub fn granted_scope(k: usize) -> String {
    let verb = if k.is_multiple_of(2) { "read" } else { "write" };
    format!("svc{}.res{}.{verb}", k / 200, (k / 2) % 100)
}

/// A policy in the shape of the peer comparison's (grants over 50 roles in chains of
/// depth 5), a subject's effective set in it, and scopes to check.
#[derive(Debug)]
pub struct PermissionFixture {
    /// The compiled snapshot.
    pub snapshot: PermissionSnapshot,
    /// The subject: the top role of every chain plus direct scopes.
    pub set: EffectiveSet,
    /// A scope the subject holds through five levels of role inheritance.
    pub hit: String,
    /// A defined scope the subject does not hold.
    pub miss: String,
    /// A scope that is not defined at all (checked through its ancestors).
    pub undefined: String,
    /// Permission grants in the subject's set (role permissions plus direct scopes).
    pub grants: usize,
}

impl PermissionFixture {
    /// Builds the fixture with `grants` granted permissions: the first half spread over the
    /// 50 roles, the second half granted to the subject directly. Besides those the policy
    /// defines `admin` and one permission nobody holds.
    pub fn new(grants: usize) -> SetupResult<Self> {
        let mut policy = Policy::default();
        let mut define = |scope: &str, implies: Vec<Scope>| -> SetupResult<()> {
            let scope = Scope::parse(scope)?;
            policy.permissions.insert(
                scope.clone(),
                Permission {
                    scope,
                    description: String::new(),
                    implies,
                },
            );
            Ok(())
        };
        define("admin", Vec::new())?;
        let miss = "other.res.read".to_owned();
        define(&miss, Vec::new())?;
        for k in 0..grants {
            let implies = if k % 2 == 1 {
                vec![Scope::parse(&granted_scope(k - 1))?]
            } else {
                Vec::new()
            };
            define(&granted_scope(k), implies)?;
        }

        // Role r is level r % 5 of chain r / 5; each level inherits the one below it.
        let role_name = |r: usize| RoleName::parse(&format!("chain{}-level{}", r / 5, r % 5));
        let mut roles: BTreeMap<RoleName, Role> = BTreeMap::new();
        for r in 0..ROLES {
            let inherits = if r % CHAIN_DEPTH > 0 {
                vec![role_name(r - 1)?]
            } else {
                Vec::new()
            };
            let name = role_name(r)?;
            roles.insert(
                name.clone(),
                Role {
                    grants: Vec::new(),
                    name,
                    description: String::new(),
                    permissions: Vec::new(),
                    inherits,
                },
            );
        }
        let via_roles = grants / 2;
        for k in 0..via_roles {
            if let Some(role) = roles.get_mut(&role_name(k % ROLES)?) {
                role.permissions.push(Scope::parse(&granted_scope(k))?);
            }
        }
        policy.roles = roles;
        policy.validate()?;

        let snapshot = PermissionSnapshot::compile(Arc::new(policy), 1);
        let tops = (0..ROLES / CHAIN_DEPTH)
            .map(|c| role_name(c * CHAIN_DEPTH + CHAIN_DEPTH - 1))
            .collect::<Result<Vec<_>, _>>()?;
        let direct = (via_roles..grants)
            .map(|k| Scope::parse(&granted_scope(k)))
            .collect::<Result<Vec<_>, _>>()?;
        let set = snapshot.effective(direct.iter(), tops.iter());
        // Scope 0 sits in role 0, the bottom of chain 0: reached through 4 inheritance steps.
        let hit = granted_scope(0);
        let undefined = "nosuch.res.read".to_owned();
        if !snapshot.check(&set, &hit)
            || snapshot.check(&set, &miss)
            || snapshot.check(&set, &undefined)
        {
            return Err("the permission fixture does not hold what it should".into());
        }
        Ok(PermissionFixture {
            snapshot,
            set,
            hit,
            miss,
            undefined,
            grants,
        })
    }

    /// The floor a compiled check is compared with: the same scopes interned in a bare
    /// `HashMap<Box<str>, u32>` and the subject's scopes as a bit set.
    pub fn floor(&self) -> InternFloor {
        let names = self.snapshot.policy().permissions.keys();
        let index: HashMap<Box<str>, u32> = names
            .clone()
            .enumerate()
            .map(|(i, s)| (Box::from(s.as_str()), i as u32))
            .collect();
        let mut bits = vec![0u64; index.len().div_ceil(64)];
        for (i, s) in names.enumerate() {
            if self.snapshot.check(&self.set, s.as_str()) {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        InternFloor { index, bits }
    }
}

/// The "bare string-intern plus set lookup" floor: the least work any check by scope
/// name can do.
#[derive(Debug)]
pub struct InternFloor {
    index: HashMap<Box<str>, u32>,
    bits: Vec<u64>,
}

impl InternFloor {
    /// Whether `scope` is interned and its bit is set.
    pub fn holds(&self, scope: &str) -> bool {
        self.index.get(scope).is_some_and(|&id| {
            self.bits
                .get((id / 64) as usize)
                .is_some_and(|w| w & (1 << (id % 64)) != 0)
        })
    }
}

/// A service over a [`MemoryStore`] with one application and `count` tokens.
#[derive(Debug)]
pub struct PopulatedKms {
    /// The service.
    pub kms: Kms,
    /// Its store, for benchmarks that read records directly.
    pub store: Arc<MemoryStore>,
    /// The local operator.
    pub operator: Caller,
    /// The application holding the tokens.
    pub app_id: String,
    /// The tokens' plaintexts (benchmark fixtures only; real code never keeps them).
    pub tokens: Vec<String>,
}

/// Scopes every fixture token holds.
pub const TOKEN_SCOPES: [&str; 3] = ["app.read", "token.read", "token.verify"];

impl PopulatedKms {
    /// Builds the service with argon2id cost `params`, a verified-key cache of
    /// `cache_capacity` entries (0 disables it) and brute-force lockouts off, and creates
    /// `count` tokens holding [`TOKEN_SCOPES`].
    pub fn new(params: HashParams, cache_capacity: u64, count: usize) -> SetupResult<PopulatedKms> {
        let store = Arc::new(MemoryStore::new());
        let builder = Kms::builder(store.clone())
            .hash_params(params)
            .cache_capacity(cache_capacity)
            // Benchmarks repeat failing verifications on purpose: no brute-force lockout.
            .lockout_policy(LockoutPolicy {
                threshold: 0,
                ..LockoutPolicy::default()
            });
        Self::populate(store, builder, count)
    }

    /// A service with cheap hashes and a master key, so it can issue access tokens, and
    /// `count` tokens holding [`TOKEN_SCOPES`].
    pub fn with_master_key(key: MasterKey, count: usize) -> SetupResult<PopulatedKms> {
        let store = Arc::new(MemoryStore::new());
        let builder = Kms::builder(store.clone())
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .master_key(key);
        Self::populate(store, builder, count)
    }

    fn populate(
        store: Arc<MemoryStore>,
        builder: KmsBuilder,
        count: usize,
    ) -> SetupResult<PopulatedKms> {
        let kms = builder.build()?;
        kms.initialize()?;
        let operator = kms.operator();
        let app_id = kms
            .create_app(
                &operator,
                NewApp {
                    name: "bench".to_owned(),
                    token_prefix: None,
                    ..Default::default()
                },
            )?
            .id;
        let tokens = (0..count)
            .map(|i| {
                kms.create_token(
                    &operator,
                    &app_id,
                    NewToken {
                        name: format!("bench-{i}"),
                        scopes: TOKEN_SCOPES.iter().map(|s| (*s).to_owned()).collect(),
                        ..NewToken::default()
                    },
                )
                .map(|created| created.token)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PopulatedKms {
            kms,
            store,
            operator,
            app_id,
            tokens,
        })
    }

    /// Verifies every token once, so that each is in the verified-key cache.
    pub fn warm(&self) -> SetupResult<()> {
        for t in &self.tokens {
            if !self.kms.verify_token(t, None, None)?.is_valid() {
                return Err("a fixture token failed to verify".into());
            }
        }
        Ok(())
    }
}

/// Per-call times of two operations measured alternately, so that load from other
/// processes falls on both alike; see [`interleaved`].
#[derive(Debug, Clone, Copy)]
pub struct Interleaved {
    /// Fastest call of the first operation.
    pub a_min: Duration,
    /// Median call of the first operation.
    pub a_median: Duration,
    /// Fastest call of the second operation.
    pub b_min: Duration,
    /// Median call of the second operation.
    pub b_median: Duration,
}

impl Interleaved {
    /// `a / b`, from the fastest calls (the least disturbed by other processes).
    pub fn ratio_of_minimums(&self) -> f64 {
        self.a_min.as_secs_f64() / self.b_min.as_secs_f64()
    }

    /// `a / b`, from the medians.
    pub fn ratio_of_medians(&self) -> f64 {
        self.a_median.as_secs_f64() / self.b_median.as_secs_f64()
    }
}

/// Times `a` and `b` alternately: `rounds` samples of each, a sample being `batch`
/// consecutive calls; reports per-call times.
///
/// Criterion measures benchmarks one after the other; on a small shared machine a burst of
/// load during one of them skews a ratio between two. Alternating samples shares the load,
/// and the fastest sample shows what the code costs when nothing else runs.
pub fn interleaved<A, B>(
    rounds: usize,
    batch: u32,
    mut a: impl FnMut() -> A,
    mut b: impl FnMut() -> B,
) -> Interleaved {
    let batch = batch.max(1);
    let mut ta = Vec::with_capacity(rounds);
    let mut tb = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let start = Instant::now();
        for _ in 0..batch {
            std::hint::black_box(a());
        }
        ta.push(start.elapsed() / batch);
        let start = Instant::now();
        for _ in 0..batch {
            std::hint::black_box(b());
        }
        tb.push(start.elapsed() / batch);
    }
    ta.sort_unstable();
    tb.sort_unstable();
    Interleaved {
        a_min: ta[0],
        a_median: ta[ta.len() / 2],
        b_min: tb[0],
        b_median: tb[tb.len() / 2],
    }
}

/// Errors from the bulk filler (sendable: hashing runs on several threads).
pub type FillResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Where the time of a [`bulk_insert_tokens`] call went.
#[derive(Debug, Clone, Copy, Default)]
pub struct FillTimes {
    /// Generating and hashing tokens (wall time, all threads together).
    pub hashing: Duration,
    /// `Store::apply` of the batches.
    pub inserting: Duration,
    /// Hashing threads used.
    pub threads: usize,
}

/// A new token of `app` and its plaintext, made exactly as `Kms::create_token` makes one
/// (`token_format::generate`, an argon2id hash of the secret with `hasher`, a
/// [`TokenRecord`]), named `bulk-<serial>`, holding `scopes`.
pub fn new_token_record(
    app: &Application,
    scopes: &[Scope],
    hasher: &SecretHasher,
    serial: usize,
) -> FillResult<(String, TokenRecord)> {
    let random = OsRandom;
    let generated = token_format::generate(&app.token_prefix, &random)?;
    let secret_hash = hasher.hash(generated.secret(), &random)?;
    let record = TokenRecord {
        id: format!("tok_{}", generated.lookup_id()),
        app_id: app.id.clone(),
        name: format!("bulk-{serial}"),
        secret_hash,
        start: generated
            .plaintext()
            .chars()
            .take(token_format::START_LEN)
            .collect(),
        status: TokenStatus::Active,
        created_at: SystemClock.now(),
        expires_at: None,
        revoked_at: None,
        scopes: scopes.to_vec(),
        roles: Vec::new(),
        grants: Vec::new(),
        metadata: serde_json::Map::new(),
        limits: TokenLimits::default(),
        rotated_from: None,
        rotated_to: None,
        last_used_at: None,
    };
    Ok((generated.into_plaintext(), record))
}

/// A bulk insert of tokens, fast: `count` tokens of `app` holding `scopes`, hashed with
/// `params` on `threads` threads (at least one) and inserted `batch` per `Store::apply`
/// transaction, without audit events.
///
/// The tokens are those `Kms::create_token` makes (see [`new_token_record`]); servers
/// verify them as any other, reading the argon2id cost from each PHC string.
#[derive(Debug, Clone, Copy)]
pub struct BulkFill<'a> {
    /// The application owning the tokens.
    pub app: &'a Application,
    /// Scopes of every token.
    pub scopes: &'a [Scope],
    /// argon2id cost (`kms_core::dangerous::insecure_hash_params()` for the cheapest).
    pub params: HashParams,
    /// Tokens to insert.
    pub count: usize,
    /// Tokens per transaction.
    pub batch: usize,
    /// Hashing threads (see [`default_threads`]).
    pub threads: usize,
}

impl BulkFill<'_> {
    /// Inserts the tokens into `store`; `on_batch` sees each inserted batch (plaintexts and
    /// records), in order.
    pub fn run(
        &self,
        store: &dyn Store,
        mut on_batch: impl FnMut(&[(String, TokenRecord)]) -> FillResult<()>,
    ) -> FillResult<FillTimes> {
        let BulkFill {
            app,
            scopes,
            params,
            count,
            batch,
            threads,
        } = *self;
        let threads = threads.max(1);
        // As many argon2id computations at once as hashing threads (the hasher's own limit
        // is one per CPU).
        let hasher = SecretHasher::with_concurrency(params, threads)?;
        let batch = batch.max(1);
        let mut times = FillTimes {
            threads,
            ..FillTimes::default()
        };
        let mut done = 0;
        while done < count {
            let n = batch.min(count - done);
            let t = Instant::now();
            let generated = std::thread::scope(|s| -> FillResult<Vec<(String, TokenRecord)>> {
                let handles: Vec<_> = (0..threads)
                    .map(|k| {
                        let (first, last) = (k * n / threads, (k + 1) * n / threads);
                        let hasher = &hasher;
                        s.spawn(move || {
                            (first..last)
                                .map(|i| new_token_record(app, scopes, hasher, done + i))
                                .collect::<FillResult<Vec<_>>>()
                        })
                    })
                    .collect();
                let mut all = Vec::with_capacity(n);
                for h in handles {
                    all.extend(h.join().map_err(|_| "a hashing thread panicked")??);
                }
                Ok(all)
            })?;
            times.hashing += t.elapsed();
            let t = Instant::now();
            let mutations: Vec<Mutation> = generated
                .iter()
                .map(|(_, record)| Mutation::InsertToken(record.clone()))
                .collect();
            store.apply(&mutations)?;
            times.inserting += t.elapsed();
            on_batch(&generated)?;
            done += n;
        }
        Ok(times)
    }
}

/// One hashing thread per core.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
