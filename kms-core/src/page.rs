//! Pagination of listings: the page requested and the page returned.

use serde::Serialize;

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor for the next page, or null at the end.
    pub next_cursor: Option<String>,
}

/// Which page to list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// Items per page (1–1000; default 50).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// Default page size.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;
/// Largest page size.
pub const MAX_PAGE_LIMIT: u32 = 1000;
