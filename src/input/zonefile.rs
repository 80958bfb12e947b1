//! The optional static zone file (RFC 1035 master format) that adds records
//! srvd does not compute: glue for in-zone name servers, TXT, and so on.
//!
//! The file is split into entries (one record each, parentheses joined) and
//! every entry is parsed on its own, so each error names its line.

use std::path::Path;

use hickory_proto::rr::{Name, Record, RecordType};
use hickory_proto::serialize::txt::Parser;

use crate::input::error::InputError;

/// A static record and the line of the zone file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticRecord {
    /// The record, owner lowercased and inside the zone.
    pub record: Record,
    /// 1-based line of the zone file the entry starts on, for error messages.
    pub line: usize,
}

/// Reads and parses a zone file for `origin`, with `default_ttl` for records
/// without one.
pub fn load(path: &Path, origin: &Name, default_ttl: u32) -> Result<Vec<StaticRecord>, InputError> {
    let text = std::fs::read_to_string(path).map_err(|e| InputError::new(path, "zone.file", format!("cannot read: {e}")))?;
    parse(&text, path, origin, default_ttl)
}

/// One logical entry: its first line number and its text, comments removed,
/// parenthesised continuation lines joined.
fn entries(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut start = 0;
    let mut depth = 0i32;
    for (i, line) in text.lines().enumerate() {
        let mut in_quote = false;
        let mut escaped = false;
        let mut kept = String::new();
        for c in line.chars() {
            if escaped {
                escaped = false;
                kept.push(c);
                continue;
            }
            match c {
                '\\' => escaped = true,
                '"' => in_quote = !in_quote,
                ';' if !in_quote => break,
                '(' if !in_quote => depth += 1,
                ')' if !in_quote => depth -= 1,
                _ => {}
            }
            kept.push(c);
        }
        if cur.is_empty() {
            if kept.trim().is_empty() {
                continue;
            }
            start = i + 1;
            cur = kept;
        } else {
            cur.push(' ');
            cur.push_str(kept.trim());
        }
        if depth <= 0 {
            depth = 0;
            out.push((start, std::mem::take(&mut cur)));
        }
    }
    if !cur.trim().is_empty() {
        out.push((start, cur));
    }
    out
}

/// Parses zone file text for `origin`: `$ORIGIN` and `$TTL` are honoured,
/// records without a TTL get `default_ttl`, an owner may be left out
/// (continuing the previous one). Every record must lie inside the zone;
/// `path` is used in errors, each naming its line.
pub fn parse(text: &str, path: &Path, origin: &Name, default_ttl: u32) -> Result<Vec<StaticRecord>, InputError> {
    let err = |line: usize, reason: String| InputError::new(path, "zone.file", reason).at_line(line);
    let mut cur_origin = origin.clone();
    let mut ttl = default_ttl;
    let mut last_owner: Option<Name> = None;
    let mut out = Vec::new();
    for (line, entry) in entries(text) {
        let trimmed = entry.trim();
        let mut words = trimmed.split_whitespace();
        match words.next() {
            Some(d) if d.eq_ignore_ascii_case("$ORIGIN") => {
                let o = words.next().ok_or_else(|| err(line, "$ORIGIN needs a name".into()))?;
                cur_origin = Name::parse(o, Some(&cur_origin)).map_err(|e| err(line, format!("bad $ORIGIN: {e}")))?;
                continue;
            }
            Some(d) if d.eq_ignore_ascii_case("$TTL") => {
                let t = words.next().ok_or_else(|| err(line, "$TTL needs a value".into()))?;
                ttl = t.parse().map_err(|_| err(line, format!("bad $TTL {t:?} (seconds expected)")))?;
                continue;
            }
            Some(d) if d.starts_with('$') => return Err(err(line, format!("directive {d} is not supported"))),
            _ => {}
        }
        let body = if entry.starts_with(char::is_whitespace) {
            let owner = last_owner.as_ref().ok_or_else(|| err(line, "record without an owner name".into()))?;
            format!("{owner} {trimmed}")
        } else {
            trimmed.to_string()
        };
        let src = format!("$TTL {ttl}\n{body}\n");
        let parsed = Parser::new(src, None, Some(cur_origin.clone())).parse().map_err(|e| err(line, format!("{e}")))?;
        for (_, set) in parsed.1 {
            for r in set.records_without_rrsigs() {
                let mut r = r.clone();
                let lname = Name::from_ascii(r.name.to_ascii().to_ascii_lowercase()).unwrap_or_else(|_| r.name.clone());
                r.name = lname;
                if !origin.zone_of(&r.name) {
                    return Err(err(line, format!("{} is outside the zone {origin}", r.name)));
                }
                last_owner = Some(r.name.clone());
                out.push(StaticRecord { record: r, line });
            }
        }
    }
    Ok(out)
}

/// Checks static records against the names srvd computes itself: no SOA,
/// no apex NS, nothing on a name srvd publishes.
pub fn check_conflicts(records: &[StaticRecord], path: &Path, origin: &Name, published: &[Name]) -> Result<(), InputError> {
    for s in records {
        let r = &s.record;
        let err = |reason: String| InputError::new(path, "zone.file", reason).at_line(s.line);
        if r.record_type() == RecordType::SOA {
            return Err(err("the SOA comes from [zone]; remove it from the zone file".to_string()));
        }
        if r.record_type() == RecordType::NS && &r.name == origin {
            return Err(err("the apex NS comes from zone.nameservers; remove it from the zone file".to_string()));
        }
        if published.iter().any(|p| p == &r.name) {
            return Err(err(format!("{} is a name srvd publishes", r.name)));
        }
    }
    Ok(())
}
