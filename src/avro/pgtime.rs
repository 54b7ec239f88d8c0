//! PostgreSQL's ISO text forms of dates and timestamps (DateStyle ISO, TimeZone UTC), read by
//! hand rather than with chrono's parser, because PostgreSQL prints what chrono's format
//! strings do not take: years before 1 AD with a ` BC` suffix, years of five or six digits,
//! and `infinity`. The counts are proleptic Gregorian with year 0 = 1 BC, as PostgreSQL's own.
//!
//! A value comes back only when an Avro date (days since 1970 as an int) or timestamp
//! (microseconds since 1970 as a long) holds it and a consumer's calendar library can turn it
//! back into a date: the range of Rust's chrono (years -262143 to 262142), which also keeps
//! the microseconds of PostgreSQL's latest timestamps (294276 AD) from overflowing a long.
//! Anything else is `None`, and the caller carries the text instead.

use chrono::{DateTime, NaiveDate};

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Days since 1970-01-01 of `YYYY-MM-DD[ BC]`.
pub fn date_days(s: &str) -> Option<i32> {
    let (s, bc) = strip_era(s);
    let (year, month, day) = ymd(s)?;
    let year = astronomical(year, bc)?;
    valid(year, month, day)?;
    let days = days_from_civil(year, month, day)?;
    let representable = i32::try_from(year)
        .ok()
        .and_then(|y| NaiveDate::from_ymd_opt(y, month, day))
        .is_some();
    representable.then(|| i32::try_from(days).ok()).flatten()
}

/// Microseconds since 1970-01-01 00:00 UTC of `YYYY-MM-DD HH:MM:SS[.f][±HH[:MM[:SS]]][ BC]`.
/// `zoned`: a timestamptz, whose offset must be present; a timestamp has none.
pub fn timestamp_micros(s: &str, zoned: bool) -> Option<i64> {
    let (s, bc) = strip_era(s);
    let (date, rest) = s.split_once(' ')?;
    let (year, month, day) = ymd(date)?;
    let year = astronomical(year, bc)?;
    valid(year, month, day)?;
    let (clock, offset_secs) = if zoned {
        let at = rest.rfind(['+', '-'])?;
        (&rest[..at], offset(&rest[at..])?)
    } else {
        (rest, 0)
    };
    let time = time_of_day(clock)?;
    let micros = days_from_civil(year, month, day)?
        .checked_mul(MICROS_PER_DAY)?
        .checked_add(time)?
        .checked_sub(offset_secs.checked_mul(1_000_000)?)?;
    DateTime::from_timestamp_micros(micros).map(|_| micros)
}

fn strip_era(s: &str) -> (&str, bool) {
    match s.strip_suffix(" BC") {
        Some(rest) => (rest, true),
        None => (s, false),
    }
}

/// Year 1 BC is year 0, 2 BC is -1. PostgreSQL never prints year 0 or a signed year.
fn astronomical(year: i64, bc: bool) -> Option<i64> {
    match (year, bc) {
        (0, _) => None,
        (y, true) => Some(1 - y),
        (y, false) => Some(y),
    }
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn ymd(s: &str) -> Option<(i64, u32, u32)> {
    let mut parts = s.splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() < 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    Some((digits(y)?, digits(m)? as u32, digits(d)? as u32))
}

/// A real day of the (astronomical) year's calendar.
fn valid(year: i64, month: u32, day: u32) -> Option<()> {
    let leap = (year.rem_euclid(4) == 0 && year.rem_euclid(100) != 0) || year.rem_euclid(400) == 0;
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    (1..=month_days).contains(&day).then_some(())
}

/// `HH:MM:SS[.ffffff]` in microseconds since midnight.
fn time_of_day(s: &str) -> Option<i64> {
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    let mut parts = whole.split(':');
    let (h, m, sec) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [h, m, sec].iter().any(|p| p.len() != 2) {
        return None;
    }
    let (h, m, sec) = (digits(h)?, digits(m)?, digits(sec)?);
    if h > 23 || m > 59 || sec > 59 || fraction.len() > 6 {
        return None;
    }
    let micros = if fraction.is_empty() {
        0
    } else {
        digits(fraction)? * 10i64.pow(6 - fraction.len() as u32)
    };
    Some(((h * 60 + m) * 60 + sec) * 1_000_000 + micros)
}

/// `+HH`, `-HH:MM` or `+HH:MM:SS` in seconds east of UTC.
fn offset(s: &str) -> Option<i64> {
    let sign = if s.starts_with('-') { -1 } else { 1 };
    let mut secs = 0;
    let mut unit = 3600;
    for part in s[1..].split(':') {
        if part.len() != 2 || unit == 0 {
            return None;
        }
        secs += digits(part)? * unit;
        unit /= 60;
    }
    Some(sign * secs)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let (m, d) = (i64::from(month), i64::from(day));
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146_097)?.checked_add(doe - 719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_count_days_from_1970_across_eras() {
        assert_eq!(date_days("1970-01-01"), Some(0));
        assert_eq!(date_days("1970-01-02"), Some(1));
        assert_eq!(date_days("1969-12-31"), Some(-1));
        assert_eq!(date_days("2000-02-29"), Some(11_016));
        // 1 BC is year 0, a leap year: chrono agrees on the count.
        let chrono_days = |y, m, d| {
            NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .signed_duration_since(NaiveDate::default())
                .num_days() as i32
        };
        assert_eq!(date_days("0001-01-01 BC"), Some(chrono_days(0, 1, 1)));
        assert_eq!(date_days("0001-02-29 BC"), Some(chrono_days(0, 2, 29)));
        assert_eq!(date_days("4713-11-24 BC"), Some(chrono_days(-4712, 11, 24)));
        assert_eq!(date_days("200000-01-01"), Some(chrono_days(200_000, 1, 1)));
        assert_eq!(date_days("10000-01-01"), Some(chrono_days(10_000, 1, 1)));
    }

    #[test]
    fn dates_beyond_a_calendar_library_or_not_dates_are_none() {
        for s in [
            "5874897-12-31",
            "262143-01-01",
            "infinity",
            "-infinity",
            "2001-02-29",
            "2000-13-01",
            "0000-01-01",
            "99-01-01",
            "2000-01-01 AD",
            "",
        ] {
            assert_eq!(date_days(s), None, "{s}");
        }
    }

    #[test]
    fn timestamps_are_microseconds_since_1970() {
        assert_eq!(
            timestamp_micros("2026-11-25 04:40:17.993809+00", true),
            Some(1_795_581_617_993_809)
        );
        assert_eq!(
            timestamp_micros("1970-01-01 00:00:01.5", false),
            Some(1_500_000)
        );
        assert_eq!(timestamp_micros("1970-01-01 01:00:00+01", true), Some(0));
        assert_eq!(
            timestamp_micros("1970-01-01 00:00:00-00:30", true),
            Some(1_800_000_000)
        );
        assert_eq!(
            timestamp_micros("1969-12-31 23:59:59.999999", false),
            Some(-1)
        );
        let chrono_micros = |y, m, d| {
            NaiveDate::from_ymd_opt(y, m, d)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp_micros()
        };
        assert_eq!(
            timestamp_micros("0001-01-01 00:00:00+00 BC", true),
            Some(chrono_micros(0, 1, 1))
        );
        assert_eq!(
            timestamp_micros("4714-11-24 00:00:00 BC", false),
            Some(chrono_micros(-4713, 11, 24))
        );
        assert_eq!(
            timestamp_micros("200000-01-01 00:00:00+00", true),
            Some(chrono_micros(200_000, 1, 1))
        );
    }

    #[test]
    fn timestamps_a_long_or_a_calendar_cannot_hold_are_none() {
        for (s, zoned) in [
            ("294276-12-31 23:59:59.999999+00", true),
            ("294276-12-31 23:59:59.999999", false),
            ("262143-01-01 00:00:00", false),
            ("infinity", true),
            ("-infinity", false),
            ("2026-11-25 04:40:17", true),
            ("2026-11-25 24:00:00", false),
            ("2026-11-25 04:40:17.1234567", false),
            ("2026-11-25T04:40:17", false),
        ] {
            assert_eq!(timestamp_micros(s, zoned), None, "{s}");
        }
    }
}
