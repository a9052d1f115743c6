//! `ingest` on datasets as they ship: Parquet files and HF `datasets` folders (written here
//! with the arrow-rs writers, as pyarrow and `save_to_disk` write them), alone or mixed with
//! JSONL; column mappings; and what goes wrong with them.

use std::path::Path;
use std::sync::Arc;

use arrow_array::Int64Array;
use serde_json::{Value, json};

use crate::data::columnar::write::{self, batch, messages, strings};
use crate::testing::support;

fn run(dir: &Path, with: &str) -> Result<Vec<Value>, String> {
    let yaml =
        format!("name: t\nseed: 3\nstages:\n  corpus:\n    uses: ingest\n    with: {with}\n");
    let pipeline = support::load(dir, &yaml)?;
    let (summary, _) = support::run(dir, &pipeline, support::quiet);
    if let Some((_, e, _)) = summary.failed.first() {
        return Err(e.clone());
    }
    let out = support::output(dir, &pipeline, "corpus");
    let mut records = Vec::new();
    for f in ["train.jsonl", "val.jsonl"] {
        for l in std::fs::read_to_string(out.join(f)).unwrap().lines() {
            records.push(serde_json::from_str(l).unwrap());
        }
    }
    records.push(
        serde_json::from_str(&std::fs::read_to_string(out.join("meta.json")).unwrap()).unwrap(),
    );
    Ok(records)
}

/// A `save_to_disk` folder: `dataset_dict.json`, and per split `state.json` and its Arrow
/// stream files.
type Conversation = Vec<(&'static str, &'static str)>;

fn datasets_folder(dir: &Path, splits: &[(&str, Vec<Conversation>)]) {
    let names: Vec<&str> = splits.iter().map(|(n, _)| *n).collect();
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("dataset_dict.json"), json!({ "splits": names }).to_string()).unwrap();
    for (name, rows) in splits {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        // Two shards, as a large split has.
        let half = rows.len() / 2;
        let mut files = Vec::new();
        for (i, part) in [&rows[..half], &rows[half..]].into_iter().enumerate() {
            let f = format!("data-0000{i}-of-00002.arrow");
            write::arrow_stream(&d.join(&f), &[batch(vec![("messages", messages(part))])]);
            files.push(json!({ "filename": f }));
        }
        std::fs::write(
            d.join("state.json"),
            json!({ "_data_files": files, "_split": name }).to_string(),
        )
        .unwrap();
        std::fs::write(d.join("dataset_info.json"), "{}").unwrap();
    }
}

fn chat(i: usize) -> Conversation {
    const Q: [&str; 4] = ["Hi", "What is 2 plus 2?", "Name a colour.", "Bye"];
    const A: [&str; 4] = ["Hello!", "4", "Blue.", "Goodbye!"];
    vec![("user", Q[i % 4]), ("assistant", A[i % 4])]
}

#[test]
fn parquet_and_a_datasets_folder_mixed_with_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    // 10 conversations in row groups of 4, each with a distinct system turn.
    let rows: Vec<Vec<(String, String)>> = (0..10)
        .map(|i| {
            let mut m = vec![("system".to_string(), format!("You are bot {i}."))];
            m.extend(chat(i).into_iter().map(|(r, c)| (r.to_string(), c.to_string())));
            m
        })
        .collect();
    let borrowed: Vec<Vec<(&str, &str)>> =
        rows.iter().map(|m| m.iter().map(|(r, c)| (r.as_str(), c.as_str())).collect()).collect();
    std::fs::create_dir(p.join("data")).unwrap();
    write::parquet(
        &p.join("data/chat.parquet"),
        &[batch(vec![("messages", messages(&borrowed))])],
        4,
    );
    let train: Vec<_> = (0..6).map(|i| chat(i + 10)).collect();
    let test: Vec<_> = (0..3).map(|i| chat(i + 20)).collect();
    datasets_folder(&p.join("hf"), &[("train", train), ("test", test)]);
    std::fs::write(
        p.join("more.jsonl"),
        r#"{"messages": [{"role": "user", "content": "Extra?"}, {"role": "assistant", "content": "Yes."}]}"#,
    )
    .unwrap();

    let out = run(p, "{ source: [data/chat.parquet, hf, more.jsonl], val_fraction: 0 }").unwrap();
    let meta = out.last().unwrap();
    assert_eq!(meta["format"], "chat");
    assert_eq!(
        meta["sources"],
        json!([
            {"source": "data/chat.parquet", "records": 10},
            {"source": "hf/train/data-00000-of-00002.arrow", "records": 3},
            {"source": "hf/train/data-00001-of-00002.arrow", "records": 3},
            {"source": "more.jsonl", "records": 1},
        ])
    );
    assert_eq!(
        out[9]["messages"],
        json!([
            {"role": "system", "content": "You are bot 9."},
            {"role": "user", "content": "What is 2 plus 2?"},
            {"role": "assistant", "content": "4"}
        ])
    );
    // The split is chosen by name; one that is not there lists those that are.
    let out = run(p, "{ source: hf, split: test, val_fraction: 0 }").unwrap();
    assert_eq!(out.last().unwrap()["records"], 3);
    let e = run(p, "{ source: hf, split: validation }").unwrap_err();
    assert!(e.contains("no split `validation`; its splits are `train`, `test`"), "{e}");
    // A split's own folder is a source too.
    let out = run(p, "{ source: hf/test, val_fraction: 0 }").unwrap();
    assert_eq!(out.last().unwrap()["records"], 3);
    // A folder missing a shard that `state.json` lists.
    std::fs::remove_file(p.join("hf/test/data-00001-of-00002.arrow")).unwrap();
    let e = run(p, "{ source: hf, split: test }").unwrap_err();
    assert!(e.contains("lists `data-00001-of-00002.arrow`, which is missing"), "{e}");
    // A plain folder: not a dataset.
    let e = run(p, "{ source: data }").unwrap_err();
    assert!(e.contains("not an HF `datasets` folder") && e.contains("data/*.parquet"), "{e}");
}

#[test]
fn columns_map_onto_record_fields_in_parquet_and_jsonl_alike() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    write::parquet(
        &p.join("prefs.parquet"),
        &[batch(vec![
            ("question", strings(&["Sky?", "2+2?", "Hi"])),
            ("good", strings(&["Blue.", "4", "Hello"])),
            ("bad", strings(&["Green.", "5", "Hello"])),
            ("id", Arc::new(Int64Array::from_iter_values([7, 8, 9])) as _),
            ("ignored", strings(&["x", "y", "z"])),
        ])],
        100,
    );
    let with = "{ source: prefs.parquet, columns: { prompt: question, chosen: good, rejected: bad }, meta_columns: [id], format: preference, val_fraction: 0 }";
    let out = run(p, with).unwrap();
    assert_eq!(
        out[0],
        json!({"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green.", "meta": {"id": 7}})
    );
    assert_eq!(out.len(), 3, "two pairs and meta.json: the identical pair is left out");
    assert_eq!(out[2]["unusable"], 1);
    // The same mapping reads a JSONL file.
    std::fs::write(
        p.join("prefs.jsonl"),
        r#"{"question": "Sky?", "good": "Blue.", "bad": "Green.", "id": 7}"#,
    )
    .unwrap();
    let out =
        run(p, &with.replace("prefs.parquet", "prefs.jsonl").replace(", meta_columns: [id]", ""))
            .unwrap();
    assert_eq!(
        out[0],
        json!({"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green.", "meta": {"id": 7}})
    );
    // A fixed format reads its own fields: the prompts of a preference file, for PPO.
    let out = run(
        p,
        "{ source: prefs.parquet, columns: { prompt: question }, format: prompt, val_fraction: 0 }",
    )
    .unwrap();
    assert_eq!(out[0], json!({"prompt": "Sky?"}));
    let out = run(
        p,
        "{ source: prefs.jsonl, columns: { prompt: question }, format: prompt, val_fraction: 0 }",
    )
    .unwrap();
    assert_eq!(
        out[0],
        json!({"prompt": "Sky?", "meta": {"id": 7, "good": "Blue.", "bad": "Green."}})
    );
    std::fs::write(
        p.join("trl.jsonl"),
        r#"{"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}"#,
    )
    .unwrap();
    let out = run(p, "{ source: trl.jsonl, format: prompt, val_fraction: 0 }").unwrap();
    assert_eq!(
        out[0],
        json!({"prompt": "Sky?", "meta": {"chosen": "Blue.", "rejected": "Green."}})
    );
    // ... and of implicit-prompt pairs, whose prompt is their shared beginning.
    std::fs::write(
        p.join("implicit.jsonl"),
        r#"{"chosen": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Blue."}], "rejected": [{"role": "user", "content": "Sky?"}, {"role": "assistant", "content": "Red."}]}"#,
    )
    .unwrap();
    let out = run(p, "{ source: implicit.jsonl, format: prompt, val_fraction: 0 }").unwrap();
    assert_eq!(out[0], json!({"prompt": "Sky?"}));
    // `text_column`.
    write::parquet(
        &p.join("web.parquet"),
        &[batch(vec![("content", strings(&["one doc", "two doc"]))])],
        100,
    );
    let out = run(p, "{ source: web.parquet, text_column: content, val_fraction: 0 }").unwrap();
    assert_eq!(out[1], json!({"text": "two doc"}));
    // Mapping problems are load errors at the param.
    for (with, want) in [
        ("{ source: web.parquet, columns: { body: content } }", "`body` is not a record field"),
        (
            "{ source: web.parquet, text_column: a, columns: { text: b } }",
            "both `text_column` and `columns.text`",
        ),
        ("{ source: web.parquet, meta_columns: [text] }", "`text` is a record field, not meta"),
        (
            "{ source: web.parquet, format: prompt, columns: { chosen: a } }",
            "`chosen` is not a field of the `prompt` format",
        ),
    ] {
        let e =
            support::load(p, &format!("name: t\nstages:\n  c: {{ uses: ingest, with: {with} }}\n"))
                .map(|_| ())
                .unwrap_err();
        assert!(e.contains(want), "{with}: {e}");
    }
}

#[test]
fn bad_data_names_the_file_row_group_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let mut rows: Vec<Vec<(&str, &str)>> = (0..8).map(chat).collect();
    rows[5] = vec![("bot", "beep")];
    write::parquet(&p.join("bad.parquet"), &[batch(vec![("messages", messages(&rows))])], 2);
    let e = run(p, "{ source: bad.parquet }").unwrap_err();
    assert!(e.starts_with("bad.parquet: row group 2, row 1: `messages[0].role` is `bot`"), "{e}");
    // Skipped and counted when asked.
    let out = run(p, "{ source: bad.parquet, on_error: skip }").unwrap();
    assert_eq!(out.last().unwrap()["skipped"], 1);
    // A column of the wrong type, before any row is read.
    write::parquet(
        &p.join("ints.parquet"),
        &[batch(vec![("text", Arc::new(Int64Array::from_iter_values(0..3)) as _)])],
        100,
    );
    let e = run(p, "{ source: ints.parquet }").unwrap_err();
    assert_eq!(
        e,
        "source `ints.parquet`: column `text` has type Int64: `text` must be a string column"
    );
    // Not Parquet at all, and Parquet compressed again.
    std::fs::write(p.join("fake.parquet"), "just text").unwrap();
    let e = run(p, "{ source: fake.parquet }").unwrap_err();
    assert!(e.starts_with("source `fake.parquet`: not a readable Parquet file"), "{e}");
    std::fs::write(p.join("x.parquet.gz"), "").unwrap();
    let e = run(p, "{ source: x.parquet.gz }").unwrap_err();
    assert!(e.contains("compress their own columns"), "{e}");
}
