//! WASM filter plugins in pipelines: the plugin's digest is in the key, failures are clear,
//! and `hone plugin new` scaffolds a crate.

use crate::support::{Ws, ids};

fn dist(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist").join(name)
}

/// A corpus filtered by a plugin, a tokenizer on it, and an unrelated stage.
fn pipeline(ws: &Ws, with: &str) {
    let docs: String = (0..40)
        .map(|i| format!("{{\"text\": \"document number {i} has some words in it\"}}\n"))
        .collect();
    ws.write("docs.jsonl", &(docs + "{\"text\": \"too short\"}\n"));
    ws.write(
        "pipeline.yaml",
        &format!(
            "stages:\n  corpus:\n    uses: ingest\n    with: {{ source: docs.jsonl }}\n    filters:\n      - wasm: plugin.wasm\n        with: {with}\n  tok:\n    uses: tokenizer\n    inputs: {{ corpus: corpus }}\n    with: {{ kind: char }}\n  other:\n    uses: command\n    with: {{ cmd: \"echo hi > $HONE_OUT/x\" }}\n"
        ),
    );
    std::fs::copy(dist("min-words.wasm"), ws.path().join("plugin.wasm")).unwrap();
}

/// Append a custom section: a different file (new digest) that filters the same way.
fn edit_plugin(ws: &Ws) {
    let p = ws.path().join("plugin.wasm");
    let mut bytes = std::fs::read(&p).unwrap();
    bytes.extend_from_slice(&[0x00, 0x06, 0x01, b'x', b'e', b'd', b'i', b't']);
    std::fs::write(&p, bytes).unwrap();
}

#[test]
fn a_plugin_filters_and_editing_it_reruns_only_its_stage() {
    let ws = Ws::new();
    pipeline(&ws, "{ min_words: 4 }");
    let out = ws.hone(&["run"]).ok();
    assert!(
        out.stderr.contains("filter.wasm:plugin: dropped=1 kept=40 reasons.fewer than 4 words=1"),
        "{}",
        out.stderr
    );
    edit_plugin(&ws);
    let plan = ws.hone(&["plan", "--json"]).ok().plan();
    assert_eq!(plan[0].0, "corpus");
    assert_eq!(plan[0].1, "run");
    assert_eq!(plan[0].2, ["plugin `plugin.wasm` changed"]);
    let out = ws.hone(&["run"]).ok();
    assert_eq!(out.ran(), ids(&["corpus"]));
    // Same verdicts, same corpus bytes: the tokenizer stays cached (early cutoff).
    assert_eq!(out.cached(), ids(&["other", "tok"]));
}

#[test]
fn a_failing_plugin_fails_its_stage_clearly_and_caches_nothing_for_it() {
    let ws = Ws::new();
    pipeline(&ws, "{ min_words: 4 }");
    ws.hone(&["run", "--only", "other"]).ok();
    let before = ws.objects();
    let out = ws.hone(&["run", "-s", "stages.corpus.filters.0.with.min_words=lots"]).code(1);
    assert!(out.stderr.contains("FAILED  corpus"), "{}", out.stderr);
    assert!(out.stderr.contains("min-words"), "names the plugin: {}", out.stderr);
    assert!(out.stderr.contains("skipped tok"), "{}", out.stderr);
    assert_eq!(out.cached(), ids(&["other"]));
    assert_eq!(ws.objects(), before);
}

#[test]
fn a_file_that_is_not_a_component_is_refused() {
    let ws = Ws::new();
    pipeline(&ws, "{ min_words: 4 }");
    ws.write("plugin.wasm", "not wasm at all");
    let out = ws.hone(&["run", "--until", "corpus"]).code(1);
    assert!(
        out.stderr.contains("FAILED  corpus") && out.stderr.contains("plugin.wasm"),
        "{}",
        out.stderr
    );
}

/// The README's `hone plugin new my-filter` (plugin_host's scaffold test builds such a crate).
#[test]
fn plugin_new_scaffolds_a_crate() {
    let ws = Ws::new();
    ws.hone(&["plugin", "new", "my-filter"]).ok();
    assert!(ws.path().join("my-filter/Cargo.toml").exists());
    assert!(ws.read("my-filter/src/lib.rs").contains("export_filter!"));
    ws.hone(&["plugin", "new", "my-filter"]).code(4);
}
