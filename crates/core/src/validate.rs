//! Input rules of spec §6: names, labels, descriptions, dates and durations.

use std::sync::LazyLock;

use chrono::{Days, Months, NaiveDate};
use regex::Regex;

use crate::error::{Error, Result};
use crate::model::Tag;

/// The rules of names and labels, as patterns: the checks below and the API's document use them.
pub const VAULT_NAME_PATTERN: &str = r"^[A-Za-z0-9#@!$%'_-][A-Za-z0-9#@!$% '_-]*$";
pub const TEMPLATE_NAME_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9-]*$";
pub const KEYSTORE_NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$";
pub const KEY_LABEL_PATTERN: &str = r"^[A-Za-z0-9._ /-]+$";
/// Free text as [`free_text`] takes it (no control characters but tab and newline), for
/// documents; the check itself reads characters.
pub const FREE_TEXT_PATTERN: &str = r"^[^\u0000-\u0008\u000B-\u001F\u007F-\u009F]*$";
/// Short text as [`short_text`] takes it (no control characters at all), for documents.
pub const NO_CONTROL_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

static VAULT_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(VAULT_NAME_PATTERN).expect("static regex"));
static TEMPLATE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(TEMPLATE_NAME_PATTERN).expect("static regex"));
static KEYSTORE_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(KEYSTORE_NAME_PATTERN).expect("static regex"));
static KEY_LABEL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(KEY_LABEL_PATTERN).expect("static regex"));
static ISO_DURATION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^P(?:(\d{1,4})Y)?(?:(\d{1,4})M)?(?:(\d{1,4})W)?(?:(\d{1,5})D)?$")
        .expect("static regex")
});
static DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$").expect("static regex"));

fn check_len(field: &str, value: &str, min: usize, max: usize) -> Result<()> {
    let len = value.chars().count();
    if len < min || len > max {
        return Err(Error::invalid_field(
            field,
            format!("{field} must be {min} to {max} characters long (got {len})"),
        ));
    }
    Ok(())
}

fn check_pattern(field: &str, value: &str, re: &Regex, rule: &str) -> Result<()> {
    if re.is_match(value) {
        Ok(())
    } else {
        Err(Error::invalid_field(
            field,
            format!("{field} '{value}' is invalid: {rule}"),
        ))
    }
}

pub fn vault_name(value: &str) -> Result<()> {
    check_len("name", value, 1, 100)?;
    check_pattern(
        "name",
        value,
        &VAULT_NAME,
        "use letters, digits, spaces and # @ ! $ % ' _ -, not starting with a space",
    )
}

pub fn template_name(field: &str, value: &str) -> Result<()> {
    check_len(field, value, 1, 30)?;
    check_pattern(
        field,
        value,
        &TEMPLATE_NAME,
        "start with a letter, then letters, digits and -",
    )
}

pub fn keystore_name(value: &str) -> Result<()> {
    check_len("name", value, 1, 100)?;
    check_pattern(
        "name",
        value,
        &KEYSTORE_NAME,
        "start with a letter or digit, then letters, digits, spaces, '.', '_' and '-'",
    )
}

pub fn key_label(value: &str) -> Result<()> {
    check_len("label", value, 1, 255)?;
    check_pattern(
        "label",
        value,
        &KEY_LABEL,
        "use letters, digits, spaces and . _ / -",
    )
}

pub fn description(field: &str, value: &str) -> Result<()> {
    free_text(field, value, 0, 200)
}

/// Text a person writes: `min` to `max` characters, with no control characters but tab and
/// newline (a NUL or an escape sequence would reach terminals, logs and exports as written).
pub fn free_text(field: &str, value: &str, min: usize, max: usize) -> Result<()> {
    check_len(field, value, min, max)?;
    if let Some(c) = value
        .chars()
        .find(|c| c.is_control() && *c != '\t' && *c != '\n')
    {
        return Err(Error::invalid_field(
            field,
            format!(
                "{field} must not contain control characters other than tab and newline (found U+{:04X})",
                u32::from(c)
            ),
        ));
    }
    Ok(())
}

/// A short free-text field (locations, groups, proxies, connection values).
pub fn short_text(field: &str, value: &str, max: usize) -> Result<()> {
    check_len(field, value, 1, max)?;
    if value.chars().any(char::is_control) {
        return Err(Error::invalid_field(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

pub fn groups(values: &[String]) -> Result<()> {
    if values.len() > 128 {
        return Err(Error::invalid_field(
            "groups",
            "a keystore belongs to at most 128 groups",
        ));
    }
    for g in values {
        short_text("groups", g, 100)?;
    }
    Ok(())
}

pub fn tags(field: &str, values: &[Tag]) -> Result<()> {
    if values.len() > 128 {
        return Err(Error::invalid_field(
            field,
            format!("{field} holds at most 128 items"),
        ));
    }
    for t in values {
        short_text(&format!("{field}.name"), &t.name, 128)?;
        free_text(&format!("{field}.value"), &t.value, 0, 256)?;
    }
    Ok(())
}

/// `YYYY-MM-DD`, checked as a real calendar date.
pub fn date(field: &str, value: &str, is_parameter: bool) -> Result<NaiveDate> {
    let err = || {
        let message = format!("{field} '{value}' is not a date of the form YYYY-MM-DD");
        if is_parameter {
            Error::invalid_parameter(field, message)
        } else {
            Error::invalid_field(field, message)
        }
    };
    if !DATE.is_match(value) {
        return Err(err());
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| err())
}

/// An ISO-8601 date duration (`P1Y2M1W4D`, `P0D`), as templates use for planned dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateDuration {
    pub years: u32,
    pub months: u32,
    pub weeks: u32,
    pub days: u32,
}

impl DateDuration {
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let caps = ISO_DURATION
            .captures(value)
            .filter(|_| value.len() > 1)
            .ok_or_else(|| {
                Error::invalid_field(
                    field,
                    format!(
                        "{field} '{value}' is not an ISO-8601 duration such as P0D, P90D or P1Y6M"
                    ),
                )
            })?;
        let n = |i: usize| {
            caps.get(i)
                .map_or(0, |m| m.as_str().parse::<u32>().unwrap_or(0))
        };
        Ok(Self {
            years: n(1),
            months: n(2),
            weeks: n(3),
            days: n(4),
        })
    }

    /// The date this duration after `start`, or `None` past the calendar's end.
    pub fn after(&self, start: NaiveDate) -> Option<NaiveDate> {
        start
            .checked_add_months(Months::new(self.years * 12 + self.months))?
            .checked_add_days(Days::new(u64::from(self.weeks) * 7 + u64::from(self.days)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_patterns() {
        assert!(vault_name("Payments vault#1").is_ok());
        assert!(vault_name(" leading-space").is_err());
        assert!(vault_name("").is_err());
        assert!(vault_name(&"a".repeat(101)).is_err());
        assert!(template_name("name", "AWS-PROD-AES").is_ok());
        assert!(template_name("name", "1abc").is_err());
        assert!(template_name("name", &"a".repeat(31)).is_err());
        assert!(keystore_name("aws frankfurt.1_x-y").is_ok());
        assert!(keystore_name("-bad").is_err());
        assert!(key_label("billing/prod 2027_x.y-z").is_ok());
        assert!(key_label("bad*label").is_err());
    }

    #[test]
    fn invalid_field_errors_name_the_field() {
        let Err(Error::Invalid {
            target: Some(t), ..
        }) = template_name("template_name", "9")
        else {
            panic!("expected a field error");
        };
        assert_eq!(t.name, "template_name");
    }

    #[test]
    fn durations_parse_and_add() {
        let d = DateDuration::parse("key.expiration_date", "P1Y2M1W4D").unwrap();
        assert_eq!((d.years, d.months, d.weeks, d.days), (1, 2, 1, 4));
        let start = NaiveDate::from_ymd_opt(2025, 1, 31).unwrap();
        assert_eq!(
            DateDuration::parse("x", "P1M").unwrap().after(start),
            NaiveDate::from_ymd_opt(2025, 2, 28)
        );
        assert_eq!(
            DateDuration::parse("x", "P0D").unwrap().after(start),
            Some(start)
        );
        assert!(DateDuration::parse("x", "P").is_err());
        assert!(DateDuration::parse("x", "1Y").is_err());
        assert!(DateDuration::parse("x", "PT5H").is_err());
    }

    #[test]
    fn dates_must_be_real() {
        assert!(date("activation_date", "2025-02-28", false).is_ok());
        assert!(date("activation_date", "2025-02-30", false).is_err());
        assert!(date("created_at_min", "25-1-1", true).is_err());
    }
}
