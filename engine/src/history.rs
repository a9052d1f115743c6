//! Run history: every `hone run` leaves a [`RunRecord`] in the store (`history/<id>.json`):
//! when, the pipeline file and its digest, the git commit it sat in, the overrides, and each
//! selected stage's outcome, key, params and final metrics, and a line in `history/index.jsonl`
//! ([`Summary`]). [`summaries`] lists runs from the index (one small file however many runs);
//! [`list`] reads every record; [`diff`] says what differs between two runs: params, keys,
//! outcomes, metrics.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::files::{StoreError, io_at, write_atomic};

/// One `hone run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `YYYYMMDDTHHMMSS.mmm-<pid>`: sorts by start time.
    pub id: String,
    pub pipeline: String,
    /// The pipeline file, as given.
    pub file: String,
    /// The pipeline file's digest (blake3, hex).
    pub file_digest: String,
    /// The git commit of the work tree the pipeline file sat in, if any (`-dirty` when the
    /// tree had changes).
    pub git: Option<String>,
    pub started_unix_ms: u64,
    pub finished_unix_ms: u64,
    /// The `-s KEY=VALUE` overrides, in order.
    pub overrides: Vec<String>,
    pub seed: u64,
    /// `ok`, `failed`, `interrupted` or `awaiting`.
    pub outcome: String,
    pub stages: BTreeMap<String, StageRun>,
}

/// A stage in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRun {
    pub kind: String,
    /// `ran`, `cached`, `failed` or `skipped`.
    pub outcome: String,
    pub key: Option<String>,
    /// The params as they entered the key (canonical JSON).
    pub params: Value,
    /// The stage's final metrics (from its artifact's record).
    #[serde(default)]
    pub metrics: BTreeMap<String, Value>,
}

fn dir(store_root: &Path) -> PathBuf {
    store_root.join("history")
}

/// A run in a line: what `hone runs` shows, kept in `history/index.jsonl` so that listing
/// reads one small file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub pipeline: String,
    pub outcome: String,
    pub ran: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
    pub overrides: Vec<String>,
}

impl RunRecord {
    pub fn summary(&self) -> Summary {
        let count = |what: &str| self.stages.values().filter(|s| s.outcome == what).count();
        Summary {
            id: self.id.clone(),
            pipeline: self.pipeline.clone(),
            outcome: self.outcome.clone(),
            ran: count("ran"),
            cached: count("cached"),
            failed: count("failed"),
            skipped: count("skipped"),
            overrides: self.overrides.clone(),
        }
    }
}

const INDEX: &str = "index.jsonl";

/// Writes `run` to the store at `store_root` (`history/<id>.json`, and its line in the index).
pub fn record(store_root: &Path, run: &RunRecord) -> Result<PathBuf, StoreError> {
    use std::io::Write;
    let d = dir(store_root);
    fs::create_dir_all(&d).map_err(io_at(&d))?;
    let path = d.join(format!("{}.json", run.id));
    write_atomic(&path, &serde_json::to_vec(run).expect("a run record serialises"))?;
    // One write of one line with O_APPEND: lines of concurrent runs do not interleave.
    let mut line = serde_json::to_vec(&run.summary()).expect("a summary serialises");
    line.push(b'\n');
    let index = d.join(INDEX);
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&index)
        .and_then(|mut f| f.write_all(&line))
        .map_err(io_at(&index))?;
    Ok(path)
}

/// The ids of every recorded run, oldest first.
pub fn ids(store_root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir(store_root)) else { return Vec::new() };
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The record of run `id`.
pub fn load(store_root: &Path, id: &str) -> Result<RunRecord, String> {
    let path = dir(store_root).join(format!("{id}.json"));
    let bytes = fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| format!("`{}` is not a run record: {e}", path.display()))
}

/// Every recorded run, oldest first; unreadable records are skipped with a warning.
pub fn list(store_root: &Path) -> Vec<RunRecord> {
    use rayon::prelude::*;
    ids(store_root)
        .par_iter()
        .filter_map(|id| {
            load(store_root, id).map_err(|e| tracing::warn!("skipping a run record: {e}")).ok()
        })
        .collect()
}

/// Every recorded run in a line, oldest first: from the index, and from the record itself
/// for a run the index lacks.
pub fn summaries(store_root: &Path) -> Vec<Summary> {
    let mut by_id: BTreeMap<String, Summary> = fs::read(dir(store_root).join(INDEX))
        .map(|b| {
            b.split(|&c| c == b'\n')
                .filter_map(|l| serde_json::from_slice::<Summary>(l).ok())
                .map(|s| (s.id.clone(), s))
                .collect()
        })
        .unwrap_or_default();
    let ids = ids(store_root);
    by_id.retain(|id, _| ids.binary_search(id).is_ok());
    for id in &ids {
        if !by_id.contains_key(id) {
            match load(store_root, id) {
                Ok(r) => {
                    by_id.insert(id.clone(), r.summary());
                }
                Err(e) => tracing::warn!("skipping a run record: {e}"),
            }
        }
    }
    by_id.into_values().collect()
}

/// The run `which` names among `ids` (oldest first): an id or a unique prefix of one, or
/// `-N` (the N-th newest: `-1` the last).
pub fn find<'r>(ids: &'r [String], which: &str) -> Result<&'r str, String> {
    if let Some(n) = which.strip_prefix('-').and_then(|n| n.parse::<usize>().ok()) {
        return ids
            .len()
            .checked_sub(n)
            .filter(|_| n > 0)
            .map(|i| ids[i].as_str())
            .ok_or(format!("there are {} recorded runs, so no run `{which}`", ids.len()));
    }
    let hits: Vec<&String> = ids.iter().filter(|id| id.starts_with(which)).collect();
    match hits.as_slice() {
        [one] => Ok(one.as_str()),
        [] => Err(format!("no recorded run `{which}`")),
        many => Err(format!(
            "`{which}` names {} runs ({} …): give more of the id",
            many.len(),
            many.iter().take(3).map(|id| id.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// What differs between runs `a` and `b`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub a: String,
    pub b: String,
    /// (what, a, b): the pipeline file, its digest, git commit, seed, overrides.
    pub run: Vec<(String, Value, Value)>,
    /// (stage, param path, a, b); a missing value is null.
    pub params: Vec<(String, String, Value, Value)>,
    /// (stage, a's key, b's key): the stages whose key differs (or that one run lacks).
    pub keys: Vec<(String, Option<String>, Option<String>)>,
    /// (stage, metric, a, b) for every metric that differs.
    pub metrics: Vec<(String, String, Value, Value)>,
}

/// Flattens nested JSON objects into `a.b.c` paths (after `prefix`, when not empty).
pub fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&p, v, out);
            }
        }
        _ => {
            out.insert(prefix.to_string(), v.clone());
        }
    }
}

/// The entries of `a` and `b` that differ (a missing one is null), by name.
fn changed(
    a: &BTreeMap<String, Value>,
    b: &BTreeMap<String, Value>,
) -> Vec<(String, Value, Value)> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names
        .into_iter()
        .filter_map(|n| {
            let (x, y) = (a.get(n), b.get(n));
            (x != y).then(|| {
                (n.clone(), x.cloned().unwrap_or(Value::Null), y.cloned().unwrap_or(Value::Null))
            })
        })
        .collect()
}

pub fn diff(a: &RunRecord, b: &RunRecord) -> Diff {
    let mut run = Vec::new();
    let mut field = |what: &str, x: Value, y: Value| {
        if x != y {
            run.push((what.to_string(), x, y));
        }
    };
    field("file", a.file.clone().into(), b.file.clone().into());
    field("file_digest", a.file_digest.clone().into(), b.file_digest.clone().into());
    field("git", a.git.clone().into(), b.git.clone().into());
    field("seed", a.seed.into(), b.seed.into());
    field("overrides", a.overrides.clone().into(), b.overrides.clone().into());
    let (mut params, mut keys, mut metrics) = (Vec::new(), Vec::new(), Vec::new());
    let ids: std::collections::BTreeSet<&String> = a.stages.keys().chain(b.stages.keys()).collect();
    for id in ids {
        let (sa, sb) = (a.stages.get(id), b.stages.get(id));
        let key = |s: Option<&StageRun>| s.and_then(|s| s.key.clone());
        if key(sa) != key(sb) || sa.is_none() != sb.is_none() {
            keys.push((id.clone(), key(sa), key(sb)));
        }
        let flat = |s: Option<&StageRun>| {
            let mut m = BTreeMap::new();
            if let Some(s) = s {
                flatten("", &s.params, &mut m);
            }
            m
        };
        let empty = BTreeMap::new();
        let (ma, mb) = (sa.map_or(&empty, |s| &s.metrics), sb.map_or(&empty, |s| &s.metrics));
        for (path, x, y) in changed(&flat(sa), &flat(sb)) {
            params.push((id.clone(), path, x, y));
        }
        for (name, x, y) in changed(ma, mb) {
            metrics.push((id.clone(), name, x, y));
        }
    }
    Diff { a: a.id.clone(), b: b.id.clone(), run, params, keys, metrics }
}

/// A run id for a run that started at `unix_ms`, in process `pid`.
pub fn run_id(unix_ms: u64, pid: u32) -> String {
    let c = crate::time::civil(unix_ms / 1000);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}-{pid}",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(id: &str, lr: f64, key: &str, loss: f64) -> RunRecord {
        let stage = |kind: &str, params: Value, key: &str, metrics: Value| StageRun {
            kind: kind.into(),
            outcome: "ran".into(),
            key: Some(key.into()),
            params,
            metrics: serde_json::from_value(metrics).unwrap(),
        };
        RunRecord {
            id: id.into(),
            pipeline: "p".into(),
            file: "p.yaml".into(),
            file_digest: "d".into(),
            git: None,
            started_unix_ms: 0,
            finished_unix_ms: 1,
            overrides: vec![format!("stages.train.with.lr={lr}")],
            seed: 1,
            outcome: "ok".into(),
            stages: [
                ("data".to_string(), stage("ingest", json!({"source": "a.txt"}), "k0", json!({}))),
                (
                    "train".to_string(),
                    stage(
                        "pretrain",
                        json!({"lr": lr, "opt": {"beta1": 0.9}}),
                        key,
                        json!({"loss": loss}),
                    ),
                ),
            ]
            .into(),
        }
    }

    #[test]
    fn records_round_trip_and_list_oldest_first_skipping_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            run("20261204T100000.000-1", 1e-3, "k1", 2.0),
            run("20261204T110000.000-2", 3e-3, "k2", 1.5),
        );
        record(dir.path(), &b).unwrap();
        record(dir.path(), &a).unwrap();
        assert_eq!(summaries(dir.path()), vec![a.summary(), b.summary()]);
        fs::write(dir.path().join("history/zz-broken.json"), "{").unwrap();
        assert_eq!(list(dir.path()), vec![a.clone(), b.clone()]);
        assert!(list(&dir.path().join("nowhere")).is_empty());
        // A record the index lacks is summarised from itself; an index line without a record
        // is left out.
        let mut c = a.clone();
        c.id = "20261204T120000.000-3".into();
        fs::write(
            dir.path().join(format!("history/{}.json", c.id)),
            serde_json::to_vec(&c).unwrap(),
        )
        .unwrap();
        fs::remove_file(dir.path().join(format!("history/{}.json", a.id))).unwrap();
        assert_eq!(summaries(dir.path()), vec![b.summary(), c.summary()]);
        assert_eq!(b.summary().ran, 2);
        let ids = ids(dir.path());
        assert_eq!(find(&ids, "-1").unwrap(), "zz-broken");
        assert_eq!(find(&ids, "-3").unwrap(), b.id);
        assert_eq!(find(&ids, "20261204T11").unwrap(), b.id);
        assert!(find(&ids, "-4").unwrap_err().contains("there are 3 recorded runs"));
        assert!(find(&ids, "-0").is_err());
        assert!(find(&ids, "2026").unwrap_err().contains("names 2 runs"));
        assert!(find(&ids, "1999").unwrap_err().contains("no recorded run"));
        assert!(load(dir.path(), "zz-broken").unwrap_err().contains("not a run record"));
    }

    #[test]
    fn a_diff_shows_params_keys_and_metrics_that_moved_and_nothing_else() {
        let (a, b) = (run("a", 1e-3, "k1", 2.0), run("b", 3e-3, "k2", 1.5));
        let d = diff(&a, &b);
        assert_eq!(d.params, vec![("train".into(), "lr".into(), json!(1e-3), json!(3e-3))]);
        assert_eq!(d.keys, vec![("train".into(), Some("k1".into()), Some("k2".into()))]);
        assert_eq!(d.metrics, vec![("train".into(), "loss".into(), json!(2.0), json!(1.5))]);
        assert_eq!(d.run.len(), 1, "only the overrides differ: {:?}", d.run);
        let same = diff(&a, &a);
        assert!(same.params.is_empty() && same.keys.is_empty() && same.metrics.is_empty());
        // A stage only one run has: its key and every param and metric, against null.
        let mut c = b.clone();
        c.stages.remove("data");
        let d = diff(&a, &c);
        assert!(d.keys.contains(&("data".into(), Some("k0".into()), None)));
        assert!(d.params.contains(&("data".into(), "source".into(), json!("a.txt"), Value::Null)));
    }

    #[test]
    fn run_ids_sort_by_time() {
        assert_eq!(run_id(0, 7), "19700101T000000.000-7");
        assert_eq!(run_id(1_796_000_000_123, 42), "20261130T005320.123-42");
        assert!(run_id(1_796_000_000_123, 9) < run_id(1_796_000_001_000, 1));
    }
}
