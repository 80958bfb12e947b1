//! Edits the registry file the way an operator would: with `toml_edit`, so
//! comments, blank lines, key order and inline remarks survive. Only the
//! `[[master]]` entry being changed is touched.
//!
//! This module only edits text; the control side validates the result with
//! [`crate::input::registry::Registry::parse`] before writing it.
//!
//! Comments around a removed entry: a comment block directly above the
//! `[[master]]` header (no blank line between) is taken to describe that
//! master and goes with it; comment blocks separated from the header by a
//! blank line (a file header, a "dc2 masters" section title) stay.

use toml_edit::{Array, ArrayOfTables, DocumentMut, Item, Table, Value};

use crate::input::registry::{CheckKind, Master};

/// Why the registry text cannot be edited.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EditError {
    /// The text is not TOML (the parser's message).
    #[error("cannot parse the registry file: {0}")]
    Parse(String),
    /// `master` is not an array of tables (it is the shape named here); srvctl
    /// refuses to rewrite it rather than reformat an operator's file.
    #[error("the registry file writes `master` as {0}; srvctl edits only [[master]] tables")]
    Shape(&'static str),
    /// No `[[master]]` entry at this index (entries count from 0 in file order).
    #[error("the registry file has no entry number {0}")]
    NoEntry(usize),
}

/// A registry file being edited.
pub struct RegistryDoc {
    doc: DocumentMut,
}

impl RegistryDoc {
    /// Parses registry text for editing; refuses files where `master` is not
    /// written as `[[master]]` tables.
    pub fn parse(text: &str) -> Result<RegistryDoc, EditError> {
        let doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| EditError::Parse(e.message().to_string()))?;
        match doc.get("master") {
            None | Some(Item::ArrayOfTables(_)) => Ok(RegistryDoc { doc }),
            Some(Item::Value(_)) => Err(EditError::Shape("an inline array")),
            Some(_) => Err(EditError::Shape("a single table")),
        }
    }

    /// Number of `[[master]]` entries (in the same order as `Registry::masters`).
    pub fn len(&self) -> usize {
        self.doc.get("master").and_then(Item::as_array_of_tables).map_or(0, ArrayOfTables::len)
    }

    /// Whether the file has no `[[master]]` entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn masters(&mut self) -> &mut ArrayOfTables {
        let item = self.doc.entry("master").or_insert_with(|| Item::ArrayOfTables(ArrayOfTables::new()));
        item.as_array_of_tables_mut().expect("checked in parse")
    }

    fn entry(&mut self, index: usize) -> Result<&mut Table, EditError> {
        self.masters().get_mut(index).ok_or(EditError::NoEntry(index))
    }

    /// Appends a `[[master]]` entry. Port, roles and weight are written out
    /// so the file says what is published; `check` only when asked for.
    pub fn append(&mut self, m: &Master, explicit_check: bool) {
        // A file without entries keeps its text (comments) in the document's
        // trailing part; it goes above the first entry.
        let prefix = if self.is_empty() {
            let text = self.doc.trailing().as_str().unwrap_or("").to_string();
            self.doc.set_trailing("");
            if text.trim().is_empty() { String::new() } else { format!("{}\n\n", text.trim_end_matches('\n')) }
        } else {
            "\n".to_string()
        };
        let mut t = Table::new();
        t.insert("host", toml_edit::value(m.host_str()));
        t.insert("site", toml_edit::value(m.site.clone()));
        t.insert("port", toml_edit::value(i64::from(m.port)));
        t.insert("roles", toml_edit::value(m.roles.iter().map(|r| r.as_str()).collect::<Array>()));
        t.insert("weight", toml_edit::value(i64::from(m.weight)));
        if !m.addresses.is_empty() {
            t.insert("addresses", toml_edit::value(m.addresses.iter().map(|a| a.to_string()).collect::<Array>()));
        }
        if m.drained {
            t.insert("drained", toml_edit::value(true));
        }
        if explicit_check || m.check != CheckKind::default() {
            t.insert("check", toml_edit::value(m.check.to_string()));
        }
        t.decor_mut().set_prefix(prefix);
        // Text after the last entry (trailing comments) stays at the end of the file.
        self.masters().push(t);
    }

    /// Removes entry `index`, keeping comment blocks that are not its own.
    pub fn remove(&mut self, index: usize) -> Result<(), EditError> {
        if index >= self.len() {
            return Err(EditError::NoEntry(index));
        }
        let removed = self.masters().remove(index);
        let prefix = removed.decor().prefix().and_then(|p| p.as_str()).unwrap_or("").to_string();
        let kept = detached_comments(&prefix);
        if kept.is_empty() {
            if self.is_empty() {
                self.doc.remove("master");
            }
            return Ok(());
        }
        // The next entry takes over the kept comments (it now sits where the
        // removed one was); without a next entry they go to the end of the file.
        if index < self.len() {
            let next = self.entry(index)?;
            let own = next.decor().prefix().and_then(|p| p.as_str()).unwrap_or("\n").to_string();
            next.decor_mut().set_prefix(format!("{kept}{}", own.trim_start_matches('\n')));
        } else {
            if self.is_empty() {
                self.doc.remove("master");
            }
            let trailing = self.doc.trailing().as_str().unwrap_or("").to_string();
            self.doc.set_trailing(format!("{}{trailing}", kept.trim_end_matches('\n')).trim_start_matches('\n').to_string() + "\n");
        }
        Ok(())
    }

    /// Sets `drained` on entry `index`.
    pub fn set_drained(&mut self, index: usize, drained: bool) -> Result<(), EditError> {
        let t = self.entry(index)?;
        if !drained && !t.contains_key("drained") {
            return Ok(());
        }
        set_value(t, "drained", Value::from(drained));
        Ok(())
    }

    /// Sets `weight` on entry `index`.
    pub fn set_weight(&mut self, index: usize, weight: u16) -> Result<(), EditError> {
        let t = self.entry(index)?;
        set_value(t, "weight", Value::from(i64::from(weight)));
        Ok(())
    }

    /// The edited file's text, with everything not edited left as it was.
    pub fn render(&self) -> String {
        self.doc.to_string()
    }
}

/// Replaces a value in place, keeping its surrounding spaces and a trailing comment.
fn set_value(t: &mut Table, key: &str, mut v: Value) {
    match t.get_mut(key) {
        Some(Item::Value(old)) => {
            *v.decor_mut() = old.decor().clone();
            *old = v;
        }
        _ => {
            t.insert(key, Item::Value(v));
        }
    }
}

/// From the text above a table header, the part that does not belong to the
/// table: everything up to the last blank line that precedes the header's
/// own comment block. Returns "" when that part holds no comment.
fn detached_comments(prefix: &str) -> String {
    let lines: Vec<&str> = prefix.split_inclusive('\n').collect();
    // The table's own block: trailing comment lines with no blank line before the header.
    let mut own_start = lines.len();
    while own_start > 0 && lines[own_start - 1].trim_start().starts_with('#') {
        own_start -= 1;
    }
    let detached: String = lines[..own_start].concat();
    if detached.lines().any(|l| l.trim_start().starts_with('#')) { detached } else { String::new() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::registry::{DEFAULT_PORT, Role};

    fn master(host: &str) -> Master {
        Master {
            host: crate::input::names::parse_absolute(host).unwrap(),
            site: "dc1".into(),
            port: DEFAULT_PORT,
            roles: vec![Role::Puppet],
            weight: 10,
            addresses: vec![],
            drained: false,
            check: CheckKind::Https,
        }
    }

    const FILE: &str = "\
# Masters of the estate.

# dc1
[[master]]
host = \"a.example.com\"   # the big one
site = \"dc1\"
weight = 20 # heavy

# b is being retired
[[master]]
host = \"b.example.com\"
site = \"dc1\"

# dc2
[[master]]
host = \"c.example.com\"
site = \"dc2\"
# end of file
";

    #[test]
    fn append_keeps_everything_else() {
        let mut d = RegistryDoc::parse(FILE).unwrap();
        d.append(&master("new.example.com"), false);
        let out = d.render();
        assert!(out.starts_with(FILE.trim_end_matches("# end of file\n")), "{out}");
        assert!(
            out.contains("\n\n[[master]]\nhost = \"new.example.com\"\nsite = \"dc1\"\nport = 8140\nroles = [\"puppet\"]\nweight = 10\n"),
            "{out}"
        );
        assert!(out.contains("# end of file"), "{out}");
        assert_eq!(d.len(), 4);
    }

    #[test]
    fn append_to_empty() {
        let mut d = RegistryDoc::parse("").unwrap();
        d.append(&master("new.example.com"), true);
        assert_eq!(
            d.render(),
            "[[master]]\nhost = \"new.example.com\"\nsite = \"dc1\"\nport = 8140\nroles = [\"puppet\"]\nweight = 10\ncheck = \"https\"\n"
        );
    }

    #[test]
    fn remove_takes_own_comment_keeps_section_comments() {
        let mut d = RegistryDoc::parse(FILE).unwrap();
        d.remove(1).unwrap();
        let out = d.render();
        assert!(!out.contains("b is being retired"), "{out}");
        assert!(!out.contains("b.example.com"), "{out}");
        assert!(out.contains("# Masters of the estate."), "{out}");
        assert!(out.contains("# dc2\n[[master]]\nhost = \"c.example.com\""), "{out}");
        assert!(out.contains("# end of file"), "{out}");

        // The first entry: the file header stays, the "# dc1" title goes with it.
        let mut d = RegistryDoc::parse(FILE).unwrap();
        d.remove(0).unwrap();
        let out = d.render();
        assert!(out.starts_with("# Masters of the estate.\n"), "{out}");
        assert!(!out.contains("a.example.com"), "{out}");
        assert!(out.contains("# b is being retired\n[[master]]"), "{out}");
    }

    #[test]
    fn append_to_comments_only() {
        let mut d = RegistryDoc::parse("# header\n# more\n").unwrap();
        d.append(&master("new.example.com"), false);
        let out = d.render();
        assert!(out.starts_with("# header\n# more\n\n[[master]]\nhost = \"new.example.com\""), "{out}");
        d.append(&master("two.example.com"), false);
        assert!(d.render().starts_with(&out), "{}", d.render());
    }

    #[test]
    fn remove_all() {
        let mut d = RegistryDoc::parse(FILE).unwrap();
        for _ in 0..3 {
            d.remove(0).unwrap();
        }
        let out = d.render();
        assert!(out.contains("# Masters of the estate."), "{out}");
        assert!(!out.contains("[[master]]"), "{out}");
        assert!(RegistryDoc::parse(&out).unwrap().is_empty());
        assert_eq!(d.remove(0), Err(EditError::NoEntry(0)));
    }

    #[test]
    fn set_keeps_inline_comments() {
        let mut d = RegistryDoc::parse(FILE).unwrap();
        d.set_weight(0, 7).unwrap();
        d.set_drained(1, true).unwrap();
        let out = d.render();
        assert!(out.contains("weight = 7 # heavy\n"), "{out}");
        assert!(out.contains("host = \"b.example.com\"\nsite = \"dc1\"\ndrained = true\n"), "{out}");
        d.set_drained(1, false).unwrap();
        d.set_drained(2, false).unwrap();
        let out = d.render();
        assert!(out.contains("drained = false\n"), "{out}");
        assert_eq!(out.matches("drained").count(), 1, "{out}");
    }

    #[test]
    fn shapes() {
        assert!(matches!(RegistryDoc::parse("master = []"), Err(EditError::Shape(_))));
        assert!(matches!(RegistryDoc::parse("[master]\nhost = \"a\""), Err(EditError::Shape(_))));
        assert!(matches!(RegistryDoc::parse("[[master]"), Err(EditError::Parse(_))));
    }
}
