//! Examples of embedding kms.
