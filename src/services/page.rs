//! Cursor pagination over time-ordered (UUIDv7) ids: the cursor is the last id seen.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sea_orm::sea_query::{Alias, Expr, Order, Query, WindowStatement};
use sea_orm::{ConnectionTrait, EntityTrait, QueryTrait, Select, Statement};
use uuid::Uuid;

use crate::error::{AppError, AppResult};

pub const MAX_PAGE: u64 = 100;
pub const DEFAULT_PAGE: u64 = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRequest {
    pub first: u64,
    pub after: Option<Uuid>,
}

impl PageRequest {
    pub fn parse(first: Option<i32>, after: Option<&str>) -> AppResult<Self> {
        let first = page_size(first, DEFAULT_PAGE)?;
        let after = after.map(decode_cursor).transpose()?;
        Ok(Self { first, after })
    }
}

/// A requested page size: `default` when absent, refused (not clamped) outside 0..=`MAX_PAGE`.
pub fn page_size(first: Option<i32>, default: u64) -> AppResult<u64> {
    match first {
        None => Ok(default),
        Some(n) if (0..=MAX_PAGE as i32).contains(&n) => Ok(n as u64),
        Some(_) => Err(AppError::bad_input(format!(
            "`first` must be between 0 and {MAX_PAGE}"
        ))),
    }
}

#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub has_next_page: bool,
}

impl<T> Page<T> {
    /// Builds a page from up to `first + 1` rows: the extra row only says there is more.
    pub fn from_overfetch(mut items: Vec<T>, first: u64) -> Self {
        let has_next_page = items.len() as u64 > first;
        items.truncate(first as usize);
        Self {
            items,
            has_next_page,
        }
    }
}

/// The rows of `select` numbered from 1 within each `group` in `order`, keeping numbers
/// `skip + 1 ..= skip + take`: a page of every group in one statement (a window function,
/// SQLite ≥ 3.25 and PostgreSQL). Load the models with `E::find().from_raw_sql(..)`.
pub fn page_per_group<E: EntityTrait>(
    db: &impl ConnectionTrait,
    select: Select<E>,
    group: E::Column,
    order: E::Column,
    skip: u64,
    take: u64,
) -> Statement {
    // PostgreSQL has no unsigned integers.
    let bound = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let row_number = Alias::new("row_number");
    let mut numbered = select.into_query();
    numbered.expr_window_as(
        Expr::cust("ROW_NUMBER()"),
        WindowStatement::partition_by(group)
            .order_by(order, Order::Asc)
            .to_owned(),
        row_number.clone(),
    );
    let page = Query::select()
        .column(sea_orm::sea_query::Asterisk)
        .from_subquery(numbered, Alias::new("numbered"))
        .and_where(Expr::col(row_number.clone()).gt(bound(skip)))
        .and_where(Expr::col(row_number.clone()).lte(bound(skip.saturating_add(take))))
        .order_by(row_number, Order::Asc)
        .to_owned();
    db.get_database_backend().build(&page)
}

pub fn encode_cursor(id: Uuid) -> String {
    URL_SAFE_NO_PAD.encode(id.as_bytes())
}

pub fn decode_cursor(cursor: &str) -> AppResult<Uuid> {
    URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| Uuid::from_slice(&bytes).ok())
        .ok_or_else(|| AppError::bad_input("invalid cursor"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let id = Uuid::now_v7();
        assert_eq!(decode_cursor(&encode_cursor(id)).unwrap(), id);
        assert!(matches!(
            decode_cursor("%%"),
            Err(AppError::BadUserInput(_))
        ));
        assert!(matches!(
            decode_cursor("abc"),
            Err(AppError::BadUserInput(_))
        ));
    }

    #[test]
    fn page_size_is_bounded() {
        assert_eq!(PageRequest::parse(None, None).unwrap().first, DEFAULT_PAGE);
        assert!(PageRequest::parse(Some(-1), None).is_err());
        assert!(PageRequest::parse(Some(101), None).is_err());
        let page = Page::from_overfetch(vec![1, 2, 3], 2);
        assert_eq!(page.items, vec![1, 2]);
        assert!(page.has_next_page);
    }
}
