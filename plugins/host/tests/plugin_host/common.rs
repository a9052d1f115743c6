//! Shared helpers: the guest build (once per test run) and loading with test limits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hone_plugin_host::{Limits, PluginError, PluginFilter, build_crate};

/// `plugins/`, the guest workspace.
pub fn plugins_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("plugins/host has a parent").to_path_buf()
}

/// The guest workspace's target directory, reused by every build in the tests.
pub fn guest_target_dir() -> PathBuf {
    plugins_dir().join("target")
}

/// Every guest component by library name (`min_words`, `hostile_loop`, ...), built once.
pub fn guests() -> &'static HashMap<String, PathBuf> {
    static GUESTS: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    GUESTS.get_or_init(|| {
        let built = build_crate(&plugins_dir(), true, None)
            .unwrap_or_else(|e| panic!("building the guest workspace: {e}"));
        built.into_iter().map(|b| (b.name, b.wasm)).collect()
    })
}

pub fn wasm(name: &str) -> PathBuf {
    guests()
        .get(name)
        .unwrap_or_else(|| panic!("no guest component `{name}` in {:?}", guests().keys()))
        .clone()
}

/// A code cache shared by the tests that do not test the cache itself, so each component
/// compiles once per run.
pub fn shared_cache() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir")).path()
}

pub fn load(name: &str, config: &str) -> Result<PluginFilter, PluginError> {
    load_with(name, config, Limits::default())
}

pub fn load_with(name: &str, config: &str, limits: Limits) -> Result<PluginFilter, PluginError> {
    PluginFilter::load(&wasm(name), config, limits, shared_cache())
}

/// Limits small enough that hostile plugins fail fast.
pub fn tight() -> Limits {
    Limits {
        memory_bytes: 32 << 20,
        fuel_per_batch: 20_000_000,
        fuel_per_byte: 1_000,
        batch_size: 64,
    }
}
