//! Data sources, as `ingest` and `rank`'s `file` labeler name them, resolved into files and
//! read into normalised records ([`super::formats::Record`]) by one reader.
//!
//! A source is one of:
//! - a file: `.txt` or `.jsonl` (each optionally `.gz`/`.zst`), `.parquet`, or `.arrow` (an
//!   Arrow IPC stream or file);
//! - a glob of such files (relative to the workspace), matched in sorted order;
//! - a folder written by HF `datasets`' `save_to_disk`: one split (`state.json` listing its
//!   Arrow files) or several (`dataset_dict.json` naming the split folders; the `split`
//!   param chooses, `train` by default);
//! - `builtin:NAME`, data hone generates.
//!
//! Every record is located for error messages: `file:line` for text and JSONL, `file: row
//! group 3, row 1,204` for Parquet, `file: row 1,204` for Arrow, `builtin:NAME record 7`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use hone_engine::stage::StageError;
use serde_json::Value;

use super::builtin;
use super::columnar::{Columns, RowAt, TableKind, TableReader};
use super::formats::{self, Bad, Compression, FileKind, Record, RecordReader, TxtSplit};

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Lines(FileKind, Compression),
    Table(TableKind),
}

/// A source, resolved: one file, or one builtin.
#[derive(Debug, Clone)]
pub enum Input {
    File { shown: String, path: PathBuf, kind: Kind },
    Builtin { name: String, version: u32 },
}

impl Input {
    /// As messages name it: relative to the workspace, or `builtin:NAME`.
    pub fn shown(&self) -> String {
        match self {
            Input::File { shown, .. } => shown.clone(),
            Input::Builtin { name, .. } => format!("builtin:{name}"),
        }
    }
}

/// Where a record is in its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// A text or JSONL file's line (from 1).
    Line(usize),
    /// A Parquet or Arrow row.
    Row(RowAt),
    /// A builtin's record (from 1).
    Record(usize),
}

impl At {
    /// `source:line`, `source: row group 3, row 1,204`, `builtin:x record 7`.
    pub fn show(&self, source: &str) -> String {
        match self {
            At::Line(l) => format!("{source}:{l}"),
            At::Row(r) => format!("{source}: {r}"),
            At::Record(n) => format!("{source} record {n}"),
        }
    }
}

/// What a file's name says it holds.
pub fn classify(path: &Path) -> Result<Kind, String> {
    let (inner, compression) = formats::compression_of(path);
    let table = if inner.ends_with(".parquet") {
        Some(TableKind::Parquet)
    } else if inner.ends_with(".arrow") {
        Some(TableKind::Arrow)
    } else {
        None
    };
    match (table, compression) {
        (Some(t), Compression::None) => Ok(Kind::Table(t)),
        (Some(_), _) => Err(format!(
            "`{}`: Parquet and Arrow files compress their own columns: decompress the file first",
            path.display()
        )),
        (None, _) => match formats::classify(path) {
            Ok((k, c)) => Ok(Kind::Lines(k, c)),
            Err(_) => Err(format!(
                "`{}`: unsupported file type: use .txt or .jsonl (optionally .gz or .zst), .parquet, .arrow, or an HF `datasets` folder",
                path.display()
            )),
        },
    }
}

pub fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The HF `datasets` split read when none is named.
pub const DEFAULT_SPLIT: &str = "train";

/// Expands globs and `datasets` folders and checks that every file exists and has a type
/// the reader reads. Files appear in the order of the sources, a glob's matches sorted, each
/// file once. `splits` chooses the splits of a `datasets` folder that has several.
pub fn resolve(
    sources: &[String],
    splits: &[String],
    workspace: &Path,
) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let shown = |p: &Path| p.strip_prefix(workspace).unwrap_or(p).display().to_string();
    for s in sources {
        if let Some(name) = s.strip_prefix("builtin:") {
            let version =
                builtin::builtin_version(name).ok_or_else(|| builtin::unknown_message(name))?;
            if seen.insert(PathBuf::from(s)) {
                out.push(Input::Builtin { name: name.to_string(), version });
            }
            continue;
        }
        let files: Vec<PathBuf> = if is_glob(s) {
            let pattern = if Path::new(s).is_absolute() {
                s.clone()
            } else {
                format!("{}/{s}", glob::Pattern::escape(&workspace.to_string_lossy()))
            };
            let mut files = Vec::new();
            for entry in glob::glob(&pattern).map_err(|e| format!("invalid glob `{s}`: {e}"))? {
                let path = entry.map_err(|e| {
                    format!("source `{s}`: cannot read `{}`: {}", shown(e.path()), e.error())
                })?;
                if path.is_file() {
                    files.push(path);
                }
            }
            if files.is_empty() {
                return Err(format!(
                    "source `{s}` matches no files (a relative glob is matched in the workspace `{}`)",
                    workspace.display()
                ));
            }
            files.sort();
            files
        } else {
            let path = workspace.join(s);
            if !path.exists() {
                return Err(format!(
                    "source `{s}` does not exist (a relative path is read from the workspace `{}`)",
                    workspace.display()
                ));
            }
            if path.is_dir() { dataset_files(s, &path, splits)? } else { vec![path] }
        };
        for path in files {
            if seen.insert(path.clone()) {
                let kind = classify(Path::new(&shown(&path)))?;
                out.push(Input::File { shown: shown(&path), path, kind });
            }
        }
    }
    Ok(out)
}

/// The Arrow files of a `datasets` folder: its chosen splits' files, in the order
/// `state.json` lists them.
fn dataset_files(source: &str, dir: &Path, splits: &[String]) -> Result<Vec<PathBuf>, String> {
    let read_json = |name: &str| -> Result<Option<Value>, String> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| format!("source `{source}`: `{name}` is not valid JSON: {e}")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("source `{source}`: cannot read `{name}`: {e}")),
        }
    };
    if let Some(dict) = read_json("dataset_dict.json")? {
        let names: Vec<String> = dict
            .get("splits")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .ok_or_else(|| {
                format!("source `{source}`: `dataset_dict.json` has no `splits` list")
            })?;
        let chosen: Vec<String> = if splits.is_empty() {
            if !names.iter().any(|n| n == DEFAULT_SPLIT) {
                return Err(format!(
                    "source `{source}` has the splits {} and no `{DEFAULT_SPLIT}`: choose with `split: NAME`",
                    quoted(&names)
                ));
            }
            vec![DEFAULT_SPLIT.to_string()]
        } else {
            splits.to_vec()
        };
        let mut files = Vec::new();
        for split in &chosen {
            if !names.contains(split) {
                return Err(format!(
                    "source `{source}` has no split `{split}`; its splits are {}",
                    quoted(&names)
                ));
            }
            files.extend(dataset_files(&format!("{source}/{split}"), &dir.join(split), &[])?);
        }
        return Ok(files);
    }
    let Some(state) = read_json("state.json")? else {
        return Err(format!(
            "source `{source}` is a directory but not an HF `datasets` folder (no `dataset_dict.json` or `state.json`): name its files with a glob such as `{source}/*.jsonl` or `{source}/*.parquet`"
        ));
    };
    let files: Vec<PathBuf> = state
        .get("_data_files")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|f| f.get("filename").and_then(Value::as_str))
                .map(|f| dir.join(f))
                .collect()
        })
        .unwrap_or_default();
    if files.is_empty() {
        return Err(format!("source `{source}`: `state.json` lists no data files (`_data_files`)"));
    }
    for f in &files {
        if !f.is_file() {
            return Err(format!(
                "source `{source}`: `state.json` lists `{}`, which is missing: the folder is incomplete (copy it again, or save it again with `save_to_disk`)",
                f.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    Ok(files)
}

fn quoted(names: &[String]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// How to read records.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions<'a> {
    pub txt_split: TxtSplit,
    pub columns: &'a Columns,
    /// The pipeline's seed, for builtins.
    pub seed: u64,
}

/// Reads one source, handing each record (or what is wrong with it) with its location to
/// `each`. An error is a source that cannot be read further (named, with where it stopped),
/// or whatever `each` returns. `progress` counts the source's bytes consumed.
pub fn each_record(
    input: &Input,
    opts: ReadOptions,
    progress: Arc<AtomicU64>,
    each: &mut dyn FnMut(At, Result<Record, Bad>) -> Result<(), StageError>,
) -> Result<(), StageError> {
    let columns = opts.columns;
    match input {
        Input::File { shown, path, kind: Kind::Lines(kind, compression) } => {
            let cannot = |e: std::io::Error| {
                StageError::Failed(format!("cannot read source `{shown}`: {e}"))
            };
            let stream = formats::open(path, *compression, progress).map_err(cannot)?;
            let mut reader = RecordReader::new(stream, *kind, opts.txt_split);
            if columns.renames() {
                let columns = columns.clone();
                reader = reader.with_rename(Box::new(move |v| columns.rename(v)));
            }
            while let Some((line, item)) = reader.next_item().map_err(cannot)? {
                each(At::Line(line), item)?;
            }
        }
        Input::File { shown, path, kind: Kind::Table(kind) } => {
            let mut table = TableReader::open(path, *kind, columns, progress)
                .map_err(|e| StageError::Failed(format!("source `{shown}`: {e}")))?;
            loop {
                match table.next_row() {
                    Ok(Some((at, v))) => each(At::Row(at), formats::from_value(v))?,
                    Ok(None) => break,
                    Err((at, e)) => {
                        return Err(StageError::Failed(format!(
                            "{shown}: {at}: {e}\n   = help: the file is damaged or cut short: fetch or write it again"
                        )));
                    }
                }
            }
        }
        Input::Builtin { name, .. } => {
            let records = builtin::builtin_records(name, opts.seed)
                .ok_or_else(|| StageError::Failed(builtin::unknown_message(name)))?
                .map_err(|e| {
                    StageError::Failed(format!("builtin:{name}: cannot generate its records: {e}"))
                })?;
            for (n, v) in records.into_iter().enumerate() {
                let v = if columns.renames() { columns.rename(v) } else { v };
                each(At::Record(n + 1), formats::from_value(v))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::support::workspace;

    fn folder(files: &[(&str, &str)]) -> tempfile::TempDir {
        let bytes: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_bytes())).collect();
        workspace(&bytes)
    }

    /// What is wrong with a `datasets` folder, said with the source and what to do.
    #[test]
    fn a_datasets_folder_that_does_not_hold_together_is_a_clear_error() {
        let err = |files: &[(&str, &str)], splits: &[String]| {
            let dir = folder(files);
            resolve(&["ds".into()], splits, dir.path()).unwrap_err()
        };
        let e = err(&[("ds/dataset_dict.json", r#"{"splits": ["test", "validation"]}"#)], &[]);
        assert_eq!(
            e,
            "source `ds` has the splits `test`, `validation` and no `train`: choose with `split: NAME`"
        );
        let e = err(&[("ds/dataset_dict.json", r#"{"name": "x"}"#)], &[]);
        assert_eq!(e, "source `ds`: `dataset_dict.json` has no `splits` list");
        let e = err(&[("ds/state.json", "{not json")], &[]);
        assert!(e.starts_with("source `ds`: `state.json` is not valid JSON: "), "{e}");
        let e = err(&[("ds/state.json", r#"{"_data_files": []}"#)], &[]);
        assert_eq!(e, "source `ds`: `state.json` lists no data files (`_data_files`)");
        // A split's folder is read through its own state.json.
        let e = err(
            &[
                ("ds/dataset_dict.json", r#"{"splits": ["train"]}"#),
                ("ds/train/state.json", r#"{"_data_files": [{"filename": "a.arrow"}]}"#),
            ],
            &[],
        );
        assert!(
            e.starts_with("source `ds/train`: `state.json` lists `a.arrow`, which is missing"),
            "{e}"
        );
        // A file of a type the reader does not know names the types it does.
        let dir = folder(&[("x.csv", "a,b")]);
        let e = resolve(&["x.csv".into()], &[], dir.path()).unwrap_err();
        assert!(e.contains("unsupported file type") && e.contains(".parquet"), "{e}");
    }
}
