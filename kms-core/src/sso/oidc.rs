//! OpenID Connect relying party (being written).
