//! Exact quantities of the policy language: ε and δ as fixed-point integers, durations, and
//! timestamps.
//!
//! Privacy parameters are never floats inside the engine: ε is counted in units of 10⁻⁹ and δ in
//! units of 10⁻¹⁸, so that budget arithmetic is exact and a ledger replays to the same total.

use std::fmt;

/// ε in units of 10⁻⁹.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epsilon(pub u64);

/// δ in units of 10⁻¹⁸.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Delta(pub u64);

/// Denominator of [`Epsilon`].
pub const EPSILON_SCALE: u64 = 1_000_000_000;
/// Denominator of [`Delta`].
pub const DELTA_SCALE: u64 = 1_000_000_000_000_000_000;

impl Epsilon {
    /// As a float, for display and for calibrating noise (never for accounting).
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / EPSILON_SCALE as f64
    }
}

impl Delta {
    /// As a float, for display and calibration.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / DELTA_SCALE as f64
    }
}

impl fmt::Display for Epsilon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fixed_to_string(u128::from(self.0), 9))
    }
}

impl fmt::Display for Delta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 != 0 && self.0 < DELTA_SCALE / 1000 {
            write!(f, "{:e}", self.as_f64())
        } else {
            f.write_str(&fixed_to_string(u128::from(self.0), 18))
        }
    }
}

fn fixed_to_string(v: u128, places: u32) -> String {
    let scale = 10u128.pow(places);
    let int = v / scale;
    let frac = v % scale;
    if frac == 0 {
        return int.to_string();
    }
    let s = format!("{frac:0width$}", width = places as usize);
    format!("{int}.{}", s.trim_end_matches('0'))
}

/// Why a quantity could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Not a decimal number.
    #[error("`{0}` is not a decimal number")]
    NotANumber(String),
    /// Finer than the supported precision.
    #[error("`{0}` has more precision than 1e-{1}")]
    TooPrecise(String, u32),
    /// Larger than the supported range.
    #[error("`{0}` is too large")]
    TooLarge(String),
    /// Negative where only non-negative values make sense.
    #[error("`{0}` is negative")]
    Negative(String),
    /// Not a duration like `15m`.
    #[error("`{0}` is not a duration: write a whole number followed by s, m, h, d or w (e.g. 15m)")]
    NotADuration(String),
    /// Not a timestamp (an impossible date such as 2026-02-31 included).
    #[error("not an RFC 3339 timestamp or integer Unix seconds")]
    NotATimestamp,
    /// A timestamp outside [`MIN_TIMESTAMP`]..=[`MAX_TIMESTAMP`].
    #[error("outside the accepted time range, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59Z")]
    TimestampOutOfRange,
}

/// Parses a non-negative decimal (`0.5`, `2`, `1e-6`, `1.5E-7`) into an integer count of
/// 10^-`places`, exactly. Precision finer than that is an error, not a rounding.
pub fn parse_fixed(text: &str, places: u32) -> Result<u128, UnitError> {
    let t = text.trim();
    let err = || UnitError::NotANumber(text.to_owned());
    if t.starts_with('-') {
        return Err(UnitError::Negative(text.to_owned()));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| err())?),
        None => (t, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((a, b)) => (a, b),
        None => (mantissa, ""),
    };
    if int.is_empty() && frac.is_empty()
        || !int.chars().all(|c| c.is_ascii_digit())
        || !frac.chars().all(|c| c.is_ascii_digit())
    {
        return Err(err());
    }
    let digits: String = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    if digits.len() > 36 {
        return Err(UnitError::TooLarge(text.to_owned()));
    }
    let mut value: u128 = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| err())?
    };
    // value × 10^(exp − frac.len()) expressed in units of 10^-places.
    let shift = i64::from(exp) - frac.len() as i64 + i64::from(places);
    if shift >= 0 {
        for _ in 0..shift {
            value = value
                .checked_mul(10)
                .ok_or_else(|| UnitError::TooLarge(text.to_owned()))?;
        }
    } else {
        for _ in 0..(-shift) {
            if !value.is_multiple_of(10) {
                return Err(UnitError::TooPrecise(text.to_owned(), places));
            }
            value /= 10;
        }
    }
    Ok(value)
}

/// Parses ε.
pub fn parse_epsilon(text: &str) -> Result<Epsilon, UnitError> {
    let v = parse_fixed(text, 9)?;
    u64::try_from(v)
        .map(Epsilon)
        .map_err(|_| UnitError::TooLarge(text.to_owned()))
}

/// Parses δ.
pub fn parse_delta(text: &str) -> Result<Delta, UnitError> {
    let v = parse_fixed(text, 18)?;
    u64::try_from(v)
        .map(Delta)
        .map_err(|_| UnitError::TooLarge(text.to_owned()))
}

/// A duration in whole seconds, written `30s`, `15m`, `1h`, `1d` or `1w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Duration {
    /// Parses `15m` and friends. Zero is refused by the caller, not here.
    pub fn parse(text: &str) -> Result<Self, UnitError> {
        let err = || UnitError::NotADuration(text.to_owned());
        let t = text.trim();
        let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?);
        let n: u64 = num.parse().map_err(|_| err())?;
        let mul = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(err()),
        };
        n.checked_mul(mul).map(Duration).ok_or_else(err)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        for (unit, len) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
            if s != 0 && s.is_multiple_of(len) {
                return write!(f, "{}{unit}", s / len);
            }
        }
        write!(f, "{s}s")
    }
}

/// Seconds since the Unix epoch.
pub type UnixSeconds = i64;

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Earliest timestamp a record may carry: 1970-01-01T00:00:00Z.
pub const MIN_TIMESTAMP: UnixSeconds = 0;
/// Latest timestamp a record may carry: 9999-12-31T23:59:59Z, the last second RFC 3339 writes
/// with its four-digit year.
pub const MAX_TIMESTAMP: UnixSeconds = 253_402_300_799;

/// `t` if it is in the accepted range ([`MIN_TIMESTAMP`]..=[`MAX_TIMESTAMP`]).
pub fn check_timestamp(t: UnixSeconds) -> Result<UnixSeconds, UnitError> {
    if (MIN_TIMESTAMP..=MAX_TIMESTAMP).contains(&t) {
        Ok(t)
    } else {
        Err(UnitError::TimestampOutOfRange)
    }
}

/// Parses an RFC 3339 timestamp (`2026-11-26T11:00:00Z`; fractions, which are truncated to
/// the second, and offsets allowed; `t`/`z` in lower case and a space instead of `T`, which
/// RFC 3339 §5.6 allows, too) with the `time` crate, so impossible dates (2026-02-31, a
/// 29 February outside a leap year) are refused. The result must be in the accepted range.
pub fn parse_rfc3339(s: &str) -> Result<UnixSeconds, UnitError> {
    use time::format_description::well_known::Rfc3339;
    // Longest valid form: 4+1+2+1+2 date, T, 8 time, 9 fraction digits and a dot, 6 offset.
    if s.len() > 40 {
        return Err(UnitError::NotATimestamp);
    }
    let spaced;
    let text = match s.as_bytes().get(10) {
        Some(b' ') => {
            spaced = format!("{}T{}", &s[..10], &s[11..]);
            spaced.as_str()
        }
        _ => s,
    };
    let t = time::OffsetDateTime::parse(text, &Rfc3339).map_err(|_| UnitError::NotATimestamp)?;
    check_timestamp(t.unix_timestamp())
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(t: UnixSeconds) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_and_delta_parse_exactly() {
        assert_eq!(parse_epsilon("0.5").unwrap(), Epsilon(500_000_000));
        assert_eq!(parse_epsilon("2").unwrap(), Epsilon(2_000_000_000));
        assert_eq!(parse_epsilon("1.68").unwrap(), Epsilon(1_680_000_000));
        assert_eq!(parse_delta("1e-5").unwrap(), Delta(10_000_000_000_000));
        assert_eq!(parse_delta("1.5E-9").unwrap(), Delta(1_500_000_000));
        assert!(matches!(
            parse_epsilon("1e-10"),
            Err(UnitError::TooPrecise(..))
        ));
        assert!(matches!(parse_epsilon("-1"), Err(UnitError::Negative(..))));
        assert!(matches!(
            parse_epsilon("abc"),
            Err(UnitError::NotANumber(..))
        ));
        assert!(matches!(parse_epsilon("."), Err(UnitError::NotANumber(..))));
        assert_eq!(Epsilon(1_680_000_000).to_string(), "1.68");
        assert_eq!(Delta(10_000_000_000_000).to_string(), "1e-5");
    }

    #[test]
    fn durations() {
        assert_eq!(Duration::parse("15m").unwrap(), Duration(900));
        assert_eq!(Duration::parse("1d").unwrap(), Duration(86_400));
        assert!(Duration::parse("15").is_err());
        assert!(Duration::parse("m").is_err());
        assert!(Duration::parse("1y").is_err());
        assert_eq!(Duration(3600).to_string(), "1h");
        assert_eq!(Duration(90).to_string(), "90s");
    }

    #[test]
    fn timestamps_round_trip() {
        let t = parse_rfc3339("2026-11-26T11:20:47Z").unwrap();
        assert_eq!(t, 1_795_692_047);
        assert_eq!(format_rfc3339(t), "2026-11-26T11:20:47Z");
        assert_eq!(parse_rfc3339("2026-11-26T12:20:47.123+01:00").unwrap(), t);
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
        assert!(parse_rfc3339("2026-13-26T11:20:47Z").is_err());
        assert!(parse_rfc3339("2026-11-26").is_err());
        assert!(parse_rfc3339("2026-11-26T11:20:47").is_err());
        // Forms the earlier parser accepted stay accepted.
        assert_eq!(parse_rfc3339("2026-11-26 11:20:47Z").unwrap(), t);
        assert_eq!(parse_rfc3339("2026-11-26t11:20:47z").unwrap(), t);
        assert_eq!(parse_rfc3339("2026-11-26T11:20:47.999999999Z").unwrap(), t);
        assert_eq!(parse_rfc3339("2026-11-26T08:50:47-02:30").unwrap(), t);
    }

    #[test]
    fn impossible_dates_are_not_timestamps() {
        for s in [
            "2026-02-31T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-11-26T24:00:00Z",
            "2026-11-26T11:60:00Z",
            "2026-11-26T11:20:47+24:00",
            "2026-11-26T11:20:47.Z",
            "+2026-11-26T11:20:47Z",
            "2026-11-26T11:20:47Z ",
        ] {
            assert_eq!(parse_rfc3339(s), Err(UnitError::NotATimestamp), "{s}");
        }
        assert_eq!(
            parse_rfc3339("2028-02-29T00:00:00Z").unwrap(),
            1_835_395_200
        );
    }

    #[test]
    fn timestamps_outside_the_range_are_refused_not_wrapped() {
        assert_eq!(
            parse_rfc3339("1969-12-31T23:59:59Z"),
            Err(UnitError::TimestampOutOfRange)
        );
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Err(UnitError::TimestampOutOfRange)
        );
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59Z").unwrap(),
            MAX_TIMESTAMP
        );
        // An offset that moves the instant past the last second.
        assert_eq!(
            parse_rfc3339("9999-12-31T23:59:59-01:00"),
            Err(UnitError::TimestampOutOfRange)
        );
        assert_eq!(format_rfc3339(MAX_TIMESTAMP), "9999-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(MIN_TIMESTAMP), "1970-01-01T00:00:00Z");
        assert_eq!(
            check_timestamp(MAX_TIMESTAMP + 1),
            Err(UnitError::TimestampOutOfRange)
        );
        assert_eq!(check_timestamp(-1), Err(UnitError::TimestampOutOfRange));
    }

    proptest::proptest! {
        /// Every second of the accepted range formats and parses back to itself.
        #[test]
        fn format_and_parse_round_trip(t in MIN_TIMESTAMP..=MAX_TIMESTAMP) {
            proptest::prop_assert_eq!(parse_rfc3339(&format_rfc3339(t)), Ok(t));
        }
    }
}
