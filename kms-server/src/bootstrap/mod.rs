//! Building the service from its configuration: [`open`] opens the database as a
//! [`Kms`](kms_core::Kms) with its master key, [`serve`] starts the HTTP server around it.

pub mod open;
pub mod serve;

pub(crate) use open::write_private_file;
pub use open::{load_master_key, load_master_key_from, open_kms, open_kms_with, MasterKeyFile};
pub use serve::serve;

/// The service could not be opened or started; the message is for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(String);

impl StartError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        StartError(message.into())
    }
}

impl From<kms_core::Error> for StartError {
    fn from(e: kms_core::Error) -> Self {
        StartError(crate::http::error::error_chain(&e))
    }
}

impl From<kms_core::store::StoreError> for StartError {
    fn from(e: kms_core::store::StoreError) -> Self {
        StartError(crate::http::error::error_chain(&e))
    }
}
