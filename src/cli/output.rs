//! The one place srvctl output is made: human tables or `--json`, and the
//! exit code. Returns (exit code, stdout text, stderr text) so it can be
//! tested without a terminal.

use std::fmt::Write as _;

use super::exit;
use crate::control::client::ClientError;
use crate::control::proto::{
    ChangeReport, ExplainReport, MasterStatus, MastersReport, ReloadReport, Reply, Request, Response, StatusReport,
};

pub(super) fn render(req: &Request, result: &Result<Response, ClientError>, json: bool) -> (u8, String, String) {
    let resp = match result {
        Ok(r) => r,
        Err(e) => {
            let out = if json { json_line(&serde_json::json!({ "unreachable": { "message": e.to_string() } })) } else { String::new() };
            return (exit::UNREACHABLE, out, format!("srvctl: {e}\n"));
        }
    };
    let code = match resp {
        Response::Ok(Reply::Change(c)) if c.wait.as_ref().is_some_and(|w| !w.succeeded()) => exit::REFUSED,
        Response::Ok(_) => exit::DONE,
        Response::Refused(_) | Response::Error(_) => exit::REFUSED,
    };
    if json {
        return (code, json_line(resp), String::new());
    }
    match resp {
        Response::Ok(reply) => {
            let out = match reply {
                Reply::Change(c) => change(c),
                Reply::Masters(m) => masters(m),
                Reply::Status(s) => status(s),
                Reply::Explain(e) => explain(e),
                Reply::Reload(r) => reload(r),
            };
            let err = match reply {
                Reply::Change(ChangeReport { wait: Some(w), .. }) if !w.succeeded() && matches!(req, Request::Drain(_)) => {
                    format!("srvctl: {} is drained but not idle: {}: {}\n", req_host(req), w.outcome, w.detail)
                }
                Reply::Change(ChangeReport { wait: Some(w), .. }) if !w.succeeded() => {
                    format!("srvctl: {} was added but is not published: {}: {}\n", req_host(req), w.outcome, w.detail)
                }
                _ => String::new(),
            };
            (code, out, err)
        }
        Response::Refused(f) => (code, String::new(), format!("srvctl: {} refused: {}\n", req.name(), f.message)),
        Response::Error(f) => (code, String::new(), format!("srvctl: {} failed: {}\n", req.name(), f.message)),
    }
}

fn req_host(req: &Request) -> String {
    match req {
        Request::AddMaster(a) => a.host.clone(),
        Request::Drain(d) => d.host.clone(),
        _ => String::new(),
    }
}

fn json_line(v: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serialisable");
    s.push('\n');
    s
}

/// Aligned columns, two spaces apart; the last column is not padded.
fn table(indent: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for r in std::iter::once(&header).chain(rows) {
        let mut line = indent.to_string();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes".into() } else { "no".into() }
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() { "-".into() } else { s }
}

/// "2024-05-01 12:00:00Z".
pub(super) fn fmt_utc(unix: u64) -> String {
    let days = (unix / 86400) as i64;
    let secs = unix % 86400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// "12s", "3m", "2h5m", "4d".
fn fmt_span(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{}m", s / 3600, s / 60 % 60),
        s => format!("{}d", s / 86400),
    }
}

fn ago(now: u64, t: u64) -> String {
    format!("{} ago", fmt_span(now.saturating_sub(t)))
}

fn change(c: &ChangeReport) -> String {
    let m = &c.master.master;
    let id = m.id();
    let mut out = String::new();
    let what = match (c.action.as_str(), c.changed) {
        (_, false) => format!("unchanged: {id}"),
        ("add-master", _) => format!("added {id} (site {}, roles {}, weight {}, check {})", m.site, m.roles.join(","), m.weight, m.check),
        ("remove-master", _) => format!("removed {id} (site {})", m.site),
        ("drain", _) => format!("drained {id}: out of the answers"),
        ("undrain", _) => format!("undrained {id}: back in the answers when up"),
        ("set-weight", _) => format!("weight of {id} is now {}", m.weight),
        (a, _) => format!("{a} {id}"),
    };
    let _ = writeln!(out, "{what}");
    for n in &c.notes {
        let _ = writeln!(out, "  {n}");
    }
    if let Some(w) = &c.wait {
        let _ = writeln!(out, "  {}: {}", w.outcome, w.detail);
    }
    if c.action != "remove-master" && !c.master.health.is_empty() {
        let states: Vec<String> = c.master.health.iter().map(|h| format!("{} {}", h.role, h.state)).collect();
        let _ = writeln!(out, "  health: {}", states.join(", "));
    }
    let _ = writeln!(out, "serial {}", c.serial);
    out
}

fn masters(r: &MastersReport) -> String {
    let rows: Vec<Vec<String>> = r
        .masters
        .iter()
        .map(|m| {
            vec![
                m.host.clone(),
                m.port.to_string(),
                m.site.clone(),
                m.roles.join(","),
                m.weight.to_string(),
                yes_no(m.drained),
                m.check.clone(),
                dash_if_empty(m.addresses.join(",")),
            ]
        })
        .collect();
    let mut out = table("", &["HOST", "PORT", "SITE", "ROLES", "WEIGHT", "DRAINED", "CHECK", "ADDRESSES"], &rows);
    let _ = writeln!(out, "{} masters in {}; serial {}", r.masters.len(), r.registry, r.serial);
    out
}

fn drain_cell(m: &MasterStatus, now: u64) -> String {
    if !m.master.drained {
        return "no".into();
    }
    match m.answers_expire {
        _ if m.safe_to_stop => "yes, safe to stop".into(),
        Some(e) => format!("yes, safe to stop in {}", fmt_span(e.saturating_sub(now).max(1))),
        None => "yes".into(),
    }
}

fn status(s: &StatusReport) -> String {
    let now = s.now;
    let mut rows = Vec::new();
    for m in &s.masters {
        for h in &m.health {
            let last = match &h.last_check {
                Some(c) => format!("{} {}: {}", if c.ok { "ok" } else { "FAIL" }, ago(now, c.at), c.detail),
                None => "-".into(),
            };
            rows.push(vec![
                m.master.id(),
                m.master.site.clone(),
                h.role.clone(),
                h.state.clone(),
                h.since.map_or("-".into(), |t| ago(now, t)),
                yes_no(h.published),
                m.master.weight.to_string(),
                drain_cell(m, now),
                h.last_check.as_ref().and_then(|c| c.latency_ms).map_or("-".into(), |l| format!("{l:.1}ms")),
                last,
            ]);
        }
    }
    let mut out = format!("serial {}  ttl {}s  srvd up since {}\n", s.serial, s.ttl, fmt_utc(s.started));
    if let Some(st) = &s.serial_store {
        match &st.error {
            Some(e) => {
                let _ = writeln!(out, "WARNING: the SOA serial cannot be stored ({} failures): {e}", st.failures);
            }
            None => {
                let _ = writeln!(out, "serial store: {} failures since start, storing works again", st.failures);
            }
        }
        if st.behind {
            let _ =
                writeln!(out, "WARNING: the answers changed under serial {}; secondaries get them once a new serial is stored", s.serial);
        }
    }
    out.push_str(&table(
        "",
        &["MASTER", "SITE", "ROLE", "STATE", "SINCE", "PUBLISHED", "WEIGHT", "DRAINED", "LATENCY", "LAST CHECK"],
        &rows,
    ));
    for m in &s.masters {
        for h in m.health.iter().filter(|h| h.ca_fingerprint.is_some()) {
            let _ = writeln!(out, "{} serves CA certificate {}", m.master.id(), h.ca_fingerprint.as_deref().unwrap_or_default());
        }
        if let Some(j) = &m.jrubies {
            let _ = writeln!(out, "{} JRubies: {}", m.master.id(), jruby_line(j, now));
        }
    }
    for m in s.masters.iter().filter(|m| m.master.drained) {
        if let (Some(since), Some(exp)) = (m.drained_since, m.answers_expire) {
            let verdict = match (m.safe_to_stop, m.idle, &m.jrubies) {
                (true, Some(true), _) => "idle (no JRuby borrowed): safe to stop now".to_string(),
                (true, Some(false), Some(j)) if j.error.is_none() => {
                    format!("answers expired, waiting for {} borrowed JRuby(s) to be returned", j.borrowed.unwrap_or(0))
                }
                (true, Some(false), _) => "answers expired; JRuby figures not yet fetched since".to_string(),
                (true, None, _) => "safe to stop now".to_string(),
                (false, _, _) => format!("safe to stop in {}", fmt_span(exp.saturating_sub(now).max(1))),
            };
            let _ = writeln!(
                out,
                "{} drained at {}; cached answers naming it expire at {}: {verdict}",
                m.master.id(),
                fmt_utc(since),
                fmt_utc(exp)
            );
        }
    }
    out
}

fn jruby_line(j: &crate::control::proto::JrubyReport, now: u64) -> String {
    let mut s = match (j.total, j.free, j.borrowed, j.queued) {
        (Some(t), Some(f), Some(b), Some(q)) => format!("{b} borrowed, {f} free of {t}, {q} queued ({})", ago(now, j.at)),
        _ => "no figures yet".to_string(),
    };
    if let Some(a) = j.spare_avg {
        let _ = write!(s, "; spare (average) {a:.1}");
    }
    if let Some(e) = &j.error {
        let _ = write!(s, "; last fetch failed: {e}");
    }
    s
}

fn explain(e: &ExplainReport) -> String {
    let mut out = format!("serial {}  ttl {}s\n", e.serial, e.ttl);
    if let Some(c) = &e.client {
        let gets = match &c.site {
            Some(s) => format!("site {s}"),
            None => "the site-less pool".into(),
        };
        let _ = writeln!(out, "client {} gets {gets}: {}", c.address, c.why);
        let _ = writeln!(
            out,
            "the same for every client in {}/{} (ECS scope {})",
            crate::input::network::truncate(c.address, c.scope),
            c.scope,
            c.scope
        );
    }
    for n in &e.names {
        let _ = writeln!(out, "\n{}  ({}, {})", n.name, n.role, n.mode);
        if n.records.is_empty() {
            let _ = writeln!(out, "  no records: NODATA{}", if n.role != "puppet" { " (agents fall back to _x-puppet)" } else { "" });
        } else {
            let rows: Vec<Vec<String>> = n
                .records
                .iter()
                .map(|r| vec![r.priority.to_string(), r.weight.to_string(), r.port.to_string(), r.target.clone()])
                .collect();
            out.push_str(&table("  ", &["PRIORITY", "WEIGHT", "PORT", "TARGET"], &rows));
        }
        if !n.masters.is_empty() {
            let rows: Vec<Vec<String>> = n
                .masters
                .iter()
                .map(|m| {
                    let why = match &m.weight_inputs {
                        Some(w) if m.included => format!("{}; {w}", m.reason),
                        _ => m.reason.clone(),
                    };
                    vec![m.master.clone(), m.site.clone(), if m.included { "in" } else { "out" }.into(), why]
                })
                .collect();
            out.push_str(&table("  ", &["MASTER", "SITE", "IN", "WHY"], &rows));
        }
    }
    out
}

fn reload(r: &ReloadReport) -> String {
    let mut out =
        format!("reloaded: serial {}{}\n", r.serial, if r.changed { " (published data changed)" } else { " (published data unchanged)" });
    for (what, list) in [("added", &r.added), ("removed", &r.removed), ("modified", &r.modified)] {
        if !list.is_empty() {
            let _ = writeln!(out, "  {what}: {}", list.join(", "));
        }
    }
    if !r.restart_needed.is_empty() {
        let _ = writeln!(out, "  changed but only applied at restart: {}", r.restart_needed.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc() {
        assert_eq!(fmt_utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(fmt_utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(fmt_utc(1_700_000_000), "2023-11-14 22:13:20Z");
    }

    #[test]
    fn aligned() {
        let t = table("", &["A", "BB", "C"], &[vec!["xxx".into(), "y".into(), "z".into()]]);
        assert_eq!(t, "A    BB  C\nxxx  y   z\n");
    }
}
