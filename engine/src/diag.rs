//! Load-time diagnostics: what is wrong, where (file:line:col, stage) and what to do.
//!
//! [`Diagnostics`] collects every problem found in a pipeline file so they are reported at
//! once, and renders them the way `rustc` and `just` do: a `-->` location line, the source
//! line and a caret under the offending token.

use std::fmt;
use std::path::PathBuf;

use crate::yaml::Origin;

#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub origin: Option<Origin>,
    pub stage: Option<String>,
    pub help: Option<String>,
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>, origin: Option<&Origin>) -> Self {
        Diagnostic {
            message: message.into(),
            origin: origin.cloned(),
            stage: None,
            help: None,
            notes: Vec::new(),
        }
    }
    pub fn stage(mut self, id: impl Into<String>) -> Self {
        self.stage = Some(id.into());
        self
    }
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

/// Every problem found in one pipeline file.
#[derive(Debug, Clone)]
pub struct Diagnostics {
    pub file: PathBuf,
    pub src: String,
    pub items: Vec<Diagnostic>,
}

impl std::error::Error for Diagnostics {}

impl Diagnostics {
    /// `file:line:col` of an origin, or a description of the flag it came from.
    pub fn location(&self, origin: &Origin) -> String {
        match origin {
            Origin::File { line, col } => format!("{}:{line}:{col}", self.file.display()),
            Origin::Flag(flag) => format!("command line: -s {flag}"),
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = source_lines(&self.src);
        for (i, d) in self.items.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", d.message)?;
            match &d.origin {
                Some(o @ Origin::File { line, col }) => {
                    writeln!(f, "  --> {}", self.location(o))?;
                    if let Some(text) = lines.get(line.saturating_sub(1)) {
                        let gutter = line.to_string().len();
                        let width = token_width(text, *col);
                        writeln!(f, "{:gutter$} |", "")?;
                        writeln!(f, "{line} | {text}")?;
                        let pad: String = text
                            .chars()
                            .take(col.saturating_sub(1))
                            .map(|c| if c == '\t' { '\t' } else { ' ' })
                            .collect();
                        writeln!(f, "{:gutter$} | {pad}{}", "", "^".repeat(width))?;
                    }
                }
                Some(o) => writeln!(f, "  --> {}", self.location(o))?,
                None => writeln!(f, "  --> {}", self.file.display())?,
            }
            if let Some(s) = &d.stage {
                writeln!(f, "   = stage: {s}")?;
            }
            for n in &d.notes {
                writeln!(f, "   = note: {n}")?;
            }
            if let Some(h) = &d.help {
                writeln!(f, "   = help: {h}")?;
            }
        }
        let n = self.items.len();
        write!(f, "{n} problem{} in {}", if n == 1 { "" } else { "s" }, self.file.display())
    }
}

/// The lines of a source as YAML counts them, so that a problem's line number finds its
/// text: `\n`, `\r\n` and a lone `\r` each end one (like [`str::lines`] otherwise).
pub fn source_lines(src: &str) -> Vec<&str> {
    let bytes = src.as_bytes();
    let (mut out, mut start, mut i) = (Vec::new(), 0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'\n' => {
                out.push(&src[start..i]);
                i += 1;
            }
            b'\r' => {
                out.push(&src[start..i]);
                i += if bytes.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
            }
            _ => {
                i += 1;
                continue;
            }
        }
        start = i;
    }
    if start < bytes.len() {
        out.push(&src[start..]);
    }
    out
}

/// How many characters the token starting at `col` (1-based) spans, for the caret line.
fn token_width(line: &str, col: usize) -> usize {
    let rest: Vec<char> = line.chars().skip(col.saturating_sub(1)).collect();
    let Some(&first) = rest.first() else { return 1 };
    if first == '"' || first == '\'' {
        let end = rest.iter().skip(1).position(|&c| c == first).map_or(rest.len(), |p| p + 2);
        return end.max(1);
    }
    if first == '{' || first == '[' {
        return 1;
    }
    let n =
        rest.iter().position(|&c| matches!(c, ',' | '}' | ']' | '#' | ':')).unwrap_or(rest.len());
    let token: String = rest[..n].iter().collect();
    token.trim_end().chars().count().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_source_and_caret() {
        let d = Diagnostics {
            file: "p.yaml".into(),
            src: "stages:\n  a:\n    uses: comand\n".into(),
            items: vec![
                Diagnostic::new(
                    "unknown stage kind `comand`",
                    Some(&Origin::File { line: 3, col: 11 }),
                )
                .stage("a")
                .help("did you mean `command`?"),
            ],
        };
        let s = d.to_string();
        assert!(s.contains("--> p.yaml:3:11"), "{s}");
        assert!(s.contains("3 |     uses: comand\n  |           ^^^^^^\n"), "{s}");
        assert!(s.contains("= help: did you mean `command`?"), "{s}");
        assert!(s.ends_with("1 problem in p.yaml"), "{s}");
    }

    #[test]
    fn lines_end_where_yaml_ends_them() {
        assert_eq!(source_lines("a\nb\r\nc\rd"), ["a", "b", "c", "d"]);
        assert_eq!(source_lines("a\n\nb\n"), ["a", "", "b"]);
        assert_eq!(source_lines("\r\r\n"), ["", ""]);
        assert!(source_lines("").is_empty());
        // A lone `\r` ends a line for the YAML parser too: the caret finds `b:` on line 2.
        let d = Diagnostics {
            file: "p.yaml".into(),
            src: "a: 1\rb: [\n".into(),
            items: vec![Diagnostic::new("x", Some(&Origin::File { line: 2, col: 4 }))],
        };
        assert!(d.to_string().contains("2 | b: [\n"), "{d}");
    }
}
