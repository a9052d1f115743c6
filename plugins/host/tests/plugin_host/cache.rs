//! The precompiled-code cache: a second load does not compile; a damaged entry is rebuilt.

use hone_plugin_host::{CodeSource, Limits, PluginFilter, Verdict};

use crate::common::wasm;

fn cwasm_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

#[test]
fn a_second_load_comes_from_the_cache() {
    let cache = tempfile::tempdir().unwrap();
    let load = || {
        PluginFilter::load(
            &wasm("min_words"),
            r#"{"min_words": 2}"#,
            Limits::default(),
            cache.path(),
        )
        .unwrap()
    };
    let mut first = load();
    assert_eq!(first.load_report().code, CodeSource::Compiled);
    let files = cwasm_files(cache.path());
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().is_some_and(|e| e == "cwasm"));
    let mut second = load();
    assert_eq!(second.load_report().code, CodeSource::Cache);
    assert_eq!(cwasm_files(cache.path()), files);
    assert_eq!(first.filter(&["a b", "a"]).unwrap(), second.filter(&["a b", "a"]).unwrap());
}

#[test]
fn a_corrupted_entry_is_recompiled() {
    let cache = tempfile::tempdir().unwrap();
    let load = || {
        PluginFilter::load(
            &wasm("min_words"),
            r#"{"min_words": 2}"#,
            Limits::default(),
            cache.path(),
        )
        .unwrap()
    };
    load();
    let entry = cwasm_files(cache.path()).remove(0);
    let mut bytes = std::fs::read(&entry).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&entry, &bytes).unwrap();
    let mut f = load();
    assert_eq!(f.load_report().code, CodeSource::Compiled);
    assert_eq!(f.filter(&["a"]).unwrap(), [Verdict::Drop("fewer than 2 words".into())]);
    assert_eq!(load().load_report().code, CodeSource::Cache);
    std::fs::write(&entry, b"short").unwrap();
    assert_eq!(load().load_report().code, CodeSource::Compiled);
}

#[test]
fn config_is_passed_once_per_instance() {
    let limits = Limits { batch_size: 2, ..Limits::default() };
    let mut f = PluginFilter::load(
        &wasm("hostile_counter"),
        r#"{"tag": "t1"}"#,
        limits,
        crate::common::shared_cache(),
    )
    .unwrap();
    let v = f.filter(&["a", "b", "c", "d", "e"]).unwrap();
    let reasons: Vec<_> = v
        .iter()
        .map(|v| match v {
            Verdict::Drop(r) => r.as_str(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [
            "inits=1 batches=1 tag=t1",
            "inits=1 batches=1 tag=t1",
            "inits=1 batches=2 tag=t1",
            "inits=1 batches=2 tag=t1",
            "inits=1 batches=3 tag=t1"
        ]
    );
    let e = PluginFilter::load(
        &wasm("hostile_counter"),
        r#"{"tag": ""}"#,
        limits,
        crate::common::shared_cache(),
    )
    .err()
    .unwrap();
    assert!(
        e.to_string().contains("`tag` must not be empty")
            && e.to_string().contains(r#"config: {"tag": ""}"#),
        "{e}"
    );
}

#[test]
fn plugin_log_lines_reach_tracing_tagged_with_the_plugin() {
    use std::sync::{Arc, Mutex};
    let lines = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || Writer(sink.clone()))
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut f = PluginFilter::load(
            &wasm("hostile_counter"),
            r#"{"tag": "log"}"#,
            Limits::default(),
            crate::common::shared_cache(),
        )
        .unwrap();
        f.filter(&["a", "b"]).unwrap();
    });
    let text = String::from_utf8(lines.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("counter: batch 1 of 2 documents") && text.contains("hostile-counter 0.1.0"),
        "{text}"
    );

    struct Writer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Writer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
