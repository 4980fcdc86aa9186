//! Applications: the tenant unit, its status and its security settings.

use serde::{Deserialize, Serialize};

use crate::api_key::token_format::TokenPrefix;
use crate::api_key::IpNetwork;
use crate::clock::Timestamp;

/// Id of the system application, which owns the root token and may see every application.
pub const SYSTEM_APP_ID: &str = "app_system";

/// Whether an application's tokens may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppStatus {
    /// Tokens verify.
    Active,
    /// Every token of the application fails with `DISABLED`.
    Disabled,
}

impl AppStatus {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            AppStatus::Active => "active",
            AppStatus::Disabled => "disabled",
        }
    }

    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(AppStatus::Active),
            "disabled" => Some(AppStatus::Disabled),
            _ => None,
        }
    }
}

/// An application: the tenant unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Opaque id (`app_...`).
    pub id: String,
    /// Display name, unique.
    pub name: String,
    /// Prefix of the application's tokens.
    pub token_prefix: TokenPrefix,
    /// Active or disabled.
    pub status: AppStatus,
    /// When it was created.
    pub created_at: Timestamp,
    /// Network allow-list and request signing.
    #[serde(flatten)]
    pub security: AppSecurity,
    /// Price per thousand valid verifications, for the cost in usage reports; absent when
    /// none is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_price: Option<crate::usage::UsagePrice>,
}

/// An application's network allow-list and request-signing settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSecurity {
    /// Networks the application's tokens may be used from; empty means anywhere.
    #[serde(default)]
    pub ip_allow: Vec<IpNetwork>,
    /// Whether management calls by the application's tokens must be signed.
    #[serde(default)]
    pub require_signed_requests: bool,
    /// The request-signing secret, sealed under the master key. Never serialized.
    #[serde(skip)]
    pub signing_secret: Option<Vec<u8>>,
}

impl Application {
    /// Whether this is the system application.
    pub fn is_system(&self) -> bool {
        self.id == SYSTEM_APP_ID
    }
}
