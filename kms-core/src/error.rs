//! The error type of kms-core: typed codes, a `retryable` flag, lowercase messages that
//! never carry a secret.

use std::fmt;

/// A problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldError {
    /// The field, as named in the request (`scopes[2]`, `token_prefix`).
    pub field: String,
    /// What is wrong with it, in lowercase prose.
    pub problem: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// The machine-readable code of an [`Error`]; each maps to one HTTP status in the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed or a field is invalid (400).
    InvalidRequest,
    /// No valid credential was presented (401).
    Unauthenticated,
    /// The credential is valid but lacks a permission (403).
    Forbidden,
    /// The object does not exist, or is not visible to the caller (404).
    NotFound,
    /// The change conflicts with the current state (409).
    Conflict,
    /// Too many requests (429).
    RateLimited,
    /// The store cannot be reached or is busy; try again (503).
    Unavailable,
    /// A bug or corrupt data; nothing the caller can fix (500).
    Internal,
}

impl ErrorCode {
    /// The snake_case code used on the wire (`not_found`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in a kms operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// One or more fields are invalid; each is listed.
    #[error("invalid request: {}", summarize(.fields))]
    InvalidRequest {
        /// Every bad field with its problem.
        fields: Vec<FieldError>,
    },
    /// The credential is missing, malformed, unknown, revoked or expired.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller lacks `required`.
    #[error("this call needs the permission {required}")]
    Forbidden {
        /// The missing scope.
        required: String,
    },
    /// The caller asked to give a token a looser limit than it has itself: a later expiry,
    /// more uses, a faster rate or a wider network (403, like a missing scope).
    #[error("a key cannot give a token a looser {limit} than its own ({own})")]
    LooserLimit {
        /// Which limit: `expires_at`, `uses`, `ratelimit` or `ip_allow`.
        limit: &'static str,
        /// The caller's own limit, for the message.
        own: String,
    },
    /// The object does not exist or is not visible to the caller.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with existing state.
    #[error("{0}")]
    Conflict(String),
    /// Too many requests; retry after the given number of seconds.
    #[error("too many requests; retry after {retry_after_secs} seconds")]
    RateLimited {
        /// Seconds until a retry may succeed.
        retry_after_secs: u64,
    },
    /// The store is unreachable or busy.
    #[error("{message}")]
    Unavailable {
        /// What was unavailable.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<Source>,
    },
    /// A bug or corrupt data.
    #[error("internal error: {message}")]
    Internal {
        /// A description for operators; never shown to clients by the server.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<Source>,
    },
}

fn summarize(fields: &[FieldError]) -> String {
    fields
        .iter()
        .map(|f| format!("{}: {}", f.field, f.problem))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// A validation error with every field name put under `list` (`tokens[3].scopes[0]`),
    /// for calls that take many requests at once; other errors as they are.
    pub(crate) fn prefixed(self, list: &str) -> Error {
        match self {
            Error::InvalidRequest { fields } if !list.is_empty() => Error::InvalidRequest {
                fields: fields
                    .into_iter()
                    .map(|mut f| {
                        f.field = format!("{list}.{}", f.field);
                        f
                    })
                    .collect(),
            },
            other => other,
        }
    }

    /// An invalid-request error about a single field.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::InvalidRequest {
            fields: vec![FieldError::new(field, problem)],
        }
    }

    /// An internal error with a message for operators.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal {
            message: message.into(),
            source: None,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::Forbidden { .. } | Error::LooserLimit { .. } => ErrorCode::Forbidden,
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::RateLimited { .. } => ErrorCode::RateLimited,
            Error::Unavailable { .. } => ErrorCode::Unavailable,
            Error::Internal { .. } => ErrorCode::Internal,
        }
    }

    /// Whether the same call may succeed when retried unchanged.
    pub fn retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. } | Error::RateLimited { .. })
    }
}

/// Errors reported by a [`Store`](crate::store::Store) implementation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A uniqueness or precondition check failed; nothing was changed.
    #[error("{0}")]
    Conflict(String),
    /// The store cannot serve the request now (locked, disk full, unreachable).
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What failed.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<Source>,
    },
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// An unavailable error wrapping `source`.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError::Unavailable {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Error::Conflict(m),
            StoreError::Unavailable { message, source } => Error::Unavailable {
                message: format!("the store is unavailable ({message}); retry shortly"),
                source,
            },
            StoreError::Corrupt(m) => Error::Internal {
                message: format!("corrupt stored data: {m}"),
                source: None,
            },
        }
    }
}

/// A result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Collects field errors so a request reports every bad field at once.
#[derive(Debug, Default)]
pub(crate) struct FieldErrors(Vec<FieldError>);

impl FieldErrors {
    /// Whether no problem was recorded.
    #[cfg_attr(
        not(feature = "sso"),
        allow(dead_code, reason = "used by single sign-on")
    )]
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn push(&mut self, field: impl Into<String>, problem: impl Into<String>) {
        self.0.push(FieldError::new(field, problem));
    }

    /// Records the error of `r` under its own field names and returns the value, if any.
    pub(crate) fn take<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(Error::InvalidRequest { fields }) => {
                self.0.extend(fields);
                None
            }
            Err(other) => {
                self.0.push(FieldError::new("request", other.to_string()));
                None
            }
        }
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidRequest { fields: self.0 })
        }
    }
}
