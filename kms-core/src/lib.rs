#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod access_token;
mod audit;
mod cache;
mod env;
mod error;
mod failure_gate;
mod hashing;
mod keyring;
mod kms;
mod model;
mod policy;
mod query;
mod ratelimit;
pub mod request_signing;
pub mod requests;
mod scope;
mod sealing;
mod snapshot;
pub mod store;
pub mod token_format;

pub use access_token::{
    AccessClaims, Introspection, JwtError, JwtSettings, OAuthError, RefreshRecord, RefreshStatus,
    Revocation, TokenResponse,
};
pub use audit::{verify_chain, AuditEvent, AuditQuery, AuditVerification, GENESIS_HASH};
pub use cache::CacheStats;
pub use env::{Clock, ManualClock, OsRandom, SecureRandom, SystemClock, Timestamp};
pub use error::{Error, ErrorCode, FieldError, Result, StoreError};
pub use failure_gate::{LockoutPolicy, SecurityEvent, SecurityEventSink};
#[doc(hidden)]
pub use hashing::{hash_work_on_this_thread, HashWork};
pub use hashing::{HashParams, SecretHasher};
pub use keyring::{KeyAlgorithm, KeyInfo, KeyState, SigningKeyRecord};
pub use kms::{
    AuditFilter, Caller, Kms, KmsBuilder, RetentionReport, RoleView, Verification, VerifyCode,
    VerifyResponse,
};
pub use model::{
    AppSecurity, AppStatus, Application, CreatedToken, IpNetwork, Page, PageRequest, RateLimit,
    TokenInfo, TokenLimits, TokenRecord, TokenStatus, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT,
    SYSTEM_APP_ID,
};
pub use policy::{default_permissions, Permission, Policy, Role};
pub use query::PermissionQuery;
pub use requests::{
    AppUpdate, NewApp, NewPermission, NewRole, NewToken, RateLimitInput, RoleUpdate, RotateToken,
    TokenUpdate, VerifyRequest,
};
pub use scope::{RoleName, Scope, ADMIN};
pub use sealing::MasterKey;
pub use snapshot::{EffectiveSet, PermissionSnapshot};
