//! Showing core's values on pages: states, times and dates as people read them.

use chrono::{DateTime, NaiveDate, Utc};
use keyplane_core::model::KeyStatusInKeystore;

/// A state as people read it: `pre_activation` → "Pre-active".
pub(crate) fn state_label(state: &str) -> &'static str {
    match state {
        "pre_activation" => "Pre-active",
        "active" => "Active",
        "deactivated" => "Deactivated",
        "destroyed" => "Destroyed",
        "compromised" => "Compromised",
        "destroyed_compromised" => "Destroyed (compromised)",
        "archived" => "Archived",
        "unarchived" => "Unarchived",
        _ => "Unknown",
    }
}

/// A moment, to the second, in UTC.
pub(crate) fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A date, or nothing.
pub(crate) fn maybe(date: &Option<NaiveDate>) -> String {
    date.as_ref().map(|d| d.to_string()).unwrap_or_default()
}

/// The ETag of a resource as listed, for a form that acts on it as shown.
pub(crate) fn etag_of(revision: &i64, id: &uuid::Uuid) -> String {
    keyplane_core::etag::etag(*revision, *id)
}

/// What went wrong with a key in a keystore, if anything.
pub(crate) fn problem_of(status: &KeyStatusInKeystore) -> &str {
    status.error.as_ref().map_or("", |e| e.message.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_dates_read_plainly() {
        let at = DateTime::parse_from_rfc3339("2026-12-04T19:41:22.123Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(when(&at), "2026-12-04 19:41:22 UTC");
        assert_eq!(maybe(&None), "");
        assert_eq!(maybe(&NaiveDate::from_ymd_opt(2027, 1, 2)), "2027-01-02");
        assert_eq!(state_label("pre_activation"), "Pre-active");
    }
}
