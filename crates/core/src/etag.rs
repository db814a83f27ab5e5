//! ETags and `If-Match` (decisions.md §1): strong, quoted, changing on every write.

use uuid::Uuid;

use crate::error::{Error, Result};

/// The ETag of a resource at a revision: `"r<revision>-<id prefix>"`.
pub fn etag(revision: i64, id: Uuid) -> String {
    let simple = id.simple().to_string();
    format!("\"r{revision}-{}\"", &simple[..8])
}

/// A parsed `If-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    Tags(Vec<String>),
}

impl IfMatch {
    pub fn parse(header: &str) -> Self {
        let tags: Vec<String> = header
            .split(',')
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(|t| normalise(t).to_owned())
            .collect();
        if tags.iter().any(|t| t == "*") {
            Self::Any
        } else {
            Self::Tags(tags)
        }
    }

    fn matches(&self, current: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Tags(tags) => tags.iter().any(|t| t == normalise(current)),
        }
    }
}

fn normalise(tag: &str) -> &str {
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    tag.trim_matches('"')
}

/// 428 when the header is missing, 412 when it names another revision.
pub fn check(if_match: Option<&IfMatch>, revision: i64, id: Uuid) -> Result<()> {
    match if_match {
        None => Err(Error::PreconditionRequired),
        Some(m) if m.matches(&etag(revision, id)) => Ok(()),
        Some(_) => Err(Error::EtagMismatch),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_ignores_weakness_and_quotes() {
        let id = Uuid::new_v4();
        let tag = etag(7, id);
        assert!(tag.starts_with("\"r7-"));
        assert!(check(Some(&IfMatch::parse(&tag)), 7, id).is_ok());
        assert!(check(Some(&IfMatch::parse(&format!("W/{tag}"))), 7, id).is_ok());
        assert!(check(Some(&IfMatch::parse(tag.trim_matches('"'))), 7, id).is_ok());
        assert!(check(Some(&IfMatch::parse("*")), 9, id).is_ok());
        assert_eq!(
            check(Some(&IfMatch::parse(&tag)), 8, id),
            Err(Error::EtagMismatch)
        );
        assert_eq!(check(None, 8, id), Err(Error::PreconditionRequired));
    }
}
