#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The tree, one concept per module (docs/architecture.md, ADR 0007).
mod access_token;
mod api_key;
mod application;
mod audit;
mod clock;
mod defence;
mod error;
mod hex;
mod identity;
mod kms;
mod page;
mod policy;
mod random;
mod requests;
mod sealing;
mod security_event;
#[cfg(feature = "sso")]
pub mod sso;
mod usage;

pub mod dangerous;
#[doc(hidden)]
pub mod internal;
pub mod manual;
pub mod privacy;
pub mod store;

// What an application uses. Store implementers find the rest under `store`.
pub use access_token::{
    AccessClaims, Introspection, JwtError, JwtSettings, KeyInfo, OAuthError, TokenResponse,
};
pub use api_key::token_format;
pub use api_key::{
    CacheStats, CreatedToken, HashParams, IpNetwork, RateLimit, TokenInfo, TokenLimits, TokenStatus,
};
pub use application::{AppSecurity, AppStatus, Application, SYSTEM_APP_ID};
pub use audit::{AuditEvent, AuditVerification};
pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use defence::counters;
pub use defence::request_signing;
pub use defence::LockoutPolicy;
pub use error::{Error, ErrorCode, FieldError, Result};
pub use kms::UsageFlushed;
#[cfg(feature = "sso")]
pub use kms::{
    validate_return_to, BrowserContext, IdpInfo, IdpUpdate, LoginDone, LoginRedirect, NewIdp,
    OidcCallback, SsoConfig, LOGIN_ATTEMPT_SECS,
};
pub use kms::{
    AuditCheckpoint, AuditFilter, BulkUserRoles, Caller, CheckpointVerification, Kms, KmsBuilder,
    MasterKeyRotation, Me, RetentionReport, RoleView, SessionInfo, SessionSettings, StartedSession,
    UserInfo, UserUpdate, Verification, VerifyCode, VerifyResponse, CHECKPOINT_TYP,
    MASTER_KEY_SET_AT_KEY, SESSION_TOKEN_PREFIX,
};
pub use kms::{
    CapacityStats, ComplianceReport, ComplianceSettings, ComplianceSummary, Finding, FindingStatus,
    GrowthPerDay, ReportPeriod, FINDING_IDS, GROWTH_WINDOW_DAYS, MAX_FINDING_ITEMS, UNUSED_DAYS,
};
pub use kms::{UserExport, DEFAULT_EXPORT_AUDIT_LIMIT};
pub use page::{Page, PageRequest, DEFAULT_PAGE_LIMIT, MAX_PAGE_LIMIT};
pub use policy::{
    Condition, ConditionError, ConditionInput, ConditionLimits, ConditionalGrant, GrantInput,
    GrantTarget, Permission, PermissionQuery, Role, RoleName, Scope, ADMIN,
};
pub use random::{OsRandom, SecureRandom};
pub use requests::{
    AppUpdate, BulkChanged, BulkDeletePermissions, BulkNewTokens, BulkRevoke, BulkRevoked,
    BulkRoles, NewApp, NewPermission, NewRole, NewToken, RateLimitInput, RoleUpdate, RotateToken,
    TokenFilter, TokenUpdate, VerifyRequest,
};
pub use sealing::MasterKey;
pub use security_event::{SecurityEvent, SecurityEventSink};
pub use usage::{
    Granularity, UsageBatch, UsageBucket, UsageCost, UsagePrice, UsagePriceInput, UsageQuery,
    UsageReport, UsageTotals, UsageTrend, UsageWindow, BUCKET_SECS, MAX_BUCKETS,
};
