//! Timestamps: RFC 3339 `date-time`, as used by CPIM `DateTime`, PIDF `<timestamp>` and
//! IMDN `<datetime>`.
//!
//! [`Timestamp::parse`] is strict RFC 3339. [`Timestamp::parse_lenient`] also takes what
//! real stacks send: a space instead of `T`, no seconds, no offset (read as UTC), and
//! more than one digit group after a `,`. Output ([`fmt::Display`]) is always RFC 3339 with
//! upper-case `T`/`Z`. No clock is read here: `now` is the caller's business.

use std::fmt;

use serde::{Serialize, Serializer};

/// Why a timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimestampError {
    /// The text is not of the `YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)` form.
    #[error("`{0}` is not an RFC 3339 date-time")]
    Syntax(String),
    /// A field is out of range (month 13, day 31 of April, hour 24, ...).
    #[error("`{0}` has a field out of range")]
    Range(String),
}

/// A point in time with the offset it was written with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timestamp {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// Fraction digits as written (without the dot), at most 9 kept.
    frac: String,
    /// Minutes east of UTC; `None` is `Z`.
    offset: Option<i16>,
}

impl Timestamp {
    /// Strict RFC 3339 §5.6 `date-time`.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        Self::parse_inner(s, false)
    }

    /// RFC 3339 plus common deviations (see the module docs).
    pub fn parse_lenient(s: &str) -> Result<Self, TimestampError> {
        Self::parse_inner(s.trim(), true)
    }

    fn parse_inner(s: &str, lenient: bool) -> Result<Self, TimestampError> {
        let syntax = || TimestampError::Syntax(s.to_owned());
        let b = s.as_bytes();
        let num = |from: usize, len: usize| -> Result<u32, TimestampError> {
            let part = b.get(from..from + len).ok_or_else(syntax)?;
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(syntax());
            }
            Ok(part
                .iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
        };
        let expect = |at: usize, c: u8| -> Result<(), TimestampError> {
            (b.get(at) == Some(&c)).then_some(()).ok_or_else(syntax)
        };
        let year = num(0, 4)?;
        expect(4, b'-')?;
        let month = num(5, 2)?;
        expect(7, b'-')?;
        let day = num(8, 2)?;
        match b.get(10) {
            Some(b'T' | b't') => {}
            Some(b' ') if lenient => {}
            _ => return Err(syntax()),
        }
        let hour = num(11, 2)?;
        expect(13, b':')?;
        let minute = num(14, 2)?;
        let mut i = 16;
        let second = if b.get(i) == Some(&b':') {
            i += 3;
            num(17, 2)?
        } else if lenient {
            0
        } else {
            return Err(syntax());
        };
        let mut frac = String::new();
        if matches!(b.get(i), Some(b'.')) || (lenient && matches!(b.get(i), Some(b','))) {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err(syntax());
            }
            frac = s[start..i.min(start + 9)].to_owned();
        }
        let offset = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => None,
            Some(&sign @ (b'+' | b'-')) => {
                let oh = num(i + 1, 2)?;
                let om = if b.get(i + 3) == Some(&b':') {
                    let m = num(i + 4, 2)?;
                    if i + 6 != b.len() {
                        return Err(syntax());
                    }
                    m
                } else if lenient && i + 5 == b.len() {
                    num(i + 3, 2)?
                } else {
                    return Err(syntax());
                };
                if oh > 23 || om > 59 {
                    return Err(TimestampError::Range(s.to_owned()));
                }
                let mins = (oh * 60 + om) as i16;
                Some(if sign == b'-' { -mins } else { mins })
            }
            None if lenient => None,
            _ => return Err(syntax()),
        };
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let month_days = match month {
            1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
            4 | 6 | 9 | 11 => 30,
            2 if leap => 29,
            2 => 28,
            _ => 0,
        };
        if day == 0 || day > month_days || hour > 23 || minute > 59 || second > 60 {
            return Err(TimestampError::Range(s.to_owned()));
        }
        // The checks above bound every field, so the narrowing casts cannot truncate.
        Ok(Timestamp {
            year: year as u16,
            month: month as u8,
            day: day as u8,
            hour: hour as u8,
            minute: minute as u8,
            second: second as u8,
            frac,
            offset,
        })
    }

    /// Seconds since 1970-01-01T00:00:00Z (leap seconds counted as :59).
    pub fn unix_seconds(&self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = i64::from(self.second.min(59));
        days * 86_400 + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + secs
            - i64::from(self.offset.unwrap_or(0)) * 60
    }

    /// The UTC timestamp for `secs` seconds since the Unix epoch (for callers that have
    /// read a clock).
    pub fn from_unix_seconds(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Timestamp {
            year: year.clamp(0, 9999) as u16,
            month: month as u8,
            day: day as u8,
            hour: (rem / 3600) as u8,
            minute: (rem % 3600 / 60) as u8,
            second: (rem % 60) as u8,
            frac: String::new(),
            offset: None,
        }
    }
}

/// XML Schema `dateTime` as PIDF, RPID and RFC 3994 use it: RFC 3339 with upper-case
/// `T`/`Z`; the offset may be left out unless `offset_required` (PIDF `<timestamp>`).
pub(crate) fn is_xsd_date_time(text: &str, offset_required: bool) -> bool {
    if text.contains(['t', 'z']) {
        return false;
    }
    Timestamp::parse(text).is_ok()
        || (!offset_required && Timestamp::parse(&format!("{text}Z")).is_ok())
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )?;
        if !self.frac.is_empty() {
            write!(f, ".{}", self.frac)?;
        }
        match self.offset {
            None => f.write_str("Z"),
            Some(o) => {
                let sign = if o < 0 { '-' } else { '+' };
                let o = o.unsigned_abs();
                write!(f, "{sign}{:02}:{:02}", o / 60, o % 60)
            }
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc3339_5_8_examples() {
        for s in [
            "1985-04-12T23:20:50.52Z",
            "1996-12-19T16:39:57-08:00",
            "1990-12-31T23:59:60Z",
            "1990-12-31T15:59:60-08:00",
            "1937-01-01T12:00:27.87+00:20",
        ] {
            assert_eq!(Timestamp::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            Timestamp::parse("1996-12-19T16:39:57-08:00")
                .unwrap()
                .unix_seconds(),
            851_042_397
        );
    }

    #[test]
    fn lenient_forms() {
        let cases = [
            ("2006-04-04 12:16:49-05:00", "2006-04-04T12:16:49-05:00"),
            ("2006-04-04T12:16Z", "2006-04-04T12:16:00Z"),
            ("2006-04-04T12:16:49", "2006-04-04T12:16:49Z"),
            ("2006-04-04T12:16:49,5+0100", "2006-04-04T12:16:49.5+01:00"),
        ];
        for (input, out) in cases {
            assert!(
                Timestamp::parse(input).is_err(),
                "{input} is not strict RFC 3339"
            );
            assert_eq!(Timestamp::parse_lenient(input).unwrap().to_string(), out);
        }
    }

    #[test]
    fn rfc3339_5_6_lower_case_t_and_z() {
        assert_eq!(
            Timestamp::parse("2006-04-04t12:16:49z")
                .unwrap()
                .to_string(),
            "2006-04-04T12:16:49Z"
        );
    }

    #[test]
    fn invalid_timestamps() {
        for s in [
            "",
            "2006-13-01T00:00:00Z",
            "2006-02-29T00:00:00Z",
            "2006-04-31T00:00:00Z",
            "2006-04-04T24:00:00Z",
            "2006-04-04T12:16:49+24:00",
            "2006-04-04T12:16:49.Z",
            "2006-04-04T12:16:49Zjunk",
            "２００６-04-04T12:16:49Z",
        ] {
            assert!(Timestamp::parse_lenient(s).is_err(), "{s}");
        }
    }

    #[test]
    fn date_time_syntax() {
        for ok in [
            "2001-10-27T16:49:29Z",
            "2004-10-21T13:20:00.000-05:00",
            "2000-02-29T23:59:60+14:00",
        ] {
            assert!(is_xsd_date_time(ok, true), "{ok}");
        }
        assert!(is_xsd_date_time("2005-05-30T12:00:00", false));
        for bad in [
            "2005-05-30T12:00:00",
            "2001-10-27t16:49:29z",
            "2001-02-29T00:00:00Z",
            "2001-13-01T00:00:00Z",
            "2001-10-27T24:00:00Z",
            "2001-10-27T16:49:29.Z",
            "2001-10-27T16:49:29+5:00",
            "2001-10-27 16:49:29Z",
            "20011027T164929Z",
            "2001-10-27T16:49:2éZ",
            "",
        ] {
            assert!(!is_xsd_date_time(bad, true), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn prop_unix_round_trip(secs in -62_135_596_800i64..253_402_300_799) {
            let t = Timestamp::from_unix_seconds(secs);
            prop_assert_eq!(t.unix_seconds(), secs);
            prop_assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }

        #[test]
        fn prop_never_panics(s in "\\PC{0,40}") {
            let _ = Timestamp::parse_lenient(&s);
        }
    }
}
