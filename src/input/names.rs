//! Small parsers shared by the config, the registry and srvctl: DNS names,
//! labels, mailboxes and durations.

use std::time::Duration;

use hickory_proto::rr::Name;

/// Why a name, label, mailbox or duration was refused (the caller names
/// the key or flag it came from).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl From<&str> for ParseError {
    fn from(s: &str) -> ParseError {
        ParseError(s.to_string())
    }
}

impl From<String> for ParseError {
    fn from(s: String) -> ParseError {
        ParseError(s)
    }
}

/// Checks a host-name label: letters, digits and hyphens, 1..=63 characters,
/// not starting or ending with a hyphen.
pub fn check_label(label: &str) -> Result<(), ParseError> {
    if label.is_empty() {
        return Err("empty label".into());
    }
    if label.len() > 63 {
        return Err(format!("label {label:?} is longer than 63 characters").into());
    }
    if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(format!("label {label:?} may hold only letters, digits and '-'").into());
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("label {label:?} must not start or end with '-'").into());
    }
    Ok(())
}

/// Parses a host name ("pm1.dc1.example.com" or with the trailing dot) into an
/// absolute, lowercase [`Name`]. Every label must be a valid host-name label.
pub fn parse_absolute(s: &str) -> Result<Name, ParseError> {
    let t = s.trim_end_matches('.');
    if t.is_empty() {
        return Err("empty name".into());
    }
    if s.ends_with("..") {
        return Err("empty label".into());
    }
    for l in t.split('.') {
        check_label(l)?;
    }
    if t.len() > 253 {
        return Err("name is longer than 253 characters".into());
    }
    let n = Name::from_ascii(format!("{}.", t.to_ascii_lowercase())).map_err(|e| ParseError(e.to_string()))?;
    Ok(n)
}

/// A name as operators write it: without the trailing dot.
pub fn host_string(n: &Name) -> String {
    let mut s = n.to_string();
    if s.len() > 1 && s.ends_with('.') {
        s.pop();
    }
    s
}

/// Like [`parse_absolute`], but a name without a trailing dot and without any
/// dot at all ("ns1") is taken relative to `origin`.
pub fn parse_relative_to(s: &str, origin: &Name) -> Result<Name, ParseError> {
    if s.ends_with('.') || s.contains('.') {
        parse_absolute(s)
    } else {
        check_label(s)?;
        Name::from_ascii(s.to_ascii_lowercase()).and_then(|n| n.append_domain(origin)).map_err(|e| ParseError(e.to_string()))
    }
}

/// Parses a SOA RNAME, given as "hostmaster@example.com" or as a DNS name.
pub fn parse_mailbox(s: &str) -> Result<Name, ParseError> {
    match s.split_once('@') {
        Some((local, domain)) => {
            if local.is_empty() || local.contains('.') || !local.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("mailbox local part must be non-empty, printable and without dots".into());
            }
            let d = parse_absolute(domain)?;
            Name::from_ascii(local).and_then(|l| l.append_domain(&d)).map_err(|e| ParseError(e.to_string()))
        }
        None => parse_absolute(s),
    }
}

/// Parses "2s", "250ms", "1m", "1.5s" into a [`Duration`].
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return Err("expected a number with a unit, like \"2s\" or \"250ms\"".into());
    }
    let v: f64 = num.parse().map_err(|_| ParseError(format!("{num:?} is not a number")))?;
    let secs = match unit.trim() {
        "ms" => v / 1000.0,
        "s" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        "" => return Err("missing unit (ms, s, m or h)".into()),
        u => return Err(format!("unknown unit {u:?} (use ms, s, m or h)").into()),
    };
    if !(0.0..=86400.0).contains(&secs) {
        return Err("must be between 0 and 24h".into());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Renders a duration the way the config accepts it: "1s", "250ms", "1.5s".
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("2").is_err());
        assert!(parse_duration("2 parsecs").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn names() {
        assert_eq!(parse_absolute("PM1.Example.com").unwrap().to_string(), "pm1.example.com.");
        assert!(parse_absolute("pm_1.example.com").is_err());
        assert!(parse_absolute("-pm.example.com").is_err());
        assert!(parse_absolute("a..b").is_err());
        let o = parse_absolute("puppet.example.test").unwrap();
        assert_eq!(parse_relative_to("ns1", &o).unwrap().to_string(), "ns1.puppet.example.test.");
        assert_eq!(parse_mailbox("hostmaster@example.com").unwrap().to_string(), "hostmaster.example.com.");
    }
}
