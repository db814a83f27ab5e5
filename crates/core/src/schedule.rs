//! Schedules (`spec/decisions.md` §5): a key's `rotation_interval`, `deactivate_on_expiration`
//! and `destroy_after_deactivation`, what each makes due and when. The scheduler
//! (`service::schedules`) acts on what is due; stores keep each key's next due time in an
//! index so that finding due keys reads only those.

use std::sync::LazyLock;

use chrono::{DateTime, Days, Months, NaiveDate, TimeZone, Utc};
use regex::Regex;

use crate::error::{Error, Result};
use crate::model::{KeyState, ManagedKey};

/// An ISO-8601 duration of a schedule: `P90D`, `P1Y6M`, `P2W`, `PT12H`, `PT1S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    years: u32,
    months: u32,
    days: u64,
    seconds: u64,
}

static INTERVAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^P(?:(\d{1,4})Y)?(?:(\d{1,4})M)?(?:(\d{1,4})W)?(?:(\d{1,5})D)?(?:T(?:(\d{1,5})H)?(?:(\d{1,7})M)?(?:(\d{1,9})S)?)?$",
    )
    .expect("static regex")
});

impl Interval {
    pub fn parse(field: &str, value: &str) -> Result<Self> {
        let invalid = || {
            Error::invalid_field(
                field,
                format!(
                    "{field} '{}' is not an ISO-8601 duration such as P90D, P1Y or PT12H",
                    crate::audit::truncated(value, 40)
                ),
            )
        };
        let caps = INTERVAL
            .captures(value)
            .filter(|_| value.len() > 1 && !value.ends_with('T'))
            .ok_or_else(invalid)?;
        let n = |i: usize| {
            caps.get(i)
                .map_or(0, |m| m.as_str().parse::<u64>().unwrap_or(0))
        };
        let interval = Self {
            years: u32::try_from(n(1)).map_err(|_| invalid())?,
            months: u32::try_from(n(2)).map_err(|_| invalid())?,
            days: n(3) * 7 + n(4),
            seconds: n(5) * 3600 + n(6) * 60 + n(7),
        };
        if interval.shortest() <= chrono::Duration::zero() {
            return Err(Error::invalid_field(
                field,
                format!("{field} must be longer than zero"),
            ));
        }
        Ok(interval)
    }

    /// Parses `value` and checks it is no shorter than `minimum` (a month counted as 28 days, a
    /// year as 365: the shortest they can be).
    pub fn at_least(field: &str, value: &str, minimum: chrono::Duration) -> Result<Self> {
        let interval = Self::parse(field, value)?;
        if interval.shortest() < minimum {
            return Err(Error::invalid_field(
                field,
                format!(
                    "{field} must be at least {}",
                    crate::lifecycle::human(minimum)
                ),
            ));
        }
        Ok(interval)
    }

    /// The shortest this interval can be.
    pub fn shortest(&self) -> chrono::Duration {
        let days = u64::from(self.years) * 365 + u64::from(self.months) * 28 + self.days;
        chrono::Duration::days(i64::try_from(days).unwrap_or(i64::MAX / 86_400_000))
            + chrono::Duration::seconds(i64::try_from(self.seconds).unwrap_or(0))
    }

    /// The moment this interval after `start` (calendar months and years), or `None` past the
    /// calendar's end.
    pub fn after(&self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        start
            .checked_add_months(Months::new(
                self.years.checked_mul(12)?.checked_add(self.months)?,
            ))?
            .checked_add_days(Days::new(self.days))?
            .checked_add_signed(chrono::Duration::seconds(i64::try_from(self.seconds).ok()?))
    }
}

/// What a schedule does to a key when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduledAction {
    Rotate,
    /// Deactivation on the key's expiration date.
    Deactivate,
    /// Destruction once `destroy_after_deactivation` has passed since deactivation.
    Destroy,
}

impl ScheduledAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rotate => "rotate",
            Self::Deactivate => "deactivate",
            Self::Destroy => "destroy",
        }
    }
}

/// The start of an expiration date: a key expires as its date begins (UTC).
fn day_start(date: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&date.and_time(chrono::NaiveTime::MIN))
}

/// A key's spread within its rotation interval: up to a twentieth of the interval and at most
/// an hour, the same for the key every time (so one template's keys, created together, are
/// not all rotated in the same second).
fn jitter(key: &ManagedKey, interval: &Interval) -> chrono::Duration {
    let spread = (interval.shortest() / 20)
        .min(chrono::Duration::hours(1))
        .num_milliseconds();
    if spread <= 0 {
        return chrono::Duration::zero();
    }
    let (high, low) = key.id.as_u64_pair();
    let offset = (high ^ low) % spread.cast_unsigned();
    chrono::Duration::milliseconds(i64::try_from(offset).unwrap_or(0))
}

/// When a schedule next acts on the key and what it does then; `None` when no schedule of its
/// state applies. Stored values that no longer parse schedule nothing.
pub fn next(key: &ManagedKey) -> Option<(DateTime<Utc>, ScheduledAction)> {
    match key.state {
        KeyState::Active => {
            let rotation = key.rotation_interval.as_deref().and_then(|text| {
                let interval = Interval::parse("rotation_interval", text).ok()?;
                let since = key.rotated_at.unwrap_or(key.stamps.created_at);
                let at = interval.after(since)? + jitter(key, &interval);
                Some((at, ScheduledAction::Rotate))
            });
            let expiration = key
                .expiration_date
                .filter(|_| key.deactivate_on_expiration)
                .map(|date| (day_start(date), ScheduledAction::Deactivate));
            // Expiring first wins a tie: an expired key is not rotated into a new version.
            match (rotation, expiration) {
                (Some(r), Some(e)) => Some(if e.0 <= r.0 { e } else { r }),
                (r, e) => r.or(e),
            }
        }
        KeyState::Deactivated => {
            let text = key.destroy_after_deactivation.as_deref()?;
            let interval = Interval::parse("destroy_after_deactivation", text).ok()?;
            Some((
                interval.after(key.deactivated_at?)?,
                ScheduledAction::Destroy,
            ))
        }
        _ => None,
    }
}

/// When a schedule next acts on the key, as stores index it.
pub fn next_due(key: &ManagedKey) -> Option<DateTime<Utc>> {
    next(key).map(|(at, _)| at)
}

/// How long before its expiration date an active key is flagged as expiring.
pub const EXPIRATION_WARNING_DAYS: u64 = 30;

/// Whether an active key's expiration date is within the warning window of `today` (or past).
pub fn expires_soon(key: &ManagedKey, today: NaiveDate) -> bool {
    key.state == KeyState::Active
        && key.expiration_date.is_some_and(|date| {
            today
                .checked_add_days(Days::new(EXPIRATION_WARNING_DAYS))
                .is_none_or(|limit| date <= limit)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_parse_with_and_without_time() {
        let start = Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 0).unwrap();
        let at = |v: &str| Interval::parse("f", v).unwrap().after(start).unwrap();
        assert_eq!(
            at("P1M"),
            Utc.with_ymd_and_hms(2026, 2, 28, 12, 0, 0).unwrap()
        );
        assert_eq!(
            at("P1Y2W"),
            Utc.with_ymd_and_hms(2027, 2, 14, 12, 0, 0).unwrap()
        );
        assert_eq!(
            at("PT1S"),
            Utc.with_ymd_and_hms(2026, 1, 31, 12, 0, 1).unwrap()
        );
        assert_eq!(
            at("P1DT1H30M"),
            Utc.with_ymd_and_hms(2026, 2, 1, 13, 30, 0).unwrap()
        );
        for bad in [
            "P", "PT", "P0D", "PT0S", "1D", "P1H", "P1DT", "P-1D", "P999999D",
        ] {
            assert!(Interval::parse("f", bad).is_err(), "{bad}");
        }
        assert!(Interval::at_least("f", "PT23H", chrono::Duration::days(1)).is_err());
        assert!(Interval::at_least("f", "P1M", chrono::Duration::days(28)).is_ok());
    }
}
