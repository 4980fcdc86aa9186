//! `kms idp`, `kms user` and `kms session`: the people endpoints of the HTTP API as
//! operator commands on a local database (or a PostgreSQL one), printing JSON as the API
//! answers.

use std::io::Read;

use clap::Subcommand;
use kms_core::{IdpUpdate, Kms, NewIdp, UserUpdate};
use serde_json::json;

use crate::bootstrap::{open_kms_with, MasterKeyFile};
use crate::cli::args::PageArgs;
use crate::cli::commands::{open_existing, page, print_json, CommandError};
use crate::config::{Config, ServeConfig};

/// `kms idp ...`.
#[derive(Debug, Subcommand)]
pub enum IdpCommand {
    /// Create a connection from a JSON file (`-`: stdin) shaped like the body of
    /// `POST /v1/apps/{app_id}/idps`; for OpenID Connect the discovery document is fetched.
    Create {
        /// The application.
        #[arg(long)]
        app: String,
        /// The address browsers and providers reach kms at (the SSO URLs are built from it).
        #[arg(long, env = "KMS_PUBLIC_URL")]
        public_url: String,
        /// The JSON file.
        file: std::path::PathBuf,
    },
    /// List an application's connections.
    List {
        /// The application.
        #[arg(long)]
        app: String,
        /// The address browsers and providers reach kms at.
        #[arg(long, env = "KMS_PUBLIC_URL")]
        public_url: String,
    },
    /// Show one connection.
    Get {
        /// Connection id.
        id: String,
        /// The address browsers and providers reach kms at.
        #[arg(long, env = "KMS_PUBLIC_URL")]
        public_url: String,
    },
    /// Change a connection from a JSON file (`-`: stdin) shaped like the body of
    /// `PATCH /v1/idps/{id}`.
    Update {
        /// Connection id.
        id: String,
        /// The address browsers and providers reach kms at.
        #[arg(long, env = "KMS_PUBLIC_URL")]
        public_url: String,
        /// The JSON file.
        file: std::path::PathBuf,
    },
    /// Delete a connection; the sessions started through it end.
    Delete {
        /// Connection id.
        id: String,
        /// The address browsers and providers reach kms at.
        #[arg(long, env = "KMS_PUBLIC_URL")]
        public_url: String,
    },
}

/// `kms user ...`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List an application's users.
    List {
        /// The application.
        #[arg(long)]
        app: String,
        /// Paging.
        #[command(flatten)]
        page: PageArgs,
    },
    /// Show one user.
    Get {
        /// User id.
        id: String,
    },
    /// Disable or enable a user, or replace the roles an administrator gives them.
    Update {
        /// User id.
        id: String,
        /// `active` or `disabled` (disabling ends every session).
        #[arg(long)]
        status: Option<String>,
        /// A role to give (repeat; replaces the given roles; mapped roles stay).
        #[arg(long = "role")]
        roles: Option<Vec<String>>,
    },
    /// Delete a user with their sessions; with `--erase`, also destroy their person key,
    /// so the personal fields of their audit events (addresses, user agents, email) cannot
    /// be read again while the chain stays intact.
    Delete {
        /// User id.
        id: String,
        /// Erase the person's data (as `DELETE /v1/users/{id}?erase=true`).
        #[arg(long)]
        erase: bool,
    },
    /// Print everything kms holds about a user (as `GET /v1/users/{id}/export`): profile,
    /// identities, sessions, roles, grants, and a page of their audit events.
    Export {
        /// User id.
        id: String,
        /// Paging of the audit events (default 100 a page).
        #[command(flatten)]
        page: PageArgs,
    },
}

/// `kms session ...`.
#[derive(Debug, Subcommand)]
pub enum SessionCommand {
    /// List a user's live sessions.
    List {
        /// User id.
        #[arg(long)]
        user: String,
    },
    /// End one session.
    Revoke {
        /// Session id.
        id: String,
    },
    /// End every session of a user.
    RevokeAll {
        /// User id.
        #[arg(long)]
        user: String,
    },
}

/// Reads a JSON document from `path` (`-`: stdin) into `T`.
fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, CommandError> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text))
    };
    read.map_err(|e| CommandError::new(format!("cannot read {}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| CommandError::new(format!("{} is not a valid body: {e}", path.display())))
}

/// The service with single sign-on, its URLs built from `public_url`.
fn open_with_sso(config: &Config, public_url: &str) -> Result<Kms, CommandError> {
    // Checked like the server's setting.
    let serve = ServeConfig {
        public_url: Some(public_url.trim_end_matches('/').to_owned()),
        ..ServeConfig::default()
    };
    if !(public_url.starts_with("http://") || public_url.starts_with("https://")) {
        return Err(CommandError::new(format!(
            "--public-url must be an http:// or https:// URL, got {public_url:?}"
        )));
    }
    open_existing(config)?;
    Ok(open_kms_with(
        config,
        Some(&serve),
        None,
        MasterKeyFile::UseIfPresent,
        None,
    )?)
}

/// Opens a `client_secret` given sealed (`kms config seal --setting idp_client_secret`), so
/// the JSON file of a connection need not hold it in plaintext.
fn unseal_client_secret(config: &Config, secret: &mut Option<String>) -> Result<(), CommandError> {
    use crate::config::sealed;
    if let Some(value) = secret.as_deref().filter(|v| sealed::is_sealed(v)) {
        let key = crate::bootstrap::load_master_key(config)?;
        let plain = sealed::open(&key, sealed::IDP_CLIENT_SECRET, value)
            .map_err(|problem| CommandError::new(format!("client_secret: {problem}")))?;
        *secret = Some(plain);
    }
    Ok(())
}

/// Runs `kms idp ...`.
pub(crate) fn idp(config: &Config, cmd: IdpCommand) -> Result<(), CommandError> {
    match cmd {
        IdpCommand::Create {
            app,
            public_url,
            file,
        } => {
            let mut req: NewIdp = read_json(&file)?;
            unseal_client_secret(config, &mut req.client_secret)?;
            let kms = open_with_sso(config, &public_url)?;
            print_json(&kms.create_idp(&kms.operator(), &app, req)?)
        }
        IdpCommand::List { app, public_url } => {
            let kms = open_with_sso(config, &public_url)?;
            let items = kms.list_idps(&kms.operator(), &app)?;
            print_json(&json!({"items": items, "next_cursor": null}))
        }
        IdpCommand::Get { id, public_url } => {
            let kms = open_with_sso(config, &public_url)?;
            print_json(&kms.get_idp(&kms.operator(), &id)?)
        }
        IdpCommand::Update {
            id,
            public_url,
            file,
        } => {
            let mut req: IdpUpdate = read_json(&file)?;
            unseal_client_secret(config, &mut req.client_secret)?;
            let kms = open_with_sso(config, &public_url)?;
            print_json(&kms.update_idp(&kms.operator(), &id, req)?)
        }
        IdpCommand::Delete { id, public_url } => {
            let kms = open_with_sso(config, &public_url)?;
            kms.delete_idp(&kms.operator(), &id)?;
            print_json(&json!({"deleted": true, "id": id}))
        }
    }
}

/// Runs `kms user ...`.
pub(crate) fn user(kms: &Kms, cmd: UserCommand) -> Result<(), CommandError> {
    let op = kms.operator();
    match cmd {
        UserCommand::List { app, page: p } => print_json(&kms.list_users(&op, &app, page(p))?),
        UserCommand::Get { id } => print_json(&kms.get_user(&op, &id)?),
        UserCommand::Update { id, status, roles } => print_json(&kms.update_user(
            &op,
            &id,
            UserUpdate {
                status,
                roles,
                grants: None,
            },
        )?),
        UserCommand::Delete { id, erase: false } => {
            kms.delete_user(&op, &id)?;
            print_json(&json!({"deleted": true, "id": id}))
        }
        UserCommand::Delete { id, erase: true } => {
            kms.erase_user(&op, &id)?;
            print_json(&json!({"deleted": true, "erased": true, "id": id}))
        }
        UserCommand::Export { id, page: p } => print_json(&kms.export_user(&op, &id, page(p))?),
    }
}

/// Runs `kms session ...`.
pub(crate) fn session(kms: &Kms, cmd: SessionCommand) -> Result<(), CommandError> {
    let op = kms.operator();
    match cmd {
        SessionCommand::List { user } => {
            let items = kms.list_user_sessions(&op, &user)?;
            print_json(&json!({"items": items, "next_cursor": null}))
        }
        SessionCommand::Revoke { id } => print_json(&kms.revoke_session(&op, &id)?),
        SessionCommand::RevokeAll { user } => {
            print_json(&json!({"revoked": kms.revoke_user_sessions(&op, &user)?}))
        }
    }
}
