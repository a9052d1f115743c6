//! [`PluginError`]: everything that can go wrong loading or running a plugin, each message
//! naming the plugin and, for a failed call, the batch and the document index ([`Site`]).

use std::fmt;
use std::path::PathBuf;

/// Which call of which plugin failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// `name version (path)`, or just the path before the plugin said its name.
    pub plugin: String,
    pub call: Call,
}

/// The failing call. Document indices count every document this [`crate::PluginFilter`]
/// has been given, from 0; batches count from 0 too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// `init` (with the config) on a fresh instance.
    Init,
    /// A `filter` call on documents `first..first + len`. `doc` is the one document that fails
    /// on its own, when the host could isolate it.
    Batch { batch: u64, first: u64, len: u64, doc: Option<u64> },
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {}", self.plugin)?;
        match self.call {
            Call::Init => write!(f, ", init"),
            Call::Batch { batch, first, len, doc } => {
                write!(f, ", batch {batch} (documents {first}..{})", first + len)?;
                match doc {
                    Some(doc) => write!(f, ", document {doc}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Why loading or running a plugin failed. Every variant names the plugin (its path before
/// it is instantiated, `name version (path)` after); run-time failures carry a [`Site`].
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },

    #[error(
        "plugin `{path}` is not a WebAssembly file\n  = help: give a `.wasm` component or a plugin crate directory"
    )]
    NotWasm { path: PathBuf },

    #[error(
        "plugin `{path}` is a core WebAssembly module, not a component\n  = help: build it for the `wasm32-wasip2` target (`cargo build --release --target wasm32-wasip2`), which produces a component"
    )]
    NotComponent { path: PathBuf },

    #[error("plugin `{path}` is not a valid WebAssembly component: {reason}")]
    Compile { path: PathBuf, reason: String },

    #[error(
        "plugin `{path}` does not implement hone's filter interface: it exports {found}, not `{expected}`\n  = help: build it against hone's WIT package {package} (plugins/wit/filter.wit), e.g. with the hone-filter-sdk crate",
        expected = crate::PLUGIN_INTERFACE,
        package = crate::WIT_PACKAGE
    )]
    WrongWorld { path: PathBuf, found: String },

    #[error(
        "plugin `{path}`: `{export}` of `{interface}` {reason}\n  = help: rebuild the plugin against plugins/wit/filter.wit ({package})",
        interface = crate::PLUGIN_INTERFACE,
        package = crate::WIT_PACKAGE
    )]
    BadExport { path: PathBuf, export: &'static str, reason: String },

    #[error(
        "plugin `{path}` imports {imports}, which hone never grants: plugins run without filesystem, network or clock access\n  = help: pass what the plugin needs through its `with:` config"
    )]
    ForbiddenImport { path: PathBuf, imports: String },

    #[error("plugin `{path}` cannot be linked: {reason}")]
    Link { path: PathBuf, reason: String },

    #[error("{site}: the plugin rejected its config: {message}\n  config: {config}")]
    Config { site: Site, message: String, config: String },

    #[error(
        "{site}: ran out of CPU budget ({fuel} fuel units): the plugin loops or is too slow for this batch\n  = help: raise `fuel_per_batch`/`fuel_per_byte` in the plugin's limits, or lower `batch_size`{output}"
    )]
    CpuLimit { site: Site, fuel: u64, output: Output },

    #[error(
        "{site}: tried to grow its memory to {requested} bytes, over the limit of {limit} bytes\n  = help: raise `memory_bytes` in the plugin's limits, or lower `batch_size`{output}"
    )]
    MemoryLimit { site: Site, limit: u64, requested: u64, output: Output },

    #[error("{site}: trapped: {message}{output}")]
    Trap { site: Site, message: String, output: Output },

    #[error("{site}: the plugin called exit({code}){output}")]
    Exit { site: Site, code: i32, output: Output },

    #[error(
        "{site}: returned {got} verdicts for {expected} documents (a plugin must return exactly one per document, in order)"
    )]
    VerdictCount { site: Site, got: usize, expected: usize },

    #[error("building plugin crate `{dir}` for wasm32-wasip2 failed: {message}")]
    Build { dir: PathBuf, message: String },

    #[error("cannot create plugin crate `{path}`: {message}")]
    Scaffold { path: PathBuf, message: String },

    #[error("cannot set up the WebAssembly engine: {reason}")]
    Engine { reason: String },
}

impl PluginError {
    /// The call that failed, for errors raised while running the plugin.
    pub fn site(&self) -> Option<&Site> {
        match self {
            PluginError::Config { site, .. }
            | PluginError::CpuLimit { site, .. }
            | PluginError::MemoryLimit { site, .. }
            | PluginError::Trap { site, .. }
            | PluginError::Exit { site, .. }
            | PluginError::VerdictCount { site, .. } => Some(site),
            _ => None,
        }
    }
}

/// What the guest wrote to stdout/stderr during the failed call (its tail): a Rust panic's
/// message lands here. Displays as an indented block, or as nothing when empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output(pub String);

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.trim();
        if text.is_empty() {
            return Ok(());
        }
        write!(f, "\n  plugin output:")?;
        for line in text.lines() {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}
