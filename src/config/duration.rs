//! Durations in config files: an integer and a unit, e.g. `250ms`, `30s`, `15m`, `12h`, `30d`.

use std::time::Duration;

const EXPECTED: &str = "expected a duration like 250ms, 30s, 15m, 12h or 30d";

/// Parses `250ms`, `30s`, `15m`, `12h` or `30d`. Zero is rejected: no duration in the config has a
/// useful meaning at zero, and a zero timeout or TTL is far more often a typo than a wish.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() || unit.is_empty() {
        return Err(format!("`{s}`: {EXPECTED}"));
    }
    let n: u64 = digits.parse().map_err(|_| format!("`{s}` is too large"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("`{s}`: {EXPECTED}")),
    };
    if n == 0 {
        return Err(format!("`{s}`: must be greater than 0"));
    }
    let millis = n
        .checked_mul(millis_per_unit)
        .ok_or_else(|| format!("`{s}` is too large"))?;
    Ok(Duration::from_millis(millis))
}

/// A duration, or zero (`0s`, `0m`, ...) for off (e.g. `oauth.login_session`). Zero keeps its unit, so
/// a typo like `0x` is reported like any other.
pub fn parse_duration_or_off(raw: &str) -> Result<Duration, String> {
    let digits = raw.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    if !digits.is_empty() && digits.bytes().all(|b| b == b'0') && digits.len() < raw.len() {
        return parse_duration(&format!("1{}", &raw[digits.len()..])).map(|_| Duration::ZERO);
    }
    parse_duration(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_off_and_keeps_its_unit() {
        assert_eq!(parse_duration_or_off("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration_or_off("00h"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration_or_off("8h"),
            Ok(Duration::from_secs(8 * 3600))
        );
        assert!(parse_duration_or_off("0x").is_err());
        assert!(parse_duration_or_off("0").is_err());
        assert!(parse_duration_or_off("").is_err());
    }

    #[test]
    fn units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "30", "s", "30 s", " 30s", "30s ", "1.5s", "-1s", "30sec", "30S", "1h30m", "+5s",
        ] {
            assert_eq!(
                parse_duration(bad),
                Err(format!("`{bad}`: {EXPECTED}")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_zero() {
        assert_eq!(
            parse_duration("0s"),
            Err("`0s`: must be greater than 0".to_owned())
        );
        assert_eq!(
            parse_duration("000ms"),
            Err("`000ms`: must be greater than 0".to_owned())
        );
    }

    #[test]
    fn rejects_overflow() {
        assert_eq!(
            parse_duration("99999999999999999999s"),
            Err("`99999999999999999999s` is too large".to_owned())
        );
        assert_eq!(
            parse_duration("18446744073709551615d"),
            Err("`18446744073709551615d` is too large".to_owned())
        );
    }
}
