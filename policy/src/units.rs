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
    /// Not a timestamp.
    #[error("not an RFC 3339 timestamp or integer Unix seconds")]
    NotATimestamp,
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

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

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

/// Parses an RFC 3339 timestamp (`2026-11-26T11:00:00Z`, fractions and offsets allowed;
/// fractions are truncated to the second).
pub fn parse_rfc3339(s: &str) -> Result<UnixSeconds, UnitError> {
    let b = s.as_bytes();
    if b.len() < 20 || b.len() > 40 {
        return Err(UnitError::NotATimestamp);
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, UnitError> {
        let part = s.get(r).ok_or(UnitError::NotATimestamp)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return Err(UnitError::NotATimestamp);
        }
        part.parse().map_err(|_| UnitError::NotATimestamp)
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(UnitError::NotATimestamp);
    }
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(UnitError::NotATimestamp);
    }
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return Err(UnitError::NotATimestamp);
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            if oh > 23 || om > 59 {
                return Err(UnitError::NotATimestamp);
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return Err(UnitError::NotATimestamp),
    };
    Ok(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset)
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
    }
}
