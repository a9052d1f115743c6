//! Hostile plugins fail with a clear error naming the plugin, batch and document; the host
//! survives, and the same `PluginFilter` (or another) keeps working where it can.

use hone_plugin_host::{Call, Limits, PluginError, PluginFilter, Site, Verdict};

use crate::common::{load, load_with, shared_cache, tight};

fn batch_site(e: &PluginError) -> (u64, u64, u64, Option<u64>) {
    match e.site() {
        Some(Site { call: Call::Batch { batch, first, len, doc }, .. }) => {
            (*batch, *first, *len, *doc)
        }
        other => panic!("expected a batch site, got {other:?} in: {e}"),
    }
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let mut f = load_with("hostile_loop", "{}", tight()).unwrap();
    let e = f.filter(&["a", "b", "c"]).unwrap_err();
    assert!(matches!(e, PluginError::CpuLimit { .. }), "{e}");
    assert_eq!(batch_site(&e), (0, 0, 3, None));
    let msg = e.to_string();
    assert!(
        msg.contains("hostile-loop 0.1.0")
            && msg.contains("batch 0 (documents 0..3)")
            && msg.contains("fuel_per_batch"),
        "{msg}"
    );
    // The next batch runs on a fresh instance, and fails the same way (not "cannot enter").
    let e = f.filter(&["d"]).unwrap_err();
    assert!(matches!(e, PluginError::CpuLimit { .. }), "{e}");
    assert_eq!(batch_site(&e), (1, 3, 1, None));
}

#[test]
fn a_memory_bomb_hits_the_memory_limit() {
    let mut f = load_with("hostile_membomb", "{}", tight()).unwrap();
    let e = f.filter(&["x"]).unwrap_err();
    match &e {
        PluginError::MemoryLimit { limit, requested, .. } => {
            assert!(*requested > *limit && *limit == 32 << 20, "{e}")
        }
        _ => panic!("expected a memory-limit error, got: {e}"),
    }
    assert!(e.to_string().contains("memory_bytes"), "{e}");
}

#[test]
fn a_panic_names_the_document_and_the_next_batch_runs() {
    let mut f =
        load_with("hostile_panic", "{}", Limits { batch_size: 4, ..Limits::default() }).unwrap();
    assert_eq!(f.filter(&["fine", "fine"]).unwrap(), [Verdict::Keep, Verdict::Keep]);
    let e = f.filter(&["ok", "ok", "ok", "ok", "ok", "ka-boom", "ok"]).unwrap_err();
    assert!(matches!(e, PluginError::Trap { .. }), "{e}");
    // Documents 0..2 went in the first call; this call's batches are 1 (2..6) and 2 (6..9).
    assert_eq!(batch_site(&e), (2, 6, 3, Some(7)));
    let msg = e.to_string();
    assert!(msg.contains("hostile-panic 0.1.0") && msg.contains("document 7"), "{msg}");
    assert!(
        msg.contains("hostile: cannot stand \"ka-boom\""),
        "the panic message must be shown: {msg}"
    );
    assert!(msg.contains("unreachable"), "{msg}");
    // Poisoned instance replaced: the plugin works again.
    assert_eq!(f.filter(&["fine"]).unwrap(), [Verdict::Keep]);
}

#[test]
fn exit_is_reported_with_its_code() {
    let mut f = load("hostile_panic", "{}").unwrap();
    let e = f.filter(&["ok", "please exit"]).unwrap_err();
    match &e {
        // The plugin calls exit(7); WASI p2's `exit` carries only success or failure.
        PluginError::Exit { code, .. } => assert_eq!(*code, 1),
        _ => panic!("expected exit, got: {e}"),
    }
    assert_eq!(batch_site(&e), (0, 0, 2, Some(1)));
}

#[test]
fn a_plugin_of_another_version_is_refused_at_load() {
    let e = load("hostile_wrong_version", "{}").err().expect("must be refused");
    assert!(matches!(e, PluginError::WrongWorld { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("hone:filter/plugin@0.2.0") && msg.contains("hone:filter/plugin@0.1.0"),
        "{msg}"
    );
}

#[test]
fn a_plugin_with_the_wrong_signature_is_refused_at_load() {
    let e = load("hostile_bad_signature", "{}").err().expect("must be refused");
    match &e {
        PluginError::BadExport { export, .. } => assert_eq!(*export, "filter"),
        _ => panic!("expected a bad export, got: {e}"),
    }
}

#[test]
fn a_plugin_missing_an_export_is_refused_at_load() {
    let e = load("hostile_missing_export", "{}").err().expect("must be refused");
    match &e {
        PluginError::BadExport { export, reason, .. } => {
            assert_eq!((*export, reason.as_str()), ("filter", "is missing"))
        }
        _ => panic!("expected a missing export, got: {e}"),
    }
}

#[test]
fn filesystem_network_and_clock_imports_are_refused_at_load() {
    for (name, wanted) in [
        ("hostile_fs", "wasi:filesystem/"),
        ("hostile_net", "wasi:sockets/tcp"),
        ("hostile_clock", "wasi:clocks/monotonic-clock"),
    ] {
        let e = load(name, "{}").err().unwrap_or_else(|| panic!("{name} must be refused"));
        assert!(matches!(e, PluginError::ForbiddenImport { .. }), "{name}: {e}");
        assert!(e.to_string().contains(wanted), "{name}: {e}");
    }
}

#[test]
fn a_wrong_number_of_verdicts_is_an_error() {
    let mut f = load("hostile_short", "{}").unwrap();
    let e = f.filter(&["a", "b", "c"]).unwrap_err();
    match &e {
        PluginError::VerdictCount { got, expected, .. } => assert_eq!((*got, *expected), (2, 3)),
        _ => panic!("expected a verdict-count error, got: {e}"),
    }
    assert!(e.to_string().contains("batch 0 (documents 0..3)"), "{e}");
}

#[test]
fn files_that_are_not_components_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    let truncated = dir.path().join("truncated.wasm");
    let whole = std::fs::read(crate::common::wasm("min_words")).unwrap();
    std::fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let load = |p: &std::path::Path| {
        PluginFilter::load(p, "{}", Limits::default(), shared_cache()).err().unwrap()
    };
    assert!(matches!(load(&core), PluginError::NotComponent { .. }));
    assert!(matches!(load(&text), PluginError::NotWasm { .. }));
    assert!(matches!(load(&truncated), PluginError::Compile { .. }));
    assert!(matches!(load(&dir.path().join("missing.wasm")), PluginError::Read { .. }));
}

#[test]
fn a_failed_load_caches_nothing() {
    let cache = tempfile::tempdir().unwrap();
    let e = PluginFilter::load(
        &crate::common::wasm("hostile_bad_signature"),
        "{}",
        Limits::default(),
        cache.path(),
    );
    assert!(e.is_err());
    let e = PluginFilter::load(
        &crate::common::wasm("min_words"),
        "{}",
        Limits::default(),
        cache.path(),
    );
    assert!(matches!(e, Err(PluginError::Config { .. })));
    assert_eq!(std::fs::read_dir(cache.path()).map(|d| d.count()).unwrap_or(0), 0);
}
