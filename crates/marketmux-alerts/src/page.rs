//! Listing a user's alerts a page at a time: [`ListQuery`] (what to list,
//! validated) and [`AlertPage`] (one page and where the next one starts).
//!
//! Pages are in ascending id order (oldest first) and keyed by id, so a
//! client walking the pages sees every alert that existed for the whole walk
//! exactly once, whatever is created or deleted meanwhile.

use serde::Serialize;

use crate::model::Alert;

/// Alerts per page when the request names no `limit`.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
/// The largest `limit` a request may ask for.
pub const MAX_PAGE_SIZE: u32 = 1_000;

/// Which alerts of a user to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListQuery {
    /// Only those not fired yet.
    pub active_only: bool,
    /// Only ids above this one (the previous page's `next_after_id`).
    pub after_id: Option<i64>,
    /// At most this many, 1 ..= [`MAX_PAGE_SIZE`].
    pub limit: u32,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            active_only: false,
            after_id: None,
            limit: DEFAULT_PAGE_SIZE,
        }
    }
}

/// Why a list request is refused (answered with 400 / INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPage {
    /// `limit` is not an integer in range.
    #[error("limit must be an integer from 1 to {MAX_PAGE_SIZE}, got {0:?}")]
    Limit(String),
    /// `after_id` is not a non-negative integer.
    #[error("after_id must be a non-negative integer, got {0:?}")]
    AfterId(String),
}

impl ListQuery {
    /// A query from its parts as a request carries them (`None`: not given;
    /// a `limit` of 0 from gRPC means the default).
    pub fn new(
        active_only: bool,
        after_id: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Self, InvalidPage> {
        let limit = match limit {
            None | Some(0) => DEFAULT_PAGE_SIZE,
            Some(n) if n <= MAX_PAGE_SIZE => n,
            Some(n) => return Err(InvalidPage::Limit(n.to_string())),
        };
        if let Some(id) = after_id.filter(|id| *id < 0) {
            return Err(InvalidPage::AfterId(id.to_string()));
        }
        Ok(Self {
            active_only,
            after_id,
            limit,
        })
    }

    /// Parses `limit` and `after_id` query-string values.
    pub fn parse(
        active_only: bool,
        after_id: Option<&str>,
        limit: Option<&str>,
    ) -> Result<Self, InvalidPage> {
        let limit = match limit {
            None => None,
            Some(v) => match v.parse::<u32>() {
                Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => Some(n),
                _ => return Err(InvalidPage::Limit(v.chars().take(32).collect())),
            },
        };
        let after_id = match after_id {
            None => None,
            Some(v) => match v.parse::<i64>() {
                Ok(id) if id >= 0 => Some(id),
                _ => return Err(InvalidPage::AfterId(v.chars().take(32).collect())),
            },
        };
        Self::new(active_only, after_id, limit)
    }

    /// Rows a store reads for this page: one more than `limit`, to learn
    /// whether another page follows without a second query.
    pub fn fetch_rows(&self) -> i64 {
        i64::from(self.limit) + 1
    }

    /// The lower id bound for SQL (`id > after`).
    pub fn after(&self) -> i64 {
        self.after_id.unwrap_or(0)
    }
}

/// One page of a user's alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertPage {
    /// In ascending id order.
    pub alerts: Vec<Alert>,
    /// Pass as `after_id` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after_id: Option<i64>,
}

impl AlertPage {
    /// The page from up to [`ListQuery::fetch_rows`] rows in ascending id
    /// order: the extra row, if read, only says that more follow.
    pub fn from_rows(mut alerts: Vec<Alert>, query: &ListQuery) -> Self {
        let limit = query.limit as usize;
        let next_after_id = if alerts.len() > limit {
            alerts.truncate(limit);
            alerts.last().map(|a| a.id)
        } else {
            None
        };
        Self {
            alerts,
            next_after_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked() {
        assert_eq!(
            ListQuery::parse(false, None, None).unwrap(),
            ListQuery::default()
        );
        let q = ListQuery::parse(true, Some("41"), Some("1000")).unwrap();
        assert_eq!((q.active_only, q.after_id, q.limit), (true, Some(41), 1000));
        for bad in ["0", "1001", "-1", "ten", ""] {
            assert!(matches!(
                ListQuery::parse(false, None, Some(bad)),
                Err(InvalidPage::Limit(_))
            ));
        }
        for bad in ["-1", "x", "", "1.5"] {
            assert!(matches!(
                ListQuery::parse(false, Some(bad), None),
                Err(InvalidPage::AfterId(_))
            ));
        }
        assert_eq!(
            ListQuery::new(false, None, Some(0)).unwrap().limit,
            DEFAULT_PAGE_SIZE
        );
        assert!(ListQuery::new(false, None, Some(MAX_PAGE_SIZE + 1)).is_err());
        assert!(ListQuery::new(false, Some(-5), None).is_err());
    }
}
