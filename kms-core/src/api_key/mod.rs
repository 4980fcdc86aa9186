//! API keys: the token format, the hashing of their secrets, the verified-key cache, and
//! the views of a key callers are given.

pub(crate) mod cache;
pub(crate) mod hashing;
mod token;
pub mod token_format;

pub use cache::CacheStats;
pub use hashing::HashParams;
pub use token::{CreatedToken, IpNetwork, RateLimit, TokenInfo, TokenLimits, TokenStatus};
