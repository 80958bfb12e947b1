//! The one error type of the inputs layer: which file, which key (and
//! line, when known), and why. Config, registry and zone file errors all
//! take this shape, so srvd, `--check-config` and srvctl report them alike.

use std::fmt;
use std::path::Path;

/// A bad input: which file, which key (and line), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct InputError {
    /// The file, as given (config, registry or zone file).
    pub file: String,
    /// The key (`health.fall`, `master[2].site`, `zone.file`); empty when
    /// the error is about the whole file.
    pub key: String,
    /// The line in the file, when known.
    pub line: Option<usize>,
    /// Why it is refused.
    pub reason: String,
}

impl InputError {
    /// An error about `key` of `file`.
    pub fn new(file: &Path, key: impl Into<String>, reason: impl Into<String>) -> Self {
        InputError { file: file.display().to_string(), key: key.into(), line: None, reason: reason.into() }
    }

    /// The same error, at `line` of the file.
    pub fn at_line(mut self, line: usize) -> Self {
        self.line = Some(line);
        self
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file)?;
        match (self.key.is_empty(), self.line) {
            (false, Some(l)) => write!(f, "{} (line {l}): ", self.key)?,
            (false, None) => write!(f, "{}: ", self.key)?,
            (true, Some(l)) => write!(f, "line {l}: ")?,
            (true, None) => write!(f, "-: ")?,
        }
        f.write_str(&self.reason)
    }
}
