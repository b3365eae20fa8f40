//! The policy file: TOML read with serde, every value checked, every problem reported as
//! `FILE:LINE:COLUMN: what is wrong, what is expected`, all of them at once.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

/// Where in the file, for messages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// A value as written, or a list of them: `ports = 53` and `ports = [53, "1000-2000"]` alike.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    pub fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::One(t) => vec![t],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A number or a `"a-b"` range.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum NumOrRange {
    Num(i64),
    Text(String),
}

/// A rate: an integer, or a string with a k/M/G suffix.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Rate {
    Num(i64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    /// What to do with truncated or malformed IP packets: "drop" (default) or "pass".
    pub malformed: Option<Spanned<String>>,
    pub interfaces: Option<Spanned<RawInterfaces>>,
    pub lists: Option<RawLists>,
    #[serde(default)]
    pub limit: Vec<Spanned<RawLimit>>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInterfaces {
    pub names: Vec<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLists {
    #[serde(default)]
    pub block: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    #[serde(default)]
    pub block_files: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_files: Vec<Spanned<String>>,
    #[serde(default)]
    pub protected: Vec<Spanned<String>>,
    /// "enforce" (default) or "monitor" for the block list.
    pub mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub name: Spanned<String>,
    pub class: Spanned<String>,
    pub per: Spanned<String>,
    pub pps: Option<Spanned<i64>>,
    pub bps: Option<Spanned<Rate>>,
    pub burst: Option<Spanned<i64>>,
    pub prefix_v4: Option<Spanned<i64>>,
    pub prefix_v6: Option<Spanned<i64>>,
    pub ban_seconds: Option<Spanned<i64>>,
    pub mode: Option<Spanned<String>>,
    /// Global limits: let sources seen in peacetime keep passing first (default true).
    pub known_sources_first: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Spanned<String>,
    pub action: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    // (No `Spanned` inside an untagged enum: toml cannot buffer it. A bad port is reported
    // at the key.)
    pub dst_ports: Option<Spanned<OneOrMany<NumOrRange>>>,
    pub src_ports: Option<Spanned<OneOrMany<NumOrRange>>>,
    pub tcp_flags: Option<Spanned<String>>,
    pub preset: Option<Spanned<String>>,
    pub length: Option<Spanned<NumOrRange>>,
    pub ttl: Option<Spanned<NumOrRange>>,
    pub icmp_type: Option<Spanned<i64>>,
    pub fragments: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
}

/// Turns byte offsets into line and column (1-based) and collects problems.
pub struct Reporter {
    file: String,
    line_starts: Vec<usize>,
    pub problems: Vec<Problem>,
    /// Directory relative list-file paths are taken from.
    pub dir: PathBuf,
}

impl Reporter {
    pub fn new(path: &Path, text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Self {
            file: path.display().to_string(),
            line_starts,
            problems: Vec::new(),
            dir: path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        }
    }

    pub fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let line = self.line_starts.partition_point(|&s| s <= span.start);
        let column = span.start - self.line_starts[line.saturating_sub(1)] + 1;
        self.problems.push(Problem {
            file: self.file.clone(),
            line: line.max(1),
            column,
            message: message.into(),
        });
    }

    /// A problem not tied to a place in this file (for example in a list file it names).
    pub fn elsewhere(&mut self, file: String, line: usize, message: String) {
        self.problems.push(Problem {
            file,
            line,
            column: 1,
            message,
        });
    }

    pub fn file(&self) -> &str {
        &self.file
    }
}

/// Parse the TOML; syntax and schema errors become problems.
pub fn parse(text: &str, reporter: &mut Reporter) -> Option<RawPolicy> {
    match toml::from_str::<RawPolicy>(text) {
        Ok(raw) => Some(raw),
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().replace('\n', " ");
            reporter.at(span, explain(&message));
            None
        }
    }
}

/// Serde's wording, with what a reader of the policy schema needs to fix it.
fn explain(message: &str) -> String {
    if message.starts_with("unknown field") {
        format!("{message}; see examples/floodgate.toml for every key")
    } else if message.starts_with("missing field") {
        format!("{message}; every [[limit]] needs name, class and per, every [[rule]] a name")
    } else {
        message.to_string()
    }
}
