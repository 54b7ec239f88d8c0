//! When the stats worker next looks at the 90-day window: at the next UTC midnight of the
//! database's clock (`reviewflow_now()`, migration V8), the clock `verify` and `replay` read,
//! so the figures roll at the boundary the oracle sees rather than on a tick of the worker's
//! own clock.
//!
//! The database's midnight is placed on the worker's monotonic clock by one reading of
//! `reviewflow_now()`, taken to be the middle of its round trip: that corrects for whatever
//! offset lies between the two machines' clocks. A reading is only as good as the clocks stay
//! put, so the worker also looks again at least every [`RECHECK`] (a clock that jumped, an
//! offset a test set), and re-aims after each look.

use std::time::Duration;

use chrono::{DateTime, Days, NaiveTime, Utc};
use tokio::time::Instant;
use tokio_postgres::Client;

use crate::error::Result;

/// Longest the worker goes without reading the database's clock again.
pub const RECHECK: Duration = Duration::from_secs(60);

/// How far past midnight the timer is aimed: the reading's error (half a round trip) could
/// otherwise wake it a hair before the database's day changed, and it would look again at
/// once until it had.
const PAST_MIDNIGHT: Duration = Duration::from_millis(20);

/// When the worker should next look at the window: the database's next UTC midnight on the
/// local monotonic clock (plus [`PAST_MIDNIGHT`]), or [`RECHECK`] from now if that is sooner.
pub async fn next_look(client: &Client) -> Result<Instant> {
    let sent = Instant::now();
    let db_now: DateTime<Utc> = client
        .query_one("SELECT reviewflow_now()", &[])
        .await?
        .get(0);
    let received = Instant::now();
    // now() is the statement's start: on the server, somewhere in the round trip.
    let read_at = sent + (received - sent) / 2;
    let midnight = read_at + until_midnight(db_now) + PAST_MIDNIGHT;
    Ok(midnight.min(received + RECHECK))
}

/// From `now` to the UTC midnight that ends its day.
fn until_midnight(now: DateTime<Utc>) -> Duration {
    let midnight = (now.date_naive() + Days::new(1))
        .and_time(NaiveTime::MIN)
        .and_utc();
    (midnight - now).to_std().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn midnight_is_the_end_of_the_utc_day() {
        let at = |h, m, s, ms| {
            Utc.with_ymd_and_hms(2024, 2, 28, h, m, s).unwrap()
                + chrono::TimeDelta::milliseconds(ms)
        };
        assert_eq!(
            until_midnight(at(23, 59, 58, 500)),
            Duration::from_millis(1500)
        );
        assert_eq!(
            until_midnight(at(0, 0, 0, 0)),
            Duration::from_secs(86_400),
            "a look exactly at midnight aims at the next one"
        );
        assert_eq!(until_midnight(at(12, 0, 0, 0)), Duration::from_secs(43_200));
        // The last day of February in a leap year: midnight is the 29th's start.
        let leap = Utc.with_ymd_and_hms(2024, 2, 28, 23, 0, 0).unwrap();
        assert_eq!(
            leap + chrono::TimeDelta::from_std(until_midnight(leap)).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 0, 0, 0).unwrap()
        );
    }
}
