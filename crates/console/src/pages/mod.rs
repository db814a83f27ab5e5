//! One module per console section, each following its API resource.

pub(crate) mod audit;
pub(crate) mod keys;
pub(crate) mod keystores;
pub(crate) mod login;
pub(crate) mod templates;
pub(crate) mod vaults;

use askama::Template;
use keyplane_core::etag::IfMatch;
use keyplane_core::model::VaultView;
use keyplane_core::query::{Paging as Window, SortKey};

use crate::{Chrome, PageError, User};

/// The vaults a form offers (the first hundred, by name).
pub(crate) async fn vault_choices(user: &User) -> Result<Vec<VaultView>, PageError> {
    Ok(vaults::by_name(user, 100, 0).await?.items)
}

/// A page of `limit` items from `offset`; an offset past what a store can count is no page.
pub(crate) fn window(limit: u32, offset: u64) -> Result<Window, PageError> {
    if i64::try_from(offset).is_err() {
        return Err(crate::no_such_page());
    }
    Ok(Window { limit, offset })
}

/// A text filter, trimmed; longer than `max` bytes it is refused, as the API refuses it.
pub(crate) fn filter_text(
    name: &str,
    value: &str,
    max: usize,
) -> Result<Option<String>, PageError> {
    let value = value.trim();
    if value.len() > max {
        return Err(PageError::Api(Box::new(crate::Problem::new(
            axum::http::StatusCode::BAD_REQUEST,
            format!("The {name} filter is longer than {max} characters."),
        ))));
    }
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// One sort key; `field` is one the resource's store sorts by.
pub(crate) fn sorted_by(field: &'static str, descending: bool) -> Vec<SortKey> {
    vec![SortKey { field, descending }]
}

/// The precondition a form's ETag states (an empty one matches nothing).
pub(crate) fn if_match(etag: &str) -> IfMatch {
    IfMatch::parse(etag)
}

/// `k=v&…` with the non-empty values, form-encoded: a list page's filters in its links.
pub(crate) fn link_query(pairs: &[(&str, &str)]) -> String {
    let pairs: Vec<_> = pairs.iter().filter(|(_, v)| !v.is_empty()).collect();
    serde_urlencoded::to_string(&pairs).unwrap_or_default()
}

#[derive(Template)]
#[template(path = "error.html")]
pub(crate) struct ErrorPage {
    pub chrome: Chrome,
    pub status: u16,
    pub message: String,
}

/// Where a list page is: `offset` of `total`, `limit` per page.
pub(crate) struct Paging {
    pub offset: u64,
    pub limit: u64,
    pub total: u64,
    /// The page's query without `offset`, to build the previous and next links.
    pub query: String,
}

impl Paging {
    pub fn new(offset: u64, limit: u64, total: i64, query: String) -> Self {
        Paging {
            offset,
            limit,
            total: u64::try_from(total).unwrap_or(0),
            query,
        }
    }

    pub fn first_shown(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            self.offset.saturating_add(1)
        }
    }

    pub fn last_shown(&self) -> u64 {
        self.offset.saturating_add(self.limit).min(self.total)
    }

    pub fn previous(&self) -> Option<String> {
        (self.offset > 0).then(|| self.link(self.offset.saturating_sub(self.limit)))
    }

    pub fn next(&self) -> Option<String> {
        let next = self.offset.saturating_add(self.limit);
        (next < self.total).then(|| self.link(next))
    }

    fn link(&self, offset: u64) -> String {
        if self.query.is_empty() {
            format!("?offset={offset}")
        } else {
            format!("?{}&offset={offset}", self.query)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_queries_keep_only_set_values_and_encode_them() {
        assert_eq!(
            link_query(&[("state", "active"), ("label", "a b&c"), ("vault", "")]),
            "state=active&label=a+b%26c"
        );
        assert_eq!(link_query(&[]), "");
    }

    #[test]
    fn offsets_past_what_a_store_counts_are_no_page_and_links_do_not_overflow() {
        assert!(window(25, u64::MAX).is_err());
        assert!(window(25, i64::MAX as u64).is_ok());
        let p = Paging::new(u64::MAX - 1, 25, 10, String::new());
        assert_eq!(p.last_shown(), 10);
        assert!(p.next().is_none());
        assert!(filter_text("label", &"x".repeat(300), 255).is_err());
        assert_eq!(
            filter_text("label", " a ", 255).ok().flatten().as_deref(),
            Some("a")
        );
    }

    #[test]
    fn an_empty_etag_matches_nothing() {
        use keyplane_core::etag::{check, etag};
        let id = uuid::Uuid::now_v7();
        assert!(check(Some(&if_match("")), 1, id).is_err());
        assert!(check(Some(&if_match(&etag(1, id))), 1, id).is_ok());
    }
}
