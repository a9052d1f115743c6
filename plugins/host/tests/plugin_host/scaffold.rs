//! `hone plugin new`'s crate builds as is and works as a plugin.

use hone_plugin_host::{Limits, PluginFilter, Verdict, build_crate, scaffold};

use crate::common::{guest_target_dir, shared_cache};

#[test]
fn a_scaffolded_plugin_builds_as_is_and_filters() {
    let parent = tempfile::tempdir().unwrap();
    let dir = scaffold::create(parent.path(), "my-filter").unwrap();
    assert_eq!(dir, parent.path().join("my-filter"));
    // The guest target dir already holds the dependencies (same versions via the lock file).
    let built = build_crate(&dir, false, Some(&guest_target_dir())).unwrap();
    assert_eq!(built.len(), 1, "{built:?}");
    assert_eq!(built[0].name, "my_filter");
    let mut f = PluginFilter::load(
        &built[0].wasm,
        r#"{"max_chars": 5}"#,
        Limits::default(),
        shared_cache(),
    )
    .unwrap();
    assert_eq!((f.name(), f.version()), ("my-filter", "0.1.0"));
    let v = f.filter(&["hello", "hello world", "  "]).unwrap();
    assert_eq!(
        v,
        [
            Verdict::Keep,
            Verdict::Drop("longer than 5 characters".into()),
            Verdict::Drop("empty".into())
        ]
    );
}

#[test]
fn the_scaffold_refuses_bad_names_and_existing_crates() {
    let parent = tempfile::tempdir().unwrap();
    for bad in ["9lives", "has space", "", "hone-filter-sdk", "../escape"] {
        let e = scaffold::create(parent.path(), bad)
            .err()
            .unwrap_or_else(|| panic!("`{bad}` must be refused"));
        assert!(e.to_string().contains("cannot create plugin crate"), "{e}");
    }
    scaffold::create(parent.path(), "twice").unwrap();
    let e = scaffold::create(parent.path(), "twice")
        .expect_err("an existing crate must not be overwritten");
    assert!(e.to_string().contains("not empty"), "{e}");
}
