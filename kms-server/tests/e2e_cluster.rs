//! Three `kms serve` processes on one PostgreSQL database and one Redis, each a real process
//! on loopback, held to "Running on several nodes" of API.md: changes through one node take
//! effect on the others within a second, `uses` are spent once, a `ratelimit` holds for the
//! token as a whole, lockouts count failures from every node, `kill -9` of a node loses no
//! acknowledged write, and outages of Redis (degraded, never 5xx) and PostgreSQL (503, then
//! ready again) are survived without a restart.
//!
//! Each test starts its own Redis (`.ci/redis.sh`), and the outage test its own PostgreSQL
//! (`.ci/postgres.sh`); the others make a database on `KMS_TEST_POSTGRES_URL`. Without the
//! servers the tests fail under `CI=true` and are skipped with a notice elsewhere.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{call, Server};
use kms_store::testing::{NoPostgres, ScratchDatabase};
use serde_json::{json, Value};

/// The master key every node is given (base64 of 32 bytes).
const MASTER_KEY: &str = "a21zLXRlc3QtbWFzdGVyLWtleS0zMi1ieXRlcy0hISE=";

fn or_skip<T>(r: Result<T, NoPostgres>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(NoPostgres::Skip(notice)) => {
            eprintln!("{notice}");
            None
        }
        Err(NoPostgres::Fail(message)) => panic!("{message}"),
    }
}

/// A private server started by one of the `.ci` scripts, stopped and deleted on drop.
struct Service {
    script: PathBuf,
    dir: PathBuf,
    url: String,
}

impl Service {
    /// Runs `.ci/<script> start` in a new directory; `var` is the variable its env file
    /// exports.
    fn start(script: &str, binary: &str, var: &str) -> Result<Service, NoPostgres> {
        let have = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {binary}"))
            .output()
            .is_ok_and(|o| o.status.success());
        if !have && !Path::new(&format!("/usr/lib/postgresql/15/bin/{binary}")).exists() {
            let message = format!("{binary} is not installed, so this multi-node test cannot run");
            return Err(if std::env::var("CI").is_ok_and(|v| v == "true") {
                NoPostgres::Fail(message)
            } else {
                NoPostgres::Skip(format!("notice: {message}; skipping"))
            });
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../.ci")
            .join(script);
        let dir = std::env::temp_dir().join(format!(
            "kms-cluster-{}-{}",
            std::process::id(),
            NEXT_DIR.fetch_add(1, Ordering::SeqCst)
        ));
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .output()
            .expect("run the service script");
        if !out.status.success() {
            return Err(NoPostgres::Fail(format!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let env = std::fs::read_to_string(dir.join("env")).expect("env file");
        let url = env
            .trim()
            .strip_prefix(&format!("export {var}="))
            .expect("an export line")
            .to_owned();
        Ok(Service { script, dir, url })
    }

    fn redis() -> Option<Service> {
        or_skip(Service::start(
            "redis.sh",
            "redis-server",
            "KMS_TEST_REDIS_URL",
        ))
    }

    fn postgres() -> Option<Service> {
        or_skip(Service::start(
            "postgres.sh",
            "initdb",
            "KMS_TEST_POSTGRES_URL",
        ))
    }

    fn run(&self, action: &str) {
        let status = Command::new("bash")
            .arg(&self.script)
            .arg(action)
            .arg(&self.dir)
            .status()
            .expect("run the service script");
        assert!(status.success(), "{action} failed");
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(&self.script)
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

static NEXT_DIR: AtomicUsize = AtomicUsize::new(0);

/// `n` nodes on `db`, sharing counters through `redis` when given.
fn nodes(db: &str, redis: Option<&str>, n: usize, extra: &[&str]) -> Vec<Server> {
    let mut args = vec!["--rate-limit-per-ip", "0", "--cache-ttl", "600s"];
    if let Some(redis) = redis {
        args.extend(["--redis", redis]);
    }
    args.extend(extra);
    // Started together: they initialise and migrate the empty database once.
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let db = db.to_owned();
            let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
            thread::spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Server::start_with(Path::new(&db), &args, &[("KMS_MASTER_KEY", MASTER_KEY)])
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// The root token, printed once by whichever node initialised the database.
fn root_of(nodes: &[Server]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for node in nodes {
            let logs = node.logs();
            if let Some(line) = logs.lines().find(|l| l.contains("\"root_token\"")) {
                let v: Value = serde_json::from_str(line.trim()).unwrap();
                return v["root_token"].as_str().unwrap().to_owned();
            }
        }
        assert!(Instant::now() < deadline, "no node printed the root token");
        thread::sleep(Duration::from_millis(50));
    }
}

fn create_app(base: &str, root: &str, name: &str) -> String {
    let r = call(
        base,
        "POST",
        "/v1/apps",
        Some(root),
        Some(&json!({ "name": name })),
    );
    assert_eq!(r.status, 201, "create {name}: {}", r.body);
    r.json()["id"].as_str().unwrap().to_owned()
}

fn create_token(base: &str, root: &str, app: &str, body: Value) -> (String, String) {
    let r = call(
        base,
        "POST",
        &format!("/v1/apps/{app}/tokens"),
        Some(root),
        Some(&body),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    (
        v["id"].as_str().unwrap().to_owned(),
        v["token"].as_str().unwrap().to_owned(),
    )
}

fn verify_with(base: &str, root: &str, token: &str, permissions: Option<&str>) -> String {
    let mut body = json!({ "token": token });
    if let Some(p) = permissions {
        body["permissions"] = json!(p);
    }
    let r = call(base, "POST", "/v1/verify", Some(root), Some(&body));
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["code"].as_str().unwrap().to_owned()
}

fn verify(base: &str, root: &str, token: &str) -> String {
    verify_with(base, root, token, None)
}

/// Waits until `check` holds, failing after `limit`; gives the time it took.
fn within(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if check() {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn cluster_db() -> Option<ScratchDatabase> {
    or_skip(ScratchDatabase::create())
}

/// Every kind of change through node A is seen by B and C within a second, each cached
/// for ten minutes: revoke, delete, rotate (grace 0), application disabled, a role losing
/// a permission, a signing-key rotation.
#[test]
fn every_change_through_one_node_takes_effect_on_the_others_within_a_second() {
    let Some(db) = cluster_db() else { return };
    let Some(redis) = Service::redis() else {
        return;
    };
    let n = nodes(db.url(), Some(&redis.url), 3, &[]);
    let root = root_of(&n);
    let (a, others) = (&n[0], &n[1..]);
    let app = create_app(&a.base, &root, "propagation");
    let second = Duration::from_secs(1);
    let everywhere = |token: &str, permissions: Option<&str>, want: &str, what: &str| {
        for node in others {
            within(second, what, || {
                verify_with(&node.base, &root, token, permissions) == want
            });
        }
    };
    let token_body = json!({"name": "t", "scopes": ["app.read"]});
    for change in ["revoke", "delete", "rotate", "disable"] {
        let app = if change == "disable" {
            create_app(&a.base, &root, "to-disable")
        } else {
            app.clone()
        };
        let (id, token) = create_token(&a.base, &root, &app, token_body.clone());
        for node in others {
            assert_eq!(verify(&node.base, &root, &token), "VALID"); // now cached there
        }
        let (method, path, body) = match change {
            "revoke" => ("POST", format!("/v1/tokens/{id}/revoke"), None),
            "delete" => ("DELETE", format!("/v1/tokens/{id}"), None),
            "rotate" => (
                "POST",
                format!("/v1/tokens/{id}/rotate"),
                Some(json!({"grace_seconds": 0})),
            ),
            _ => (
                "PATCH",
                format!("/v1/apps/{app}"),
                Some(json!({"status": "disabled"})),
            ),
        };
        let r = call(&a.base, method, &path, Some(&root), body.as_ref());
        assert!(r.status < 300, "{change}: {}", r.body);
        let want = match change {
            "revoke" => "REVOKED",
            "delete" => "NOT_FOUND",
            "rotate" => "EXPIRED",
            _ => "DISABLED",
        };
        everywhere(&token, None, want, change);
    }
    // A role change: the role loses `app.write`; a token holding the role no longer
    // passes a check for it on B and C.
    let r = call(
        &a.base,
        "POST",
        "/v1/roles",
        Some(&root),
        Some(&json!({"name": "editor", "permissions": ["app.read", "app.write"]})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let (_, token) = create_token(
        &a.base,
        &root,
        &app,
        json!({"name": "r", "scopes": [], "roles": ["editor"]}),
    );
    for node in others {
        assert_eq!(
            verify_with(&node.base, &root, &token, Some("app.write")),
            "VALID"
        );
    }
    let r = call(
        &a.base,
        "PATCH",
        "/v1/roles/editor",
        Some(&root),
        Some(&json!({"permissions": ["app.read"]})),
    );
    assert!(r.status < 300, "{}", r.body);
    everywhere(
        &token,
        Some("app.write"),
        "INSUFFICIENT_PERMISSIONS",
        "role change",
    );
    // A signing-key rotation on A: B and C publish the new key within a second.
    let r = call(&a.base, "POST", "/v1/keys/rotate", Some(&root), None);
    assert!(r.status < 300, "{}", r.body);
    let kid = r.json()["kid"].as_str().unwrap().to_owned();
    for node in others {
        within(second, "key rotation", || {
            call(&node.base, "GET", "/.well-known/jwks.json", None, None)
                .body
                .contains(&kid)
        });
    }
}

/// `uses: 60` hammered through three nodes by twelve threads: exactly 60 `VALID`.
/// A `ratelimit` of 20 per minute: 20 to 22 `VALID` in total, not 60 — through Redis,
/// and through PostgreSQL when there is no Redis.
#[test]
fn uses_and_rate_limits_hold_for_the_token_across_three_nodes() {
    let Some(db) = cluster_db() else { return };
    let Some(redis) = Service::redis() else {
        return;
    };
    let n = nodes(db.url(), Some(&redis.url), 3, &[]);
    let root = root_of(&n);
    let app = create_app(&n[0].base, &root, "limits");
    let hammer = |nodes: &[Server], token: &str, total: usize| -> usize {
        let valid = AtomicUsize::new(0);
        let next = AtomicUsize::new(0);
        thread::scope(|s| {
            for _ in 0..12 {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= total {
                        break;
                    }
                    let node = &nodes[i % nodes.len()];
                    if verify(&node.base, &root, token) == "VALID" {
                        valid.fetch_add(1, Ordering::SeqCst);
                    }
                });
            }
        });
        valid.into_inner()
    };
    let (_, token) = create_token(
        &n[0].base,
        &root,
        &app,
        json!({"name": "u", "scopes": [], "uses": 60}),
    );
    assert_eq!(hammer(&n, &token, 150), 60, "uses spent across nodes");
    let limited = json!({"name": "l", "scopes": [], "ratelimit": {"limit": 20, "per_seconds": 60}});
    let (_, token) = create_token(&n[0].base, &root, &app, limited.clone());
    let valid = hammer(&n, &token, 90);
    assert!((20..=22).contains(&valid), "through Redis: {valid} VALID");
    for node in &n {
        let ready = call(&node.base, "GET", "/readyz", None, None).json();
        assert_eq!(ready, json!({"status": "ready"}));
        let metrics = call(&node.base, "GET", "/metrics", None, None).body;
        assert!(
            metrics.contains(r#"kms_limits_shared{backend="redis"} 1"#),
            "{metrics}"
        );
    }
    drop(n);
    // No Redis: the same through PostgreSQL.
    let n = nodes(db.url(), None, 3, &[]);
    let metrics = call(&n[0].base, "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains(r#"kms_limits_shared{backend="postgres"} 1"#),
        "{metrics}"
    );
    let (_, token) = create_token(&n[0].base, &root, &app, limited);
    let valid = hammer(&n, &token, 90);
    assert!(
        (20..=22).contains(&valid),
        "through PostgreSQL: {valid} VALID"
    );
}

/// Failed authentications spread over three nodes lock the client out once they reach
/// the threshold in total: two failures on each node (threshold 6) and the next attempt is
/// refused on any node, where each node alone would have counted only two.
#[test]
fn lockouts_count_failures_from_every_node() {
    let Some(db) = cluster_db() else { return };
    let Some(redis) = Service::redis() else {
        return;
    };
    let n = nodes(db.url(), Some(&redis.url), 3, &["--lockout-threshold", "6"]);
    let root = root_of(&n);
    // A well-formed token that does not exist: each use is a failed authentication.
    let app = create_app(&n[0].base, &root, "guessed");
    let (id, token) = create_token(&n[0].base, &root, &app, json!({"name": "g", "scopes": []}));
    let r = call(
        &n[0].base,
        "DELETE",
        &format!("/v1/tokens/{id}"),
        Some(&root),
        None,
    );
    assert_eq!(r.status, 204, "{}", r.body);
    for round in 0..2 {
        for node in &n {
            let r = call(&node.base, "GET", "/v1/apps", Some(&token), None);
            assert_eq!(r.status, 401, "round {round}: {}", r.body);
        }
    }
    for node in &n {
        let r = call(&node.base, "GET", "/v1/apps", Some(&token), None);
        assert_eq!(r.status, 429, "locked out on every node: {}", r.body);
        assert!(r.header("retry-after").is_some());
    }
    // The root token, correct and cached on the node that created the token, still works
    // there from the same address.
    assert_eq!(
        call(&n[0].base, "GET", "/v1/apps", Some(&root), None).status,
        200
    );
}

/// Creates an application; `None` when the node did not acknowledge it (it died).
fn try_create_app(base: &str, root: &str, name: &str) -> Option<String> {
    let response = ureq::post(&format!("{base}/v1/apps"))
        .set("Authorization", &format!("Bearer {root}"))
        .timeout(Duration::from_secs(30))
        .send_json(json!({ "name": name }))
        .ok()?;
    if response.status() != 201 {
        return None;
    }
    let v: Value = response.into_json().ok()?;
    v["id"].as_str().map(str::to_owned)
}

/// Management writes through all three nodes while one is killed with SIGKILL: every
/// acknowledged write is there afterwards, the audit chain verifies with contiguous `seq`,
/// and the other two keep serving.
#[test]
fn kill_dash_nine_of_a_node_during_a_write_burst_loses_no_acknowledged_write() {
    let Some(db) = cluster_db() else { return };
    let Some(redis) = Service::redis() else {
        return;
    };
    let mut n = nodes(db.url(), Some(&redis.url), 3, &[]);
    let root = root_of(&n);
    let bases: Vec<String> = n.iter().map(|s| s.base.clone()).collect();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let burst = {
        let (bases, root, acknowledged) = (bases.clone(), root.clone(), acknowledged.clone());
        thread::spawn(move || {
            thread::scope(|s| {
                for t in 0..6 {
                    let (bases, root, acknowledged) = (&bases, &root, &acknowledged);
                    s.spawn(move || {
                        for i in 0..15 {
                            let base = &bases[(t + i) % 3];
                            let name = format!("burst-{t}-{i}");
                            if let Some(id) = try_create_app(base, root, &name) {
                                acknowledged.lock().unwrap().push(id);
                            }
                        }
                    });
                }
            });
        })
    };
    thread::sleep(Duration::from_millis(300));
    let victim = n.remove(2);
    let status = Command::new("kill")
        .arg("-9")
        .arg(victim.pid().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    burst.join().unwrap();
    drop(victim);
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "{} writes acknowledged",
        acknowledged.len()
    );
    for id in &acknowledged {
        let r = call(
            &n[1].base,
            "GET",
            &format!("/v1/apps/{id}"),
            Some(&root),
            None,
        );
        assert_eq!(
            r.status, 200,
            "acknowledged app {id} is missing: {}",
            r.body
        );
    }
    let chain = call(&n[0].base, "GET", "/v1/audit/verify", Some(&root), None).json();
    assert_eq!(chain["ok"], true, "{chain}");
    let events = call(&n[0].base, "GET", "/v1/audit?limit=200", Some(&root), None).json();
    let seqs: Vec<u64> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    for pair in seqs.windows(2) {
        assert_eq!(pair[0], pair[1] + 1, "seq has a gap: {seqs:?}");
    }
    for id in &acknowledged {
        assert!(
            events["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "app.create" && e["target"] == id.as_str()),
            "no audit event for {id}"
        );
    }
}

/// Redis stopped: nothing answers 5xx, rate limits fall back to each node, `/readyz`
/// says degraded with 200; Redis back: shared again, by itself. PostgreSQL stopped:
/// `/readyz` 503; back: ready again, without a restart.
#[test]
fn outages_of_redis_and_postgresql_are_survived_without_a_restart() {
    let Some(pg) = Service::postgres() else {
        return;
    };
    let Some(redis) = Service::redis() else {
        return;
    };
    let n = nodes(
        &pg.url,
        Some(&redis.url),
        2,
        &["--db-connect-timeout", "1s"],
    );
    let root = root_of(&n);
    // The initialising node printed the root token once, by design; nothing else may.
    let printed: Vec<usize> = n.iter().map(|s| s.logs().matches(&root).count()).collect();
    let app = create_app(&n[0].base, &root, "outage");
    let (_, token) = create_token(
        &n[0].base,
        &root,
        &app,
        json!({"name": "l", "scopes": [], "ratelimit": {"limit": 1000, "per_seconds": 60}}),
    );
    let ready = |node: &Server| call(&node.base, "GET", "/readyz", None, None);
    for node in &n {
        assert_eq!(ready(node).json()["status"], "ready");
    }
    redis.run("halt");
    for node in &n {
        for _ in 0..20 {
            assert_eq!(verify(&node.base, &root, &token), "VALID");
        }
        let took = within(Duration::from_secs(2), "degraded", || {
            let r = ready(node);
            r.status == 200 && r.json()["status"] == "degraded"
        });
        assert!(took < Duration::from_secs(2));
        assert_eq!(ready(node).json()["counters"], "fallback");
    }
    let metrics = call(&n[0].base, "GET", "/metrics", None, None).body;
    assert!(
        metrics.contains(r#"kms_limits_shared{backend="redis"} 0"#),
        "{metrics}"
    );
    within(Duration::from_secs(2), "logged", || {
        n[0].logs().contains("the shared counters do not answer")
    });
    redis.run("resume");
    for node in &n {
        within(Duration::from_secs(3), "shared again", || {
            ready(node).json()["status"] == "ready"
        });
        assert_eq!(verify(&node.base, &root, &token), "VALID");
    }
    within(Duration::from_secs(2), "logged", || {
        n[0].logs().contains("the shared counters answer again")
    });
    pg.run("halt");
    for node in &n {
        within(Duration::from_secs(5), "503 without the database", || {
            ready(node).status == 503
        });
    }
    pg.run("resume");
    for node in &n {
        within(Duration::from_secs(15), "ready again", || {
            ready(node).status == 200
        });
        let r = call(&node.base, "GET", "/v1/apps", Some(&root), None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for (node, printed) in n.iter().zip(printed) {
        let logs = node.logs();
        assert!(!logs.contains(&token), "a token in the logs");
        assert_eq!(
            logs.matches(&root).count(),
            printed,
            "the root token logged"
        );
    }
}
