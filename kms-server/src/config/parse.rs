//! The value parsers: text from a flag, a variable or the file to a typed value. Each
//! answers a problem without naming the setting; [`super::sources`] adds the name and the
//! source.

use super::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::LogFormat;

/// `text` (also `pretty`, `plain`) or `json`.
pub(super) fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.to_ascii_lowercase().as_str() {
        "text" | "pretty" | "plain" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("expected `text` or `json`, got {s:?}")),
    }
}

pub(super) fn parse_webhook_url(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.contains(char::is_whitespace) => {
            Ok(s.to_owned())
        }
        _ => Err(format!(
            "expected an http:// or https:// URL, got {}",
            crate::http::error::printable(s, 100)
        )),
    }
}

/// A comma-separated list of CIDRs (`10.0.0.0/8, 2001:db8::/32`); a bare address is a
/// network of one.
pub(super) fn parse_networks(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<ipnet::IpNet>()
                .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map(|n| n.trunc())
                .map_err(|_| {
                    format!(
                        "expected CIDR networks such as 10.0.0.0/8 or 2001:db8::/32, got {}",
                        crate::http::error::printable(p, 100)
                    )
                })
        })
        .collect()
}

/// A value for a JWT claim: printable, at most 256 characters.
pub(super) fn parse_claim(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 256 || s.chars().any(char::is_control) {
        Err("must be 1 to 256 printable characters".to_owned())
    } else {
        Ok(s.to_owned())
    }
}

pub(super) fn parse_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("must not be empty".to_owned())
    } else {
        Ok(PathBuf::from(s))
    }
}

pub(super) fn parse_socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .map_err(|_| format!("expected IP:PORT such as 127.0.0.1:8080 or [::1]:8080, got {s:?}"))
}

pub(super) fn parse_log_level(s: &str) -> Result<String, String> {
    // tracing-subscriber 0.3's directive parser slices at byte offsets and panics on some
    // multi-byte characters (found by the config_parse fuzz target); filters name Rust
    // targets and levels, which are ASCII, so anything else is refused first.
    if let Some(c) = s.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!(
            "expected ASCII text such as `info` or `kms_server=debug,info`, found {:?}",
            c
        ));
    }
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("{e} (got {s:?}; try `info` or `kms_server=debug,info`)"))
}

pub(super) fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(format!("expected true or false, got {s:?}")),
    }
}

pub(super) fn parse_u64(s: &str) -> Result<u64, String> {
    s.replace('_', "")
        .parse::<u64>()
        .map_err(|_| format!("expected a whole number, got {s:?}"))
}

pub(super) fn parse_count(s: &str) -> Result<usize, String> {
    parse_u32(s).map(|n| usize::try_from(n).unwrap_or(usize::MAX))
}

pub(super) fn parse_u32(s: &str) -> Result<u32, String> {
    s.replace('_', "")
        .parse::<u32>()
        .map_err(|_| format!("expected a whole number up to {}, got {s:?}", u32::MAX))
}

/// `30`, `30s`, `500ms`, `5m`, `1h`, `30d`; a bare number is seconds. Zero is refused.
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(s)?;
    if d.is_zero() {
        return Err(format!("must be longer than zero, got {s:?}"));
    }
    Ok(d)
}

/// Like [`parse_duration`], but a whole number of seconds (at least one).
pub(super) fn parse_whole_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_whole_seconds_or_zero(s)?;
    if d.is_zero() {
        return Err(format!("must be at least one second, got {s:?}"));
    }
    Ok(d)
}

/// A duration in whole seconds; `0` allowed.
pub(super) fn parse_whole_seconds_or_zero(s: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(s)?;
    if d.subsec_nanos() != 0 {
        return Err(format!("must be whole seconds, got {s:?}"));
    }
    Ok(d)
}

/// Like [`parse_duration`], but `0` is allowed.
pub(super) fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let bad = || format!("expected a duration such as 30s, 500ms, 5m, 1h or 30d, got {s:?}");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| bad())?;
    Ok(match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(86_400)),
        _ => return Err(bad()),
    })
}

/// `1048576`, `512KiB`, `1MiB`, `1MB`, `64kb`; a bare number is bytes.
pub(super) fn parse_size(s: &str) -> Result<usize, String> {
    let bad = || format!("expected a size such as 1048576, 512KiB or 1MiB, got {s:?}");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: usize = number.parse().map_err(|_| bad())?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(factor).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(format!("must be larger than zero, got {s:?}"));
    }
    Ok(bytes)
}

/// A Redis URL (`redis://[user:password@]host:port[/db]`); the value is never echoed, as
/// it may hold a password.
pub(super) fn parse_redis_url(s: &str) -> Result<Secret, String> {
    let ok = s
        .strip_prefix("redis://")
        .is_some_and(|rest| !rest.is_empty() && !s.contains(char::is_whitespace));
    if ok {
        Ok(Secret::new(s))
    } else {
        Err("expected a redis://host:port/db URL".to_owned())
    }
}

/// A PostgreSQL URL (`postgres://` or `postgresql://`); never echoed.
pub(super) fn parse_postgres_url(s: &str) -> Result<Secret, String> {
    if kms_store::postgres::is_postgres_url(s) && !s.contains(char::is_whitespace) {
        Ok(Secret::new(s))
    } else {
        Err("expected a postgres://user:password@host:port/dbname URL".to_owned())
    }
}

/// A count of at least 1.
pub(super) fn parse_positive_u32(s: &str) -> Result<u32, String> {
    match parse_u32(s)? {
        0 => Err("expected at least 1".to_owned()),
        n => Ok(n),
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]
mod tests {
    use super::*;

    #[test]
    fn log_levels_with_non_ascii_text_are_refused_without_a_panic() {
        for bad in [
            "info,_server\u{fffd}\u{fffd}=d\u{145}ug",
            "d\u{e9}bug",
            "info\n",
        ] {
            let err = parse_log_level(bad).unwrap_err();
            assert!(err.contains("ASCII"), "{err}");
        }
        assert_eq!(
            parse_log_level("kms_server=debug,info").unwrap(),
            "kms_server=debug,info"
        );
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("1MiB"), Ok(1024 * 1024));
        assert_eq!(parse_size("512kib"), Ok(512 * 1024));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1GB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(2 * 86_400)));
        assert!(parse_duration("0").is_err());
        assert_eq!(parse_duration_or_zero("0"), Ok(Duration::ZERO));
    }
}
