//! Columnar sources: Parquet files and Arrow IPC files (what HF `datasets` writes with
//! `save_to_disk`), read through the arrow-rs crates one record batch at a time, so memory
//! stays flat whatever the file size (a Parquet file holds at most one row group's projected
//! column chunks in memory).
//!
//! Each row becomes a JSON object of the columns [`select`]ed (only those are decoded), which
//! [`super::formats::from_value`] normalises as it does a JSONL line: strings, numbers,
//! booleans, lists and structs (a `messages` column is a list of `{role, content}` structs)
//! map onto their JSON counterparts, dictionary-encoded strings onto strings, nulls onto null.
//! A column of another type (binary, timestamps, decimals, maps, …) that a record needs is an
//! error before any row is read; one that is not selected is never touched.
//!
//! Rows are located as the Python tools count them, from 0: `row group 3, row 1,204` (the row
//! within its row group, as pyarrow's `read_row_group(3).slice(1204)`) for Parquet, `row
//! 1,204` (the index within the file) for Arrow files.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Schema};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

/// The record fields a column can supply, in the order [`super::formats::from_value`] tells a
/// record's format by.
pub const FIELDS: &[&str] =
    &["text", "messages", "prompt", "completion", "chosen", "rejected", "answer"];

/// Rows per record batch.
const BATCH_ROWS: usize = 1024;

/// Which columns supply which record fields (`ingest`'s `text_column:`, `columns:` and
/// `meta_columns:`), for columnar and JSONL sources alike.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Columns {
    /// Record field → the column (or JSONL field) that holds it. A field not named here is
    /// read from the column of its own name when there is one.
    pub map: BTreeMap<String, String>,
    /// Further columns kept under the record's `meta` (Parquet and Arrow sources; a JSONL
    /// record keeps every other field anyway).
    pub meta: Vec<String>,
    /// The record fields read, when the format is fixed (see [`fields_of`]): the others are
    /// not read from a table, and move under `meta` in a JSON record, so `format: prompt`
    /// reads the prompts of a preference file.
    #[serde(skip)]
    pub only: Option<&'static [&'static str]>,
}

/// The record fields of a format.
pub fn fields_of(format: super::formats::Format) -> &'static [&'static str] {
    use super::formats::Format;
    match format {
        Format::Text => &["text"],
        Format::Chat => &["messages", "prompt", "completion"],
        Format::Prompt => &["prompt", "answer"],
        Format::Preference => &["prompt", "chosen", "rejected"],
    }
}

impl Columns {
    /// Whether JSON records need [`Columns::rename`].
    pub fn renames(&self) -> bool {
        !self.map.is_empty() || self.only.is_some()
    }

    fn reads(&self, field: &str) -> bool {
        self.only.is_none_or(|o| o.contains(&field))
    }

    /// Problems with the mapping itself, as (param, message): a field hone does not have, a
    /// column named twice, a meta column that would be read as a field.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for field in self.map.keys() {
            if !FIELDS.contains(&field.as_str()) {
                out.push((
                    field.clone(),
                    format!(
                        "`{field}` is not a record field: map columns onto {}",
                        FIELDS.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (field, column) in &self.map {
            if let Some(other) = seen.insert(column, field) {
                out.push((
                    field.clone(),
                    format!("column `{column}` is mapped to both `{other}` and `{field}`"),
                ));
            }
        }
        for m in &self.meta {
            if FIELDS.contains(&m.as_str()) {
                out.push((
                    m.clone(),
                    format!("`{m}` is a record field, not meta: map it with `columns:` instead"),
                ));
            }
        }
        out
    }

    /// Renames a JSON record's fields as the mapping says (a JSONL line), and moves the
    /// record fields a fixed format does not read under `meta`.
    pub fn rename(&self, v: Value) -> Value {
        let Value::Object(mut obj) = v else { return v };
        let mut out = Map::new();
        for (field, column) in &self.map {
            if let Some(x) = obj.remove(column) {
                out.insert(field.clone(), x);
            }
        }
        // Fields of the record's own names that a mapping did not replace stay; the rest
        // are meta.
        for (k, x) in obj {
            out.entry(k).or_insert(x);
        }
        // A record with none of the format's fields keeps its own, so the message says what
        // it is (a text record in a chat corpus) rather than that it has no fields.
        if self.only.is_some() && out.keys().any(|k| FIELDS.contains(&k.as_str()) && self.reads(k))
        {
            let unread: Vec<String> = out
                .keys()
                .filter(|k| FIELDS.contains(&k.as_str()) && !self.reads(k))
                .cloned()
                .collect();
            if !unread.is_empty() {
                let mut meta = match out.remove("meta") {
                    Some(Value::Object(m)) => m,
                    Some(other) => Map::from_iter([("meta".to_string(), other)]),
                    None => Map::new(),
                };
                for k in unread {
                    meta.insert(k.clone(), out.remove(&k).expect("present"));
                }
                out.insert("meta".into(), Value::Object(meta));
            }
        }
        Value::Object(out)
    }
}

/// The columns to read: (record field or meta name, column index in the schema).
pub fn select(schema: &Schema, columns: &Columns) -> Result<Vec<(String, usize)>, String> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let index = |c: &str| names.iter().position(|n| *n == c);
    let listing = || {
        let mut l: Vec<String> = names.iter().take(20).map(|n| format!("`{n}`")).collect();
        if names.len() > 20 {
            l.push(format!("… ({} in all)", names.len()));
        }
        l.join(", ")
    };
    let mut out = Vec::new();
    let mapped: Vec<&str> = columns.map.values().map(String::as_str).collect();
    for field in FIELDS.iter().filter(|f| columns.reads(f)) {
        let column = match columns.map.get(*field) {
            Some(c) => c.as_str(),
            None if mapped.contains(field) => continue,
            None => field,
        };
        match index(column) {
            Some(i) => {
                check_type(field, column, schema.field(i).data_type())?;
                out.push((field.to_string(), i));
            }
            None if columns.map.contains_key(*field) => {
                return Err(format!(
                    "no column `{column}` (mapped to `{field}`); the columns are {}",
                    listing()
                ));
            }
            None => {}
        }
    }
    if out.is_empty() {
        let expected = match columns.only {
            Some(only) => format!(
                "expected the format's {}",
                only.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", ")
            ),
            None => "expected `text`, `messages`, `prompt` with `completion`, `prompt`, or `chosen` with `rejected`".to_string(),
        };
        return Err(format!(
            "no column says what the records are: {expected}; the columns are {}\n(map yours with `text_column: NAME` or `columns: {{text: NAME}}`)",
            listing()
        ));
    }
    for m in &columns.meta {
        let i = index(m).ok_or_else(|| {
            format!("no column `{m}` (in `meta_columns`); the columns are {}", listing())
        })?;
        supported(schema.field(i).data_type())
            .map_err(|t| format!("column `{m}` (in `meta_columns`): {t}"))?;
        out.push((m.clone(), i));
    }
    Ok(out)
}

/// Whether a column's type can hold the field, checked before any row is read.
fn check_type(field: &str, column: &str, t: &DataType) -> Result<(), String> {
    let named = if field == column {
        format!("column `{column}`")
    } else {
        format!("column `{column}` (mapped to `{field}`)")
    };
    supported(t).map_err(|e| format!("{named}: {e}"))?;
    let ok = match field {
        "text" => is_string(t),
        "messages" => is_messages(t),
        "prompt" | "completion" | "chosen" | "rejected" => is_string(t) || is_messages(t),
        _ => is_string(t) || t.is_numeric() || matches!(t, DataType::Boolean | DataType::Null),
    };
    if ok {
        return Ok(());
    }
    let want = match field {
        "text" => "a string column",
        "messages" => "a list of {role, content} structs",
        "answer" => "a string, number or boolean column",
        _ => "a string column or a list of {role, content} structs",
    };
    Err(format!("{named} has type {t}: `{field}` must be {want}"))
}

fn is_string(t: &DataType) -> bool {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(_, v) => is_string(v),
        _ => false,
    }
}

fn is_messages(t: &DataType) -> bool {
    let item = match t {
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => f,
        _ => return false,
    };
    match item.data_type() {
        DataType::Struct(fields) => ["role", "content"]
            .iter()
            .all(|k| fields.iter().any(|f| f.name() == k && is_string(f.data_type()))),
        _ => false,
    }
}

/// Whether [`value`] converts a type; the error names the first one it cannot.
fn supported(t: &DataType) -> Result<(), String> {
    use DataType::*;
    match t {
        Null | Boolean | Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64
        | Float32 | Float64 | Utf8 | LargeUtf8 | Utf8View => Ok(()),
        List(f) | LargeList(f) | FixedSizeList(f, _) => supported(f.data_type()),
        Struct(fields) => fields.iter().try_for_each(|f| supported(f.data_type())),
        Dictionary(k, v) if k.is_dictionary_key_type() && is_string(v) => Ok(()),
        other => Err(format!(
            "type {other} is not read by hone (it reads strings, integers, floats, booleans, and lists and structs of them)"
        )),
    }
}

/// One cell as JSON. The type was checked by [`supported`].
fn value(a: &dyn Array, i: usize) -> Value {
    if a.is_null(i) {
        return Value::Null;
    }
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).into(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).into(),
        DataType::Utf8View => a.as_string_view().value(i).into(),
        DataType::Boolean => a.as_boolean().value(i).into(),
        DataType::Int8 => a.as_primitive::<Int8Type>().value(i).into(),
        DataType::Int16 => a.as_primitive::<Int16Type>().value(i).into(),
        DataType::Int32 => a.as_primitive::<Int32Type>().value(i).into(),
        DataType::Int64 => a.as_primitive::<Int64Type>().value(i).into(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).into(),
        DataType::UInt16 => a.as_primitive::<UInt16Type>().value(i).into(),
        DataType::UInt32 => a.as_primitive::<UInt32Type>().value(i).into(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).into(),
        DataType::Float32 => float(f64::from(a.as_primitive::<Float32Type>().value(i))),
        DataType::Float64 => float(a.as_primitive::<Float64Type>().value(i)),
        DataType::List(_) => items(a.as_list::<i32>().value(i).as_ref()),
        DataType::LargeList(_) => items(a.as_list::<i64>().value(i).as_ref()),
        DataType::FixedSizeList(..) => items(a.as_fixed_size_list().value(i).as_ref()),
        DataType::Struct(fields) => {
            let s = a.as_struct();
            Value::Object(
                fields
                    .iter()
                    .zip(s.columns())
                    .map(|(f, c)| (f.name().clone(), value(c.as_ref(), i)))
                    .collect(),
            )
        }
        DataType::Dictionary(..) => {
            let d = a.as_any_dictionary();
            match key(d.keys(), i) {
                Some(k) => value(d.values().as_ref(), k),
                None => Value::Null,
            }
        }
        _ => Value::Null,
    }
}

fn items(a: &dyn Array) -> Value {
    Value::Array((0..a.len()).map(|j| value(a, j)).collect())
}

fn float(x: f64) -> Value {
    Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A dictionary key as an index.
fn key(keys: &dyn Array, i: usize) -> Option<usize> {
    let k = match keys.data_type() {
        DataType::Int8 => keys.as_primitive::<Int8Type>().value(i) as i64,
        DataType::Int16 => keys.as_primitive::<Int16Type>().value(i) as i64,
        DataType::Int32 => keys.as_primitive::<Int32Type>().value(i) as i64,
        DataType::Int64 => keys.as_primitive::<Int64Type>().value(i),
        DataType::UInt8 => keys.as_primitive::<UInt8Type>().value(i) as i64,
        DataType::UInt16 => keys.as_primitive::<UInt16Type>().value(i) as i64,
        DataType::UInt32 => keys.as_primitive::<UInt32Type>().value(i) as i64,
        DataType::UInt64 => i64::try_from(keys.as_primitive::<UInt64Type>().value(i)).ok()?,
        _ => return None,
    };
    usize::try_from(k).ok()
}

/// Where a row is: its Parquet row group (from 0) and its row within it, or its row in an
/// Arrow file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowAt {
    pub group: Option<usize>,
    pub row: u64,
}

impl std::fmt::Display for RowAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.group {
            Some(g) => write!(f, "row group {g}, row {}", thousands(self.row)),
            None => write!(f, "row {}", thousands(self.row)),
        }
    }
}

/// `1204` as `1,204`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The kind of columnar file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableKind {
    Parquet,
    /// Arrow IPC, stream or file format (told by the file's first bytes).
    Arrow,
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>>>;

/// Rows of one columnar file, as JSON objects.
pub struct TableReader {
    batches: Batches,
    /// (name, column index in the batches), from [`select`].
    take: Vec<(String, usize)>,
    /// The first row of each Parquet row group, ascending; empty for Arrow.
    group_starts: Vec<u64>,
    batch: Option<RecordBatch>,
    /// The row of the file that `batch`'s row 0 is.
    batch_start: u64,
    next: usize,
    rows: u64,
    /// Rows in the file, when known, and the file's size, for progress.
    total_rows: Option<u64>,
    file_len: u64,
    reported: u64,
    progress: Arc<AtomicU64>,
}

impl TableReader {
    /// Opens a file and chooses its columns. The error says what is wrong (not a Parquet file,
    /// a missing or unsupported column), without the path: the caller names the file.
    pub fn open(
        path: &Path,
        kind: TableKind,
        columns: &Columns,
        progress: Arc<AtomicU64>,
    ) -> Result<TableReader, String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (batches, take, group_starts, total_rows): (Batches, _, _, _) = match kind {
            TableKind::Parquet => {
                let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                    .map_err(|e| format!("not a readable Parquet file: {e}"))?;
                let picked = select(builder.schema(), columns)?;
                let mut roots: Vec<usize> = picked.iter().map(|(_, i)| *i).collect();
                roots.sort_unstable();
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
                // After projection the columns keep their order in the file.
                let take = picked
                    .into_iter()
                    .map(|(n, i)| (n, roots.iter().position(|r| *r == i).expect("projected")))
                    .collect();
                let mut starts = Vec::new();
                let mut total = 0u64;
                for g in builder.metadata().row_groups() {
                    starts.push(total);
                    total += g.num_rows().max(0) as u64;
                }
                let reader = builder
                    .with_projection(mask)
                    .with_batch_size(BATCH_ROWS)
                    .build()
                    .map_err(|e| format!("cannot read: {e}"))?;
                (Box::new(reader), take, starts, Some(total))
            }
            TableKind::Arrow => {
                let mut file = file;
                let mut magic = [0u8; 6];
                let is_file_format = file.read_exact(&mut magic).is_ok() && &magic == b"ARROW1";
                file.seek(SeekFrom::Start(0)).map_err(|e| format!("cannot read: {e}"))?;
                if is_file_format {
                    let reader = arrow_ipc::reader::FileReader::try_new(file, None)
                        .map_err(|e| format!("not a readable Arrow file: {e}"))?;
                    let take = select(&reader.schema(), columns)?;
                    (Box::new(reader), take, Vec::new(), None)
                } else {
                    let reader = arrow_ipc::reader::StreamReader::try_new(
                        BufReader::with_capacity(1 << 16, file),
                        None,
                    )
                    .map_err(|e| format!("not a readable Arrow IPC stream: {e}"))?;
                    let take = select(&reader.schema(), columns)?;
                    (Box::new(reader), take, Vec::new(), None)
                }
            }
        };
        Ok(TableReader {
            batches,
            take,
            group_starts,
            batch: None,
            batch_start: 0,
            next: 0,
            rows: 0,
            total_rows,
            file_len,
            reported: 0,
            progress,
        })
    }

    fn at(&self, row: u64) -> RowAt {
        if self.group_starts.is_empty() {
            return RowAt { group: None, row };
        }
        let g = self.group_starts.partition_point(|s| *s <= row) - 1;
        RowAt { group: Some(g), row: row - self.group_starts[g] }
    }

    /// The next row, `None` at the end. An `Err` is a file that cannot be decoded further
    /// (where, and what).
    pub fn next_row(&mut self) -> Result<Option<(RowAt, Value)>, (RowAt, String)> {
        loop {
            if let Some(b) = &self.batch
                && self.next < b.num_rows()
            {
                let i = self.next;
                self.next += 1;
                let row = self.batch_start + i as u64;
                let obj: Map<String, Value> = self
                    .take
                    .iter()
                    .map(|(name, c)| (name.clone(), value(b.column(*c).as_ref(), i)))
                    .collect();
                return Ok(Some((self.at(row), Value::Object(obj))));
            }
            if let Some(b) = self.batch.take() {
                self.batch_start += b.num_rows() as u64;
            }
            self.next = 0;
            match self.batches.next() {
                None => {
                    self.report(true);
                    return Ok(None);
                }
                Some(Err(e)) => {
                    return Err((self.at(self.batch_start), format!("cannot decode: {e}")));
                }
                Some(Ok(b)) => {
                    self.rows += b.num_rows() as u64;
                    self.report(false);
                    self.batch = Some(b);
                }
            }
        }
    }

    /// Adds the share of the file read so far to the progress counter (rows over the file's
    /// rows; all of it at the end).
    fn report(&mut self, done: bool) {
        let now = match (done, self.total_rows) {
            (true, _) => self.file_len,
            (false, Some(t)) if t > 0 => {
                (self.file_len as u128 * self.rows as u128 / t as u128) as u64
            }
            _ => self.reported,
        };
        if now > self.reported {
            self.progress.fetch_add(now - self.reported, Ordering::Relaxed);
            self.reported = now;
        }
    }
}

/// Test helpers: Parquet and Arrow files written with the arrow-rs writers.
#[cfg(test)]
pub mod write {
    use std::path::Path;
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
    use arrow_array::{ArrayRef, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field, Fields};
    use parquet::arrow::ArrowWriter;
    use parquet::file::properties::WriterProperties;

    /// A string column.
    pub fn strings<S: AsRef<str>>(values: &[S]) -> ArrayRef {
        Arc::new(StringArray::from_iter_values(values.iter().map(|s| s.as_ref())))
    }

    /// A `messages` column: each row a list of (role, content).
    pub fn messages(rows: &[Vec<(&str, &str)>]) -> ArrayRef {
        let fields = Fields::from(vec![
            Field::new("role", DataType::Utf8, true),
            Field::new("content", DataType::Utf8, true),
        ]);
        let item = StructBuilder::new(
            fields.clone(),
            vec![Box::new(StringBuilder::new()), Box::new(StringBuilder::new())],
        );
        let mut list = ListBuilder::new(item).with_field(Arc::new(Field::new(
            "item",
            DataType::Struct(fields),
            true,
        )));
        for row in rows {
            for (role, content) in row {
                let s = list.values();
                s.field_builder::<StringBuilder>(0).expect("role").append_value(role);
                s.field_builder::<StringBuilder>(1).expect("content").append_value(content);
                s.append(true);
            }
            list.append(true);
        }
        Arc::new(list.finish())
    }

    pub fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).expect("columns of one length")
    }

    /// Writes batches as one Parquet file, `group_rows` rows per row group.
    pub fn parquet(path: &Path, batches: &[RecordBatch], group_rows: usize) {
        let props =
            WriterProperties::builder().set_max_row_group_row_count(Some(group_rows)).build();
        let file = std::fs::File::create(path).expect("create");
        let mut w = ArrowWriter::try_new(file, batches[0].schema(), Some(props)).expect("writer");
        for b in batches {
            w.write(b).expect("write");
        }
        w.close().expect("close");
    }

    /// Writes batches as an Arrow IPC stream (as `datasets`' `save_to_disk` does).
    pub fn arrow_stream(path: &Path, batches: &[RecordBatch]) {
        let file = std::fs::File::create(path).expect("create");
        let mut w =
            arrow_ipc::writer::StreamWriter::try_new(file, &batches[0].schema()).expect("writer");
        for b in batches {
            w.write(b).expect("write");
        }
        w.finish().expect("finish");
    }
}

#[cfg(test)]
mod tests {
    use super::write::*;
    use super::*;
    use arrow_array::{Int64Array, RecordBatch};

    fn rows(
        path: &Path,
        kind: TableKind,
        columns: &Columns,
    ) -> Result<Vec<(RowAt, Value)>, String> {
        let mut r = TableReader::open(path, kind, columns, Default::default())?;
        let mut out = Vec::new();
        while let Some(x) = r.next_row().map_err(|(at, e)| format!("{at}: {e}"))? {
            out.push(x);
        }
        Ok(out)
    }

    #[test]
    fn parquet_rows_with_their_row_groups_and_only_the_chosen_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let texts: Vec<String> = (0..25).map(|i| format!("doc {i}")).collect();
        let b = batch(vec![
            ("text", strings(&texts)),
            ("id", Arc::new(Int64Array::from_iter_values(0..25)) as _),
        ]);
        write::parquet(&path, &[b], 10);
        let got = rows(&path, TableKind::Parquet, &Columns::default()).unwrap();
        assert_eq!(got.len(), 25);
        assert_eq!(got[13].0, RowAt { group: Some(1), row: 3 });
        assert_eq!(got[13].0.to_string(), "row group 1, row 3");
        assert_eq!(got[13].1, serde_json::json!({"text": "doc 13"}));
        let with_meta = Columns { meta: vec!["id".into()], ..Default::default() };
        let got = rows(&path, TableKind::Parquet, &with_meta).unwrap();
        assert_eq!(got[24].1, serde_json::json!({"text": "doc 24", "id": 24}));
    }

    #[test]
    fn messages_columns_become_lists_of_objects_in_arrow_streams_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data-00000-of-00001.arrow");
        let b = batch(vec![(
            "messages",
            messages(&[vec![("user", "hi"), ("assistant", "hello")], vec![("user", "2+2?")]]),
        )]);
        arrow_stream(&path, &[b]);
        let got = rows(&path, TableKind::Arrow, &Columns::default()).unwrap();
        assert_eq!(got[1].0.to_string(), "row 1");
        assert_eq!(
            got[0].1,
            serde_json::json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
        );
    }

    #[test]
    fn mapped_columns_and_what_is_wrong_with_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let b: RecordBatch = batch(vec![
            ("body", strings(&["a", "b"])),
            ("n", Arc::new(Int64Array::from_iter_values(0..2)) as _),
        ]);
        write::parquet(&path, &[b], 100);
        let map = |f: &str, c: &str| Columns {
            map: BTreeMap::from([(f.to_string(), c.to_string())]),
            ..Default::default()
        };
        let got = rows(&path, TableKind::Parquet, &map("text", "body")).unwrap();
        assert_eq!(got[1].1, serde_json::json!({"text": "b"}));
        let e = rows(&path, TableKind::Parquet, &Columns::default()).unwrap_err();
        assert!(
            e.contains("no column says what the records are") && e.contains("`body`, `n`"),
            "{e}"
        );
        let e = rows(&path, TableKind::Parquet, &map("text", "n")).unwrap_err();
        assert_eq!(
            e,
            "column `n` (mapped to `text`) has type Int64: `text` must be a string column"
        );
        let e = rows(&path, TableKind::Parquet, &map("text", "nope")).unwrap_err();
        assert!(e.starts_with("no column `nope` (mapped to `text`)"), "{e}");
        let e = rows(&path, TableKind::Parquet, &map("messages", "body")).unwrap_err();
        assert!(e.contains("must be a list of {role, content} structs"), "{e}");
        // Meta columns must exist and be of a type hone reads.
        let meta = |m: &str| Columns {
            map: BTreeMap::from([("text".to_string(), "body".to_string())]),
            meta: vec![m.to_string()],
            only: None,
        };
        let e = rows(&path, TableKind::Parquet, &meta("nope")).unwrap_err();
        assert!(
            e.starts_with("no column `nope` (in `meta_columns`); the columns are `body`, `n`"),
            "{e}"
        );
        let bin = dir.path().join("bin.parquet");
        write::parquet(
            &bin,
            &[batch(vec![
                ("body", strings(&["a"])),
                ("blob", Arc::new(arrow_array::BinaryArray::from_vec(vec![b"x"])) as _),
            ])],
            100,
        );
        let e = rows(&bin, TableKind::Parquet, &meta("blob")).unwrap_err();
        assert!(
            e.starts_with("column `blob` (in `meta_columns`): type Binary is not read by hone"),
            "{e}"
        );
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let texts: Vec<String> = (0..3000).map(|i| format!("document number {i}")).collect();
        write::parquet(&path, &[batch(vec![("text", strings(&texts))])], 1000);
        let bytes = std::fs::read(&path).unwrap();
        // Not Parquet at all.
        std::fs::write(&path, b"hello").unwrap();
        let e = rows(&path, TableKind::Parquet, &Columns::default()).unwrap_err();
        assert!(e.starts_with("not a readable Parquet file"), "{e}");
        // Pages overwritten in the middle: the footer reads, the data does not.
        let mut broken = bytes.clone();
        let mid = broken.len() / 2;
        for b in &mut broken[mid - 200..mid + 200] {
            *b = 0xA5;
        }
        std::fs::write(&path, &broken).unwrap();
        let e = rows(&path, TableKind::Parquet, &Columns::default()).unwrap_err();
        assert!(e.contains("row group"), "{e}");
        // An Arrow stream cut short.
        let arrow = dir.path().join("t.arrow");
        arrow_stream(&arrow, &[batch(vec![("text", strings(&texts))])]);
        let bytes = std::fs::read(&arrow).unwrap();
        std::fs::write(&arrow, &bytes[..bytes.len() / 2]).unwrap();
        let e = rows(&arrow, TableKind::Arrow, &Columns::default()).unwrap_err();
        assert!(e.contains("cannot decode"), "{e}");
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1204), "1,204");
        assert_eq!(thousands(1234567), "1,234,567");
    }
}
