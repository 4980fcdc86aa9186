//! Quickstart: embed kms over a SQLite file, define a small permission hierarchy and a
//! role, issue an API key, verify it and check permissions in-process.
//!
//! ```text
//! cargo run -p kms-examples --example quickstart -- ./quickstart.db
//! ```
//!
//! Safe to run again on the same file: the database is initialised only once (the root
//! token is shown by `initialize` that one time, and never printed here), and the
//! application, permissions and role are reused when they already exist. Each run issues
//! one new demo token.

use std::error::Error;
use std::path::PathBuf;
use std::sync::Arc;

use kms_core::{
    Caller, ErrorCode, Kms, NewApp, NewPermission, NewRole, NewToken, PageRequest, PermissionQuery,
    MAX_PAGE_LIMIT,
};
use kms_store::SqliteStore;

const APP_NAME: &str = "quickstart";
const ROLE_NAME: &str = "billing-reader";

fn main() -> Result<(), Box<dyn Error>> {
    let path = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("./quickstart.db"), PathBuf::from);

    // The store is the only I/O kms does; the defaults are OWASP argon2id parameters,
    // the system clock and the operating system's CSPRNG.
    let store = SqliteStore::open(&path)?;
    let kms = Kms::builder(Arc::new(store)).build()?;
    println!("database:    {}", path.display());

    let admin = administrator(&kms)?;
    let app_id = application(&kms, &admin)?;
    define_policy(&kms, &admin)?;

    let created = kms.create_token(
        &admin,
        &app_id,
        NewToken {
            name: "quickstart demo key".to_owned(),
            roles: vec![ROLE_NAME.to_owned()],
            ..NewToken::default()
        },
    )?;
    // `created.token` is the plaintext: hand it to its user once, never log it.
    println!(
        "token:       created {} (starts with {}…, role {ROLE_NAME})",
        created.info.id, created.info.start
    );

    let verification = kms.verify_token(&created.token, None, None)?;
    println!(
        "verify:      {} (token {})",
        verification.code().as_str(),
        verification.token_id().unwrap_or("-")
    );
    if !verification.is_valid() {
        return Err("the freshly created token did not verify".into());
    }

    // In-process checks against the compiled snapshot: a hash lookup and a bit test each.
    for scope in ["billing.invoices.read", "billing.invoices.write"] {
        println!(
            "allows:      {scope:<24} -> {}",
            yes_no(verification.allows(scope))
        );
    }
    let expr = "billing.invoices.read AND (billing.invoices.write OR admin)";
    let query = PermissionQuery::parse(expr)?;
    let with_query = kms.verify_token(&created.token, Some(&query), None)?;
    println!(
        "query:       {expr} -> {} ({})",
        yes_no(with_query.is_valid()),
        with_query.code().as_str()
    );

    let stats = kms.cache_stats();
    println!(
        "cache:       {} hit(s), {} miss(es) (a miss runs argon2id, a hit does not)",
        stats.hits, stats.misses
    );
    Ok(())
}

/// The caller to administer with. On a fresh database `initialize` creates the root token;
/// we authenticate with it and drop it unprinted. On an initialised database `initialize`
/// is refused (the root token was shown once, when it was created), so we act as the
/// local operator, as the `kms` command-line tool does on a local file.
fn administrator(kms: &Kms) -> Result<Caller, Box<dyn Error>> {
    match kms.initialize() {
        Ok(root) => {
            println!(
                "initialise:  new database; root token {} created (not shown)",
                root.info.id
            );
            Ok(kms.authenticate(&root.token, None)?)
        }
        Err(e) if e.code() == ErrorCode::Conflict => {
            println!("initialise:  already initialised; acting as the local operator");
            Ok(kms.operator())
        }
        Err(e) => Err(e.into()),
    }
}

/// The id of the `quickstart` application, created on the first run.
fn application(kms: &Kms, admin: &Caller) -> Result<String, Box<dyn Error>> {
    let mut page = PageRequest {
        limit: Some(MAX_PAGE_LIMIT),
        cursor: None,
    };
    loop {
        let apps = kms.list_apps(admin, page.clone())?;
        if let Some(app) = apps.items.iter().find(|a| a.name == APP_NAME) {
            println!("application: reusing {APP_NAME} ({})", app.id);
            return Ok(app.id.clone());
        }
        match apps.next_cursor {
            Some(c) => page.cursor = Some(c),
            None => break,
        }
    }
    let app = kms.create_app(
        admin,
        NewApp {
            name: APP_NAME.to_owned(),
            token_prefix: Some("demo".to_owned()),
            ..Default::default()
        },
    )?;
    println!("application: created {APP_NAME} ({})", app.id);
    Ok(app.id)
}

/// Defines `billing`, `billing.invoices.read` and `billing.invoices.write` (which implies
/// read), and the role `billing-reader`; whatever already exists is kept.
fn define_policy(kms: &Kms, admin: &Caller) -> Result<(), Box<dyn Error>> {
    let permission = |scope: &str, description: &str, implies: &[&str]| NewPermission {
        scope: scope.to_owned(),
        description: Some(description.to_owned()),
        implies: implies.iter().map(|s| (*s).to_owned()).collect(),
    };
    let wanted = [
        permission("billing", "everything in billing", &[]),
        permission("billing.invoices.read", "read invoices", &[]),
        permission(
            "billing.invoices.write",
            "create and change invoices",
            &["billing.invoices.read"],
        ),
    ];
    let existing = kms.list_permissions(admin)?;
    let missing: Vec<NewPermission> = wanted
        .into_iter()
        .filter(|p| !existing.iter().any(|e| e.scope.as_str() == p.scope))
        .collect();
    if missing.is_empty() {
        println!("permissions: billing hierarchy already defined");
    } else {
        let created = kms.create_permissions(admin, missing)?;
        let names: Vec<&str> = created.iter().map(|p| p.scope.as_str()).collect();
        println!("permissions: defined {}", names.join(", "));
    }

    match kms.create_role(
        admin,
        NewRole {
            name: ROLE_NAME.to_owned(),
            description: Some("reads invoices".to_owned()),
            permissions: vec!["billing.invoices.read".to_owned()],
            inherits: Vec::new(),
            grants: Vec::new(),
        },
    ) {
        Ok(role) => {
            let effective: Vec<&str> = role.effective.iter().map(|s| s.as_str()).collect();
            println!(
                "role:        created {ROLE_NAME} -> {}",
                effective.join(", ")
            );
        }
        Err(e) if e.code() == ErrorCode::Conflict => {
            println!("role:        {ROLE_NAME} already defined");
        }
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
