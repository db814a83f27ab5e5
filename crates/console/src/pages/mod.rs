//! One module per console section, each following its API resource.

pub(crate) mod audit;
pub(crate) mod keys;
pub(crate) mod keystores;
pub(crate) mod login;
pub(crate) mod templates;
pub(crate) mod vaults;

use askama::Template;
use serde_json::Value;

use crate::view::Text;
use crate::{Chrome, PageError, User};

/// The vaults a form offers (the first hundred, by name).
pub(crate) async fn vault_choices(user: &User) -> Result<Vec<Value>, PageError> {
    Ok(user
        .get("/api/v4/vaults?limit=100&sort=name")
        .await?
        .body
        .items("/vaults"))
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
    pub fn new(offset: u64, limit: u64, total: u64, query: String) -> Self {
        Paging {
            offset,
            limit,
            total,
            query,
        }
    }

    pub fn first_shown(&self) -> u64 {
        if self.total == 0 { 0 } else { self.offset + 1 }
    }

    pub fn last_shown(&self) -> u64 {
        (self.offset + self.limit).min(self.total)
    }

    pub fn previous(&self) -> Option<String> {
        (self.offset > 0).then(|| self.link(self.offset.saturating_sub(self.limit)))
    }

    pub fn next(&self) -> Option<String> {
        (self.offset + self.limit < self.total).then(|| self.link(self.offset + self.limit))
    }

    fn link(&self, offset: u64) -> String {
        if self.query.is_empty() {
            format!("?offset={offset}")
        } else {
            format!("?{}&offset={offset}", self.query)
        }
    }
}
