//! WASM filter plugins in a filter chain: `{ wasm: PATH, with: {...}, limits: {...} }`.
//!
//! `PATH` (relative to the workspace) is a `.wasm` component or a plugin crate directory,
//! which the host builds for `wasm32-wasip2`. The plugin's digest, not its path, enters the
//! stage key, so editing a plugin reruns exactly the stages that use it. Plugins run
//! sandboxed in `hone_plugin_host` (no filesystem, network, environment or clock; bounded
//! memory and fuel); every failure names the plugin, the batch and the document.

use std::path::{Path, PathBuf};

use hone_engine::digest::Digest;
use hone_engine::stage::{DepCx, StageError};
use hone_plugin_host::{Call, Limits, PluginError, PluginFilter};
use serde::Serialize;

use super::{DocFilter, FilterError, Verdict};

#[derive(Debug, Clone, Serialize)]
pub struct WasmSpec {
    #[serde(rename = "wasm")]
    pub path: PathBuf,
    /// The plugin's `with:`, handed to it as JSON once at load.
    #[serde(rename = "with")]
    pub config: serde_json::Value,
    pub limits: Limits,
}

impl WasmSpec {
    pub fn name(&self) -> String {
        let stem = self
            .path
            .file_stem()
            .or(self.path.file_name())
            .map(|s| s.to_string_lossy().into_owned());
        format!("wasm:{}", stem.unwrap_or_default())
    }

    pub fn problems(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut p = Vec::new();
        if self.path.as_os_str().is_empty() {
            p.push((vec!["wasm"], "the plugin path is empty".to_string()));
        }
        if !self.config.is_object() {
            p.push((vec!["with"], "a plugin's `with:` must be a mapping".to_string()));
        }
        if self.limits.batch_size == 0 {
            p.push((vec!["limits", "batch_size"], "`batch_size` must be at least 1".to_string()));
        }
        p
    }

    pub fn external_deps(&self, cx: &DepCx) -> Result<Vec<(String, Digest)>, StageError> {
        let label = format!("plugin `{}`", self.path.display());
        let full = cx.workspace.join(&self.path);
        if full.is_file() {
            // Stat-cached, and watched by `hone watch`.
            return Ok(vec![(label, cx.hash_path(&self.path)?)]);
        }
        // A crate directory: the digest of the component it builds to.
        let d = hone_plugin_host::digest_of(&full).map_err(|e| StageError::msg(e.to_string()))?;
        Ok(vec![(label, Digest(d))])
    }

    pub fn build(&self, workspace: &Path) -> Result<Box<dyn DocFilter>, String> {
        let cache = workspace.join(".hone").join("plugins");
        let config = self.config.to_string();
        let plugin = PluginFilter::load(&workspace.join(&self.path), &config, self.limits, &cache)
            .map_err(|e| e.to_string())?;
        Ok(Box::new(WasmFilter { label: self.name(), plugin, seen: 0 }))
    }
}

struct WasmFilter {
    label: String,
    plugin: PluginFilter,
    /// Documents given to the plugin so far: its errors count from the first one.
    seen: u64,
}

impl DocFilter for WasmFilter {
    fn name(&self) -> &str {
        &self.label
    }

    fn filter(&mut self, docs: &[&str]) -> Result<Vec<Verdict>, FilterError> {
        let first = self.seen;
        self.seen += docs.len() as u64;
        let verdicts = self.plugin.filter(docs).map_err(|e| to_filter_error(e, first))?;
        Ok(verdicts
            .into_iter()
            .map(|v| match v {
                hone_plugin_host::Verdict::Keep => Verdict::Keep,
                hone_plugin_host::Verdict::Drop(r) => Verdict::Drop(r),
                hone_plugin_host::Verdict::Rewrite(t) => Verdict::Rewrite(t),
            })
            .collect())
    }
}

fn to_filter_error(e: PluginError, first: u64) -> FilterError {
    let doc = match e.site().map(|s| &s.call) {
        Some(Call::Batch { doc: Some(d), .. }) => d.checked_sub(first).map(|d| d as usize),
        _ => None,
    };
    match doc {
        Some(doc) => FilterError::Document { doc, message: e.to_string() },
        None => FilterError::Failed(e.to_string()),
    }
}
