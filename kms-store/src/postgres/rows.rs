//! Reading PostgreSQL rows through the shared decoders (`crate::columns`).

use ::postgres::types::FromSql;
use ::postgres::Row;
use kms_core::store::StoreError;

use crate::columns::{corrupt, ColumnRead};

fn col<'a, T: FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx)
        .map_err(|e| corrupt(&format!("column {idx}"), e))
}

impl ColumnRead for Row {
    fn text(&self, idx: usize) -> Result<String, StoreError> {
        col(self, idx)
    }
    fn opt_text(&self, idx: usize) -> Result<Option<String>, StoreError> {
        col(self, idx)
    }
    fn int(&self, idx: usize) -> Result<i64, StoreError> {
        col(self, idx)
    }
    fn opt_int(&self, idx: usize) -> Result<Option<i64>, StoreError> {
        col(self, idx)
    }
    fn bytes(&self, idx: usize) -> Result<Vec<u8>, StoreError> {
        col(self, idx)
    }
    fn opt_bytes(&self, idx: usize) -> Result<Option<Vec<u8>>, StoreError> {
        col(self, idx)
    }
    fn flag(&self, idx: usize) -> Result<bool, StoreError> {
        col(self, idx)
    }
}
