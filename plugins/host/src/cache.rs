//! The shared wasmtime [`Engine`] and the precompiled-code cache.
//!
//! Compiling a component takes 50–500 ms; loading its precompiled form takes under a
//! millisecond. A cache entry is `<cache_dir>/<key>.cwasm`, with key = blake3 of the
//! component's digest, the engine's compatibility hash (wasmtime version, target, compiler
//! flags, fuel and other settings that change the generated code) and this file's format
//! version. The file is `MAGIC`, blake3 of the payload, then wasmtime's serialized component;
//! a truncated or corrupted file fails the check and is recompiled and rewritten.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use crate::PluginError;
use crate::sandbox::{self, Sandbox};

const MAGIC: &[u8; 8] = b"HONECW01";

/// The one engine (and linker) all plugins share: settings are fixed, so precompiled code
/// made by one run fits the next.
pub(crate) struct Host {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<Sandbox>,
}

pub(crate) fn host() -> Result<&'static Host, PluginError> {
    static HOST: OnceLock<Result<Host, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Fuel, not epochs: it counts work, not time, so a batch that passes the CPU bound
        // passes it on every machine.
        config.consume_fuel(true);
        // No DWARF lookups (and no environment variable deciding that): traps name guest
        // functions from the name section.
        config.wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Disable);
        let engine = Engine::new(&config).map_err(|e| e.to_string())?;
        let linker = sandbox::linker(&engine).map_err(|e| e.to_string())?;
        Ok(Host { engine, linker })
    })
    .as_ref()
    .map_err(|reason| PluginError::Engine { reason: reason.clone() })
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeSource {
    /// Loaded from the precompiled cache: no compilation.
    Cache,
    /// Compiled now (and written to the cache once the plugin loaded fine).
    Compiled,
}

/// A compiled component and what to do to cache it.
pub(crate) struct Loaded {
    pub(crate) component: Component,
    pub(crate) source: CodeSource,
    pub(crate) took: Duration,
    /// Serialized code to write to `entry` once the plugin has loaded successfully.
    pending: Option<(PathBuf, Vec<u8>)>,
}

impl Loaded {
    /// Write the cache entry, if this load compiled. A failure only costs a recompile next
    /// time, so it is logged, not returned.
    pub(crate) fn persist(&mut self) {
        let Some((path, code)) = self.pending.take() else { return };
        if let Err(e) = write_entry(&path, &code) {
            tracing::warn!(path = %path.display(), "cannot write the plugin code cache: {e}");
        }
    }
}

/// The cache file for a component with this digest under this engine.
pub(crate) fn entry_path(engine: &Engine, digest: &[u8; 32], cache_dir: &Path) -> PathBuf {
    let mut h = Blake3Hasher(blake3::Hasher::new());
    h.0.update(MAGIC);
    h.0.update(digest);
    engine.precompile_compatibility_hash().hash(&mut h);
    cache_dir.join(format!("{}.cwasm", h.0.finalize().to_hex()))
}

pub(crate) fn load(
    engine: &Engine,
    wasm: &[u8],
    digest: &[u8; 32],
    cache_dir: &Path,
    path: &Path,
) -> Result<Loaded, PluginError> {
    let entry = entry_path(engine, digest, cache_dir);
    let start = Instant::now();
    if let Some(component) = read_entry(engine, &entry) {
        return Ok(Loaded {
            component,
            source: CodeSource::Cache,
            took: start.elapsed(),
            pending: None,
        });
    }
    let code = engine
        .precompile_component(wasm)
        .map_err(|e| PluginError::Compile { path: path.to_path_buf(), reason: format!("{e:#}") })?;
    // SAFETY: `code` was produced just now by this engine's `precompile_component`.
    let component = unsafe { Component::deserialize(engine, &code) }
        .map_err(|e| PluginError::Compile { path: path.to_path_buf(), reason: format!("{e:#}") })?;
    Ok(Loaded {
        component,
        source: CodeSource::Compiled,
        took: start.elapsed(),
        pending: Some((entry, code)),
    })
}

fn read_entry(engine: &Engine, entry: &Path) -> Option<Component> {
    let bytes = std::fs::read(entry).ok()?;
    let (head, payload) = bytes.split_at_checked(MAGIC.len() + 32)?;
    if &head[..MAGIC.len()] != MAGIC || head[MAGIC.len()..] != *blake3::hash(payload).as_bytes() {
        tracing::warn!(path = %entry.display(), "plugin code cache entry is corrupted; recompiling");
        return None;
    }
    // SAFETY: wasmtime requires the bytes to come from its own `precompile_component`. This
    // file is one hone wrote (`write_entry`) in its own cache directory, and the checksum
    // above rules out truncation and corruption. wasmtime itself rejects code made by another
    // version or with other settings.
    match unsafe { Component::deserialize(engine, payload) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %entry.display(), "plugin code cache entry rejected ({e}); recompiling");
            None
        }
    }
}

fn write_entry(path: &Path, code: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Temp file then rename: a concurrent reader sees the old entry or the whole new one.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(MAGIC)?;
    tmp.write_all(blake3::hash(code).as_bytes())?;
    tmp.write_all(code)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Feeds `Hash` impls into blake3, which (unlike `DefaultHasher`) is stable across Rust
/// releases, so cache keys survive a toolchain update.
struct Blake3Hasher(blake3::Hasher);

impl Hasher for Blake3Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        let h = self.0.finalize();
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
    }
}
