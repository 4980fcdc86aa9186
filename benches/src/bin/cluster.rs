//! Measurements for several nodes (see `benches/cluster.sh` and docs/PERFORMANCE.md):
//!
//! cluster propagation --a 127.0.0.1:8081 --b 127.0.0.1:8082 --auth <root> --app <app id> --n 1000
//! cluster stores --sqlite /tmp/x.db --postgres postgres://... --n 500
//! cluster counters --redis redis://127.0.0.1:6379/0 --postgres postgres://... --n 20000
//!
//! `propagation` creates `--n` tokens through node A, verifies each once through node B (so
//! B caches it), then for each: revokes it through A and polls B until it answers
//! `REVOKED`, recording the time from A's answer to B's first `REVOKED`. `counters` times
//! one rate-limit decision (`take`) of the Redis, PostgreSQL and in-process counters, one
//! after another on one thread. Both print p50, p90, p99 and max in microseconds as JSON.

use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use kms_core::counters::SharedCounters;
use kms_core::RateLimit;
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Change propagation from node A to node B.
    Propagation {
        #[arg(long)]
        a: String,
        #[arg(long)]
        b: String,
        #[arg(long)]
        auth: String,
        #[arg(long)]
        app: String,
        #[arg(long, default_value_t = 1000)]
        n: usize,
    },
    /// Cold verification, token creation and a list page through the facade, on a SQLite
    /// file and on PostgreSQL, interleaved (cheap argon2id, no cache: the store's share).
    Stores {
        #[arg(long)]
        sqlite: std::path::PathBuf,
        #[arg(long)]
        postgres: String,
        #[arg(long, default_value_t = 500)]
        n: usize,
    },
    /// Latency of one limiter decision.
    Counters {
        #[arg(long)]
        redis: String,
        #[arg(long)]
        postgres: String,
        #[arg(long, default_value_t = 20_000)]
        n: usize,
    },
}

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn percentiles(mut us: Vec<u64>) -> Value {
    us.sort_unstable();
    let at = |q: f64| us[((us.len() as f64 - 1.0) * q).round() as usize];
    json!({"n": us.len(), "p50_us": at(0.50), "p90_us": at(0.90), "p99_us": at(0.99), "max_us": at(1.0)})
}

fn call(
    agent: &ureq::Agent,
    addr: &str,
    auth: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> BoxResult<Value> {
    let req = agent
        .request(method, &format!("http://{addr}{path}"))
        .set("Authorization", &format!("Bearer {auth}"));
    let resp = match body {
        Some(b) => req.send_json(b)?,
        None => req.call()?,
    };
    Ok(resp.into_json()?)
}

fn propagation(a: &str, b: &str, auth: &str, app: &str, n: usize) -> BoxResult<Value> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let mut tokens = Vec::with_capacity(n);
    for i in 0..n {
        let t = call(
            &agent,
            a,
            auth,
            "POST",
            &format!("/v1/apps/{app}/tokens"),
            Some(json!({"name": format!("p{i}"), "scopes": []})),
        )?;
        let (id, token) = (
            t["id"].as_str().ok_or("id")?.to_owned(),
            t["token"].as_str().ok_or("token")?.to_owned(),
        );
        let v = call(
            &agent,
            b,
            auth,
            "POST",
            "/v1/verify",
            Some(json!({"token": token})),
        )?;
        if v["code"] != "VALID" {
            return Err(format!("not valid on B: {v}").into());
        }
        tokens.push((id, token));
    }
    let mut took = Vec::with_capacity(n);
    for (id, token) in &tokens {
        call(
            &agent,
            a,
            auth,
            "POST",
            &format!("/v1/tokens/{id}/revoke"),
            None,
        )?;
        let revoked = Instant::now();
        loop {
            let v = call(
                &agent,
                b,
                auth,
                "POST",
                "/v1/verify",
                Some(json!({"token": token})),
            )?;
            if v["code"] == "REVOKED" {
                break;
            }
            if revoked.elapsed() > Duration::from_secs(5) {
                return Err("not revoked on B within 5 s".into());
            }
        }
        took.push(revoked.elapsed().as_micros() as u64);
    }
    Ok(percentiles(took))
}

fn time_take(counters: &dyn SharedCounters, n: usize) -> BoxResult<Value> {
    let limit = RateLimit {
        limit: 1_000_000,
        per_seconds: 1,
    };
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("rl:bench_{}", i % 100);
        let start = Instant::now();
        let _ = counters.take(&key, limit)?;
        took.push(start.elapsed().as_micros() as u64);
    }
    Ok(percentiles(took))
}

/// The in-process limiter, as the core keeps it (governor, keyed by token id).
fn time_local(n: usize) -> Value {
    use std::num::NonZeroU32;
    let quota = governor::Quota::per_second(NonZeroU32::new(1_000_000).unwrap_or(NonZeroU32::MIN));
    let limiter = governor::RateLimiter::keyed(quota);
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let key = format!("bench_{}", i % 100);
        let start = Instant::now();
        let _ = limiter.check_key(&key);
        took.push(start.elapsed().as_nanos() as u64);
    }
    let mut v = percentiles(took);
    v["unit"] = json!("ns (not us)");
    v
}

/// One store's timings: creations, cold verifications, list pages.
struct StoreRun {
    kms: kms_core::Kms,
    app: String,
    tokens: Vec<String>,
    create: Vec<u64>,
    verify: Vec<u64>,
    list: Vec<u64>,
}

impl StoreRun {
    fn new(store: std::sync::Arc<dyn kms_core::store::Store>) -> BoxResult<Self> {
        let kms = kms_core::Kms::builder(store)
            .hash_params(kms_core::dangerous::insecure_hash_params())
            .cache_capacity(0)
            .lockout_policy(kms_core::LockoutPolicy {
                threshold: 0,
                ..Default::default()
            })
            .build()?;
        kms.initialize()?;
        let app: kms_core::NewApp = serde_json::from_value(json!({"name": "bench"}))?;
        let app = kms.create_app(&kms.operator(), app)?.id;
        Ok(StoreRun {
            kms,
            app,
            tokens: Vec::new(),
            create: Vec::new(),
            verify: Vec::new(),
            list: Vec::new(),
        })
    }

    fn step(&mut self, i: usize) -> BoxResult<()> {
        let op = self.kms.operator();
        let req: kms_core::NewToken =
            serde_json::from_value(json!({"name": format!("t{i}"), "scopes": ["app.read"]}))?;
        let start = Instant::now();
        let created = self.kms.create_token(&op, &self.app, req)?;
        self.create.push(start.elapsed().as_micros() as u64);
        self.tokens.push(created.token);
        let token = &self.tokens[i / 2];
        let start = Instant::now();
        let v = self.kms.verify_token(token, None, None)?;
        self.verify.push(start.elapsed().as_micros() as u64);
        if v.code() != kms_core::VerifyCode::Valid {
            return Err(format!("{:?}", v.code()).into());
        }
        let start = Instant::now();
        let page = self.kms.list_tokens(
            &op,
            &self.app,
            kms_core::PageRequest {
                limit: Some(50),
                cursor: None,
            },
        )?;
        self.list.push(start.elapsed().as_micros() as u64);
        black_box_len(page.items.len());
        Ok(())
    }

    fn report(self) -> Value {
        json!({"create_token": percentiles(self.create), "cold_verify": percentiles(self.verify), "list_page_50": percentiles(self.list)})
    }
}

fn black_box_len(n: usize) {
    std::hint::black_box(n);
}

fn stores(sqlite: &std::path::Path, postgres: &str, n: usize) -> BoxResult<Value> {
    let sq = kms_store::SqliteStore::open(sqlite)?;
    let pg = kms_store::PostgresStore::open(postgres, kms_store::PostgresOptions::default())?;
    let mut runs = [
        StoreRun::new(std::sync::Arc::new(sq))?,
        StoreRun::new(std::sync::Arc::new(pg))?,
    ];
    for i in 0..n {
        for run in &mut runs {
            run.step(i)?;
        }
    }
    let [sq, pg] = runs;
    Ok(json!({"sqlite": sq.report(), "postgres": pg.report()}))
}

fn main() -> BoxResult<()> {
    match Args::parse().command {
        Cmd::Propagation { a, b, auth, app, n } => {
            println!(
                "{}",
                json!({"propagation_a_to_b": propagation(&a, &b, &auth, &app, n)?})
            );
        }
        Cmd::Stores {
            sqlite,
            postgres,
            n,
        } => {
            println!("{}", json!({"stores": stores(&sqlite, &postgres, n)?}));
        }
        Cmd::Counters { redis, postgres, n } => {
            let redis = kms_store::RedisCounters::open(&redis, kms_store::RedisOptions::default())?;
            let pg = kms_store::PostgresCounters::open(&postgres, 4, Duration::from_secs(2))?;
            // Warm the connections and scripts.
            time_take(&redis, 200)?;
            time_take(&pg, 200)?;
            println!(
                "{}",
                json!({"limiter_decision": {"redis": time_take(&redis, n)?, "postgres": time_take(&pg, n)?, "in_process": time_local(n)}})
            );
        }
    }
    Ok(())
}
