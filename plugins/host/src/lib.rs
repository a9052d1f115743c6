//! hone's host for WASM data-filter plugins. [`PluginFilter`] loads a component of WIT world
//! `hone:filter/filter@0.1.0` (`plugins/wit/filter.wit`), from a `.wasm` file or by building
//! a plugin crate directory, and runs documents through it in batches:
//!
//! ```no_run
//! use hone_plugin_host::{Limits, PluginFilter, Verdict};
//! # fn main() -> Result<(), hone_plugin_host::PluginError> {
//! let path = std::path::Path::new("plugins/dist/min-words.wasm");
//! let mut f = PluginFilter::load(path, r#"{"min_words": 3}"#, Limits::default(), ".hone/plugins".as_ref())?;
//! let verdicts = f.filter(&["one two three", "too short"])?;
//! assert_eq!(verdicts[0], Verdict::Keep);
//! assert!(matches!(verdicts[1], Verdict::Drop(_)));
//! # Ok(()) }
//! ```
//!
//! The sandbox ([`sandbox`]) grants no filesystem, network, environment or clock; memory and
//! CPU (fuel) are bounded per [`Limits`]. Compiled code is cached under `cache_dir`
//! ([`cache`]). Every failure is a [`PluginError`] naming the plugin, the batch and the
//! document index; after a trap the next batch runs on a fresh instance, so the caller decides
//! whether to go on.

mod cache;
mod cargo;
mod error;
mod sandbox;
pub mod scaffold;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;
use wasmtime::component::{Component, ComponentExportIndex, Func, InstancePre};

pub use cache::CodeSource;
pub use cargo::{BuiltPlugin, TARGET, build_crate};
pub use error::{Call, Output, PluginError, Site};

use sandbox::Sandbox;

/// The WIT package plugins must be built against.
pub const WIT_PACKAGE: &str = "hone:filter@0.1.0";
/// The interface a plugin exports.
pub const PLUGIN_INTERFACE: &str = "hone:filter/plugin@0.1.0";

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "filter" });
}

use bindings::hone::filter::types::Verdict as GuestVerdict;

/// A plugin's decision for one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Drop it, for this reason.
    Drop(String),
    /// Keep this text instead.
    Rewrite(String),
}

impl From<GuestVerdict> for Verdict {
    fn from(v: GuestVerdict) -> Verdict {
        match v {
            GuestVerdict::Keep => Verdict::Keep,
            GuestVerdict::Drop(r) => Verdict::Drop(r),
            GuestVerdict::Rewrite(t) => Verdict::Rewrite(t),
        }
    }
}

/// What a plugin may use. The CPU bound is fuel (about one unit per WebAssembly instruction):
/// a batch of documents totalling `b` bytes may burn `fuel_per_batch + fuel_per_byte * b`.
/// Fuel counts work, not time, so a batch within bounds is within bounds on every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// The most each linear memory of the plugin may grow to.
    pub memory_bytes: u64,
    /// Fuel every call gets (also the budget of `init`).
    pub fuel_per_batch: u64,
    /// Extra fuel per byte of the batch's documents.
    pub fuel_per_byte: u64,
    /// Documents per call into the plugin.
    pub batch_size: usize,
}

impl Default for Limits {
    /// 256 MiB of memory; ~0.1 s of work per call plus ~1 µs per byte (far above what a
    /// filter needs, far below "hangs"); batches of 64 documents, past which the per-call
    /// overhead no longer shows.
    fn default() -> Limits {
        Limits {
            memory_bytes: 256 << 20,
            fuel_per_batch: 100_000_000,
            fuel_per_byte: 1_000,
            batch_size: 64,
        }
    }
}

impl Limits {
    fn fuel_for(&self, bytes: u64) -> u64 {
        self.fuel_per_batch.saturating_add(self.fuel_per_byte.saturating_mul(bytes))
    }
}

/// How a [`PluginFilter`] was loaded, for reports and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadReport {
    /// Whether the code came from the cache or was compiled.
    pub code: CodeSource,
    /// Time to compile, or to load the precompiled code.
    pub code_time: Duration,
    /// Time to instantiate and `init` the first instance.
    pub instantiate_time: Duration,
}

/// The blake3 digest of the plugin's `.wasm` bytes (what enters the stage key), without
/// compiling it. A crate directory is built first (a no-op when cargo finds it up to date).
pub fn digest_of(path: &Path) -> Result<[u8; 32], PluginError> {
    let wasm = resolve(path)?;
    let bytes = std::fs::read(&wasm).map_err(|source| PluginError::Read { path: wasm, source })?;
    Ok(*blake3::hash(&bytes).as_bytes())
}

/// The `.wasm` file for `path`: itself, or the component built from a crate directory.
fn resolve(path: &Path) -> Result<PathBuf, PluginError> {
    if !path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let mut built = build_crate(path, false, None)?;
    match built.len() {
        1 => Ok(built.remove(0).wasm),
        n => Err(PluginError::Build {
            dir: path.to_path_buf(),
            message: format!(
                "the build produced {n} components; point at one crate, not a workspace"
            ),
        }),
    }
}

/// The indices of the plugin interface's functions, resolved once per component.
struct Exports {
    name: ComponentExportIndex,
    version: ComponentExportIndex,
    init: ComponentExportIndex,
    filter: ComponentExportIndex,
}

/// What every instance is made from.
struct Core {
    path: PathBuf,
    pre: InstancePre<Sandbox>,
    exports: Exports,
    limits: Limits,
    config: String,
    /// How errors name the plugin: the path until it has said its name.
    label: Arc<str>,
}

/// A live instance: its store and its `filter` function.
struct Live {
    store: Store<Sandbox>,
    filter: Func,
}

/// A loaded plugin, ready to filter documents. `Send`, not `Sync`: give each thread its own
/// (loads after the first come from the code cache and take under a millisecond).
pub struct PluginFilter {
    core: Core,
    live: Option<Live>,
    name: String,
    version: String,
    digest: [u8; 32],
    report: LoadReport,
    batches: u64,
    docs_seen: u64,
}

// A stage may run on any worker thread.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<PluginFilter>();
};

impl PluginFilter {
    /// Load the plugin at `path` (a `.wasm` component, or a crate directory to build for
    /// `wasm32-wasip2`), instantiate it and pass it `config_json` (`{}` for none) once.
    /// Compiled code is cached in `cache_dir`; nothing is cached for a plugin that fails to
    /// load.
    pub fn load(
        path: &Path,
        config_json: &str,
        limits: Limits,
        cache_dir: &Path,
    ) -> Result<PluginFilter, PluginError> {
        let path = resolve(path)?;
        let wasm = std::fs::read(&path)
            .map_err(|source| PluginError::Read { path: path.clone(), source })?;
        check_header(&path, &wasm)?;
        let digest = *blake3::hash(&wasm).as_bytes();
        let host = cache::host()?;
        let mut loaded = cache::load(&host.engine, &wasm, &digest, cache_dir, &path)?;
        let exports = exports(&host.engine, &loaded.component, &path)?;
        check_imports(&host.engine, &loaded.component, &path)?;
        let pre = host
            .linker
            .instantiate_pre(&loaded.component)
            .map_err(|e| PluginError::Link { path: path.clone(), reason: format!("{e:#}") })?;
        let label: Arc<str> = format!("`{}`", path.display()).into();
        let mut core = Core { path, pre, exports, limits, config: config_json.to_string(), label };

        let start = Instant::now();
        let (live, name, version) = core.instantiate(true)?;
        core.label = format!("`{name} {version}` ({})", core.path.display()).into();
        let report = LoadReport {
            code: loaded.source,
            code_time: loaded.took,
            instantiate_time: start.elapsed(),
        };
        loaded.persist();
        Ok(PluginFilter {
            core,
            live: Some(live),
            name,
            version,
            digest,
            report,
            batches: 0,
            docs_seen: 0,
        })
    }

    /// blake3 of the `.wasm` bytes.
    pub fn digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The name the plugin reports (for Rust plugins, its crate name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The version the plugin reports.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The `.wasm` file loaded (for a crate directory, the built component).
    pub fn path(&self) -> &Path {
        &self.core.path
    }

    pub fn limits(&self) -> &Limits {
        &self.core.limits
    }

    pub fn load_report(&self) -> LoadReport {
        self.report
    }

    /// One verdict per document, in order, calling the plugin in batches of
    /// `limits.batch_size`. On error the documents of this call get no verdicts, and the next
    /// call runs on a fresh instance (with `init` done again).
    pub fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, PluginError> {
        let mut out = Vec::with_capacity(docs.len());
        for chunk in docs.chunks(self.core.limits.batch_size.max(1)) {
            out.extend(self.batch(chunk)?);
        }
        Ok(out)
    }

    fn batch(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, PluginError> {
        let (batch, first) = (self.batches, self.docs_seen);
        self.batches += 1;
        self.docs_seen += docs.len() as u64;
        let label = self.core.label.clone();
        let site = |doc| Site {
            plugin: label.to_string(),
            call: Call::Batch { batch, first, len: docs.len() as u64, doc },
        };
        let mut live = match self.live.take() {
            Some(live) => live,
            // The last batch failed: start over from the pre-instantiated component.
            None => self.core.instantiate(false)?.0,
        };
        match self.core.call(&mut live, docs) {
            Ok(verdicts) if verdicts.len() == docs.len() => {
                forward_output(&label, &live.store);
                self.live = Some(live);
                Ok(verdicts.into_iter().map(Verdict::from).collect())
            }
            Ok(verdicts) => Err(PluginError::VerdictCount {
                site: site(None),
                got: verdicts.len(),
                expected: docs.len(),
            }),
            Err(e) => {
                let err =
                    self.core.classify(e, &mut live.store, site(None), self.core.budget(docs));
                drop(live);
                Err(match err {
                    PluginError::Trap { .. } | PluginError::Exit { .. } if docs.len() > 1 => {
                        self.isolate(docs, first, site).unwrap_or(err)
                    }
                    err => err,
                })
            }
        }
    }

    /// After a trap in a batch, find the first document that traps on its own (traps are
    /// usually data-dependent), so the error can name it. Only for plain traps: for a loop or
    /// a memory bomb this would cost a whole budget per document.
    fn isolate(
        &self,
        docs: &[&str],
        first: u64,
        site: impl Fn(Option<u64>) -> Site,
    ) -> Option<PluginError> {
        let mut live = self.core.instantiate(false).ok()?.0;
        for (k, doc) in docs.iter().enumerate() {
            if let Err(e) = self.core.call(&mut live, &[doc]) {
                let err = self.core.classify(
                    e,
                    &mut live.store,
                    site(Some(first + k as u64)),
                    self.core.budget(&[doc]),
                );
                return matches!(err, PluginError::Trap { .. } | PluginError::Exit { .. })
                    .then_some(err);
            }
        }
        None
    }
}

impl Core {
    /// A fresh instance with `init(config)` done; with `ask`, also the plugin's name and
    /// version.
    fn instantiate(&self, ask: bool) -> Result<(Live, String, String), PluginError> {
        let host = cache::host()?;
        let mut label = self.label.clone();
        let mut store =
            Store::new(&host.engine, Sandbox::new(label.clone(), self.limits.memory_bytes));
        store.limiter(|s| &mut s.limiter);
        let fuel = self.limits.fuel_per_batch;
        store.set_fuel(fuel).map_err(|e| PluginError::Engine { reason: e.to_string() })?;
        let site = |label: &str| Site { plugin: label.to_string(), call: Call::Init };
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(e, &mut store, site(&label), fuel))?;
        let func = |store: &mut Store<Sandbox>, idx: &ComponentExportIndex| {
            instance.get_func(&mut *store, idx).expect("export checked at load")
        };
        let bad_type = |export: &'static str, e: wasmtime::Error| PluginError::BadExport {
            path: self.path.clone(),
            export,
            reason: format!("has the wrong type: {e:#}"),
        };
        let (mut name, mut version) = (String::new(), String::new());
        if ask {
            for (export, idx, out) in [
                ("name", &self.exports.name, &mut name),
                ("version", &self.exports.version, &mut version),
            ] {
                let f = func(&mut store, idx)
                    .typed::<(), (String,)>(&store)
                    .map_err(|e| bad_type(export, e))?;
                *out = f
                    .call(&mut store, ())
                    .map_err(|e| self.classify(e, &mut store, site(&label), fuel))?
                    .0;
            }
            (name, version) = (printable(&name, 64), printable(&version, 32));
            // From here on, errors and log lines name the plugin as it names itself.
            label = format!("`{name} {version}` ({})", self.path.display()).into();
            store.data_mut().set_plugin(label.clone());
        }
        let filter = func(&mut store, &self.exports.filter);
        filter
            .typed::<(&[&str],), (Vec<GuestVerdict>,)>(&store)
            .map_err(|e| bad_type("filter", e))?;
        let init = func(&mut store, &self.exports.init)
            .typed::<(&str,), (Result<(), String>,)>(&store)
            .map_err(|e| bad_type("init", e))?;
        match init.call(&mut store, (&self.config,)) {
            Ok((Ok(()),)) => {}
            Ok((Err(message),)) => {
                return Err(PluginError::Config {
                    site: site(&label),
                    message,
                    config: self.config.clone(),
                });
            }
            Err(e) => return Err(self.classify(e, &mut store, site(&label), fuel)),
        }
        forward_output(&label, &store);
        Ok((Live { store, filter }, name, version))
    }

    /// The fuel a batch of these documents gets.
    fn budget(&self, docs: &[&str]) -> u64 {
        self.limits.fuel_for(docs.iter().map(|d| d.len() as u64).sum())
    }

    /// Run `filter` on one batch with the batch's fuel.
    fn call(&self, live: &mut Live, docs: &[&str]) -> wasmtime::Result<Vec<GuestVerdict>> {
        live.store.set_fuel(self.budget(docs))?;
        let f = live.filter.typed::<(&[&str],), (Vec<GuestVerdict>,)>(&live.store)?;
        Ok(f.call(&mut live.store, (docs,))?.0)
    }

    /// Turn a failed call into the error that says why.
    fn classify(
        &self,
        e: wasmtime::Error,
        store: &mut Store<Sandbox>,
        site: Site,
        fuel: u64,
    ) -> PluginError {
        let output = Output(store.data().output.take());
        let limit = store.data().limiter.limit();
        if let Some(requested) = store.data_mut().limiter.denied.take() {
            return PluginError::MemoryLimit { site, limit, requested, output };
        }
        if let Some(wasmtime::Trap::OutOfFuel) = e.downcast_ref::<wasmtime::Trap>() {
            return PluginError::CpuLimit { site, fuel, output };
        }
        if let Some(exit) = e.downcast_ref::<wasmtime_wasi::I32Exit>() {
            return PluginError::Exit { site, code: exit.0, output };
        }
        PluginError::Trap { site, message: trap_message(&e), output }
    }
}

/// The trap itself, then the guest's own frames of the backtrace (names from the name
/// section; the standard library's panic and abort machinery is left out).
fn trap_message(e: &wasmtime::Error) -> String {
    let mut msg = match e.downcast_ref::<wasmtime::Trap>() {
        Some(t) => t.to_string(),
        None => e.to_string(),
    };
    if let Some(bt) = e.downcast_ref::<wasmtime::WasmBacktrace>() {
        let runtime = ["3std", "4core", "5alloc", "___rustc", "8dlmalloc"];
        let frames: Vec<&str> = bt
            .frames()
            .iter()
            .filter_map(|f| f.func_name())
            .filter(|n| *n != "abort" && !runtime.iter().any(|r| n.contains(r)))
            .take(8)
            .collect();
        if !frames.is_empty() {
            msg.push_str(&format!("\n  guest backtrace: {}", frames.join(" <- ")));
        }
    }
    msg
}

/// Pass what the guest printed during a successful call on to the log.
fn forward_output(label: &str, store: &Store<Sandbox>) {
    let text = store.data().output.take();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        tracing::debug!(plugin = label, "{line}");
    }
}

/// A name or version as the plugin reported it, cut short and without control characters,
/// since it appears in every error message.
fn printable(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    if out.is_empty() { "(unnamed)".into() } else { out }
}

/// Reject files that are not components before handing them to the compiler, with a message
/// that says what they are instead.
fn check_header(path: &Path, wasm: &[u8]) -> Result<(), PluginError> {
    match wasm.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => {
            Err(PluginError::NotComponent { path: path.to_path_buf() })
        }
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => Err(PluginError::NotWasm { path: path.to_path_buf() }),
    }
}

/// Find the plugin interface and its four functions, or say what the component exports.
fn exports(
    engine: &wasmtime::Engine,
    component: &Component,
    path: &Path,
) -> Result<Exports, PluginError> {
    let Some(iface) = component.get_export_index(None, PLUGIN_INTERFACE) else {
        let ty = component.component_type();
        let names: Vec<String> = ty.exports(engine).map(|(n, _)| format!("`{n}`")).collect();
        let found = if names.is_empty() { "nothing".to_string() } else { names.join(", ") };
        return Err(PluginError::WrongWorld { path: path.to_path_buf(), found });
    };
    let func = |export: &'static str| {
        component.get_export_index(Some(&iface), export).ok_or_else(|| PluginError::BadExport {
            path: path.to_path_buf(),
            export,
            reason: "is missing".into(),
        })
    };
    Ok(Exports {
        name: func("name")?,
        version: func("version")?,
        init: func("init")?,
        filter: func("filter")?,
    })
}

/// Refuse the capabilities hone never grants by name, before the linker's generic message.
fn check_imports(
    engine: &wasmtime::Engine,
    component: &Component,
    path: &Path,
) -> Result<(), PluginError> {
    let ty = component.component_type();
    let forbidden: Vec<String> = ty
        .imports(engine)
        .filter(|(name, _)| sandbox::FORBIDDEN.iter().any(|p| name.starts_with(p)))
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    if forbidden.is_empty() {
        return Ok(());
    }
    Err(PluginError::ForbiddenImport { path: path.to_path_buf(), imports: forbidden.join(", ") })
}
