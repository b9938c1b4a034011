//! Business hours: when an inbox is open, in its IANA time zone, week by week, less
//! holidays. SLA targets count only open time, so a deadline is a start time plus a
//! number of open seconds.

use std::collections::BTreeSet;

use chrono::{Datelike, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use serde_json::Value;

/// The weekdays as business hours name them, Monday first.
pub const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
/// How far ahead a deadline is looked for: past a year of closed days, an inbox is
/// taken as never open again and the deadline as unreachable.
const HORIZON_DAYS: i64 = 400;

/// When an inbox is open. No weekly hours means always open.
#[derive(Debug, Clone, PartialEq)]
pub struct BusinessHours {
    tz: Tz,
    /// Per weekday (Monday first), open intervals in seconds from midnight, sorted and
    /// apart.
    week: Option<[Vec<(u32, u32)>; 7]>,
    holidays: BTreeSet<NaiveDate>,
}

impl BusinessHours {
    /// Always open, in UTC.
    pub fn always() -> Self {
        BusinessHours {
            tz: Tz::UTC,
            week: None,
            holidays: BTreeSet::new(),
        }
    }

    /// Parses an inbox's `time_zone` (such as `Europe/Paris`), `business_hours`
    /// (`{"mon": [["09:00", "17:00"]], …}`; days left out are closed; none at all is
    /// always open) and `holidays` (`["2026-12-25", …]`). Each error names its field.
    pub fn parse(time_zone: &str, hours: &Value, holidays: &Value) -> Result<Self, (&'static str, String)> {
        let tz: Tz = time_zone
            .parse()
            .map_err(|_| ("time_zone", format!("'{time_zone}' is not an IANA time zone such as Europe/Paris")))?;
        let week = match hours {
            Value::Null => None,
            Value::Object(days) => {
                let mut week: [Vec<(u32, u32)>; 7] = Default::default();
                for (day, intervals) in days {
                    let Some(i) = DAYS.iter().position(|d| d == day) else {
                        return Err(("business_hours", format!("'{day}' is not a day; use {}", DAYS.join(", "))));
                    };
                    week[i] = intervals_of(day, intervals).map_err(|e| ("business_hours", e))?;
                }
                if week.iter().all(Vec::is_empty) {
                    return Err((
                        "business_hours",
                        "open at least one interval, or leave business hours out to be always open".into(),
                    ));
                }
                Some(week)
            }
            _ => return Err(("business_hours", "expected {\"mon\": [[\"09:00\", \"17:00\"]], …}".into())),
        };
        let holidays = match holidays {
            Value::Null => BTreeSet::new(),
            Value::Array(items) if items.len() <= 366 => items
                .iter()
                .map(|d| {
                    d.as_str()
                        .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
                        .ok_or(("holidays", "expected dates such as 2026-12-25".to_string()))
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(("holidays", "expected a list of at most 366 dates".into())),
        };
        Ok(BusinessHours { tz, week, holidays })
    }

    /// The instant (Unix ms) `seconds` of open time after `start_ms`.
    pub fn add(&self, start_ms: i64, seconds: i64) -> Option<i64> {
        let Some(week) = &self.week else {
            return Some(start_ms + seconds * 1000);
        };
        let start = Utc.timestamp_millis_opt(start_ms).single()?.with_timezone(&self.tz);
        let mut left = seconds * 1000;
        let mut day = start.date_naive();
        // Within the first day, time before `start` is already past.
        let mut from_ms = i64::from(start.time().num_seconds_from_midnight()) * 1000 + i64::from(start.timestamp_subsec_millis());
        for _ in 0..HORIZON_DAYS {
            if !self.holidays.contains(&day) {
                let weekday = day.weekday().num_days_from_monday() as usize;
                for &(open, close) in &week[weekday] {
                    let (open_ms, close_ms) = (i64::from(open) * 1000, i64::from(close) * 1000);
                    let begin = open_ms.max(from_ms);
                    if begin >= close_ms {
                        continue;
                    }
                    if begin + left <= close_ms {
                        return self.instant(day, begin + left);
                    }
                    left -= close_ms - begin;
                }
            }
            day = day.succ_opt()?;
            from_ms = 0;
        }
        None
    }

    /// The instant `ms` after local midnight of `day`; a time a clock change skips is
    /// taken as the first instant after it.
    fn instant(&self, day: NaiveDate, ms: i64) -> Option<i64> {
        let midnight = day.and_time(NaiveTime::MIN);
        let local = midnight + Duration::milliseconds(ms);
        let at = match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t,
            LocalResult::Ambiguous(first, _) => first,
            LocalResult::None => self.tz.from_local_datetime(&(local + Duration::hours(1))).earliest()?,
        };
        Some(at.timestamp_millis())
    }
}

/// A day's `[["09:00", "12:00"], ["13:00", "17:00"]]` as sorted, apart intervals in
/// seconds (`"24:00"` closes at midnight).
fn intervals_of(day: &str, v: &Value) -> Result<Vec<(u32, u32)>, String> {
    let items = v
        .as_array()
        .filter(|a| a.len() <= 10)
        .ok_or(format!("{day}: expected at most 10 [open, close] pairs"))?;
    let mut out = Vec::new();
    for item in items {
        let pair = item
            .as_array()
            .filter(|p| p.len() == 2)
            .ok_or(format!("{day}: expected [\"09:00\", \"17:00\"]"))?;
        let time = |t: &Value| -> Result<u32, String> {
            let s = t.as_str().unwrap_or_default();
            if s == "24:00" {
                return Ok(24 * 3600);
            }
            NaiveTime::parse_from_str(s, "%H:%M")
                .map(|t| t.num_seconds_from_midnight())
                .map_err(|_| format!("{day}: '{s}' is not a time such as 09:00"))
        };
        let (open, close) = (time(&pair[0])?, time(&pair[1])?);
        if open >= close {
            return Err(format!("{day}: each interval opens before it closes"));
        }
        out.push((open, close));
    }
    out.sort_unstable();
    if out.windows(2).any(|w| w[0].1 > w[1].0) {
        return Err(format!("{day}: intervals overlap"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp_millis()
    }

    #[test]
    fn open_time_is_counted_only_in_business_hours_of_the_inbox_time_zone() {
        let nine_to_five =
            json!({"mon": [["09:00", "17:00"]], "tue": [["09:00", "17:00"]], "wed": [["09:00", "12:00"], ["13:00", "17:00"]]});
        let h = BusinessHours::parse("Europe/Paris", &nine_to_five, &json!(["2026-12-08"])).unwrap();
        // Monday 16:00 in Paris (15:00 UTC) plus two open hours: Tuesday 10:00 Paris.
        assert_eq!(
            h.add(ms("2026-12-07T15:00:00Z"), 2 * 3600),
            Some(ms("2026-12-09T09:00:00Z")),
            "Tuesday is a holiday"
        );
        // Before opening, the clock starts at opening.
        assert_eq!(h.add(ms("2026-12-07T06:00:00Z"), 3600), Some(ms("2026-12-07T09:00:00Z")));
        // The lunch break does not count.
        assert_eq!(h.add(ms("2026-12-09T10:30:00Z"), 3600), Some(ms("2026-12-09T12:30:00Z")));
        // Friday evening: next Monday (Thursday to Sunday are closed).
        assert_eq!(h.add(ms("2026-12-11T18:00:00Z"), 60), Some(ms("2026-12-14T08:01:00Z")));
    }

    #[test]
    fn no_hours_is_always_open_and_bad_hours_are_refused_with_their_field() {
        let always = BusinessHours::parse("UTC", &Value::Null, &Value::Null).unwrap();
        assert_eq!(always.add(1_000, 60), Some(61_000));
        assert_eq!(
            BusinessHours::parse("Mars/Olympus", &Value::Null, &Value::Null).unwrap_err().0,
            "time_zone"
        );
        assert_eq!(
            BusinessHours::parse("UTC", &json!({"funday": []}), &Value::Null).unwrap_err().0,
            "business_hours"
        );
        assert_eq!(
            BusinessHours::parse("UTC", &json!({"mon": [["17:00", "09:00"]]}), &Value::Null)
                .unwrap_err()
                .0,
            "business_hours"
        );
        assert_eq!(
            BusinessHours::parse("UTC", &json!({"mon": [["09:00", "13:00"], ["12:00", "17:00"]]}), &Value::Null)
                .unwrap_err()
                .0,
            "business_hours"
        );
        assert_eq!(
            BusinessHours::parse("UTC", &json!({}), &Value::Null).unwrap_err().0,
            "business_hours"
        );
        assert_eq!(
            BusinessHours::parse("UTC", &Value::Null, &json!(["25/12"])).unwrap_err().0,
            "holidays"
        );
    }

    #[test]
    fn open_time_across_a_clock_change_is_counted_on_the_wall_clock() {
        let h = BusinessHours::parse(
            "Europe/Paris",
            &json!({"sat": [["00:00", "24:00"]], "sun": [["00:00", "24:00"]]}),
            &Value::Null,
        )
        .unwrap();
        // Summer time ends on Sunday 2026-10-25 at 03:00 local (01:00 UTC): a day of 25 hours.
        let sat_noon = ms("2026-10-24T10:00:00Z");
        assert_eq!(h.add(sat_noon, 24 * 3600), Some(ms("2026-10-25T11:00:00Z")));
    }
}
