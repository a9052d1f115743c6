//! `hone plugin new NAME`: write a plugin crate that builds as is with
//! `cargo build --release --target wasm32-wasip2`, anywhere, offline.
//!
//! The crate carries its own copy of the guest SDK and of hone's WIT (under `hone/`, the same
//! layout as `plugins/` in hone's repository), embedded in hone at compile time, so it always
//! matches the host that created it and needs no published crate. Its `Cargo.lock` pins the
//! dependency versions hone's own examples are built and tested with.

use std::path::{Path, PathBuf};

use crate::PluginError;

const SDK_MANIFEST: &str = include_str!("../../sdk/Cargo.toml");
const SDK_LIB: &str = include_str!("../../sdk/src/lib.rs");
const WIT: &str = include_str!("../../wit/filter.wit");
const LOCK: &str = include_str!("../../Cargo.lock");

const MANIFEST: &str = r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
hone-filter-sdk = { path = "hone/sdk" }
serde = { version = "1", default-features = false, features = ["std", "derive"] }

# A workspace of its own: this crate builds for wasm32-wasip2, apart from any parent project.
[workspace]

[profile.release]
lto = true
codegen-units = 1
# Drop DWARF but keep the name section, so hone's trap messages name your functions.
strip = "debuginfo"
"#;

const LIB: &str = r#"//! `{name}`: a hone data-filter plugin.
//!
//! Build: `cargo build --release --target wasm32-wasip2` (once: `rustup target add wasm32-wasip2`)
//! Use, in a pipeline's ingest stage:
//!
//! ```yaml
//! filters:
//!   - wasm: path/to/{name}          # this directory; hone builds it, or give the .wasm
//!     with: { max_chars: 20000 }
//! ```

use hone_filter_sdk::{Filter, Verdict, export_filter};

/// The `with:` config. Unknown keys are errors, so typos do not pass silently.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Config {
    max_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_chars: 100_000 }
    }
}

struct Plugin {
    max_chars: usize,
}

impl Filter for Plugin {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.max_chars == 0 {
            return Err("`max_chars` must be at least 1".into());
        }
        Ok(Plugin { max_chars: config.max_chars })
    }

    fn filter(&mut self, doc: &str) -> Verdict {
        if doc.trim().is_empty() {
            Verdict::Drop("empty".into())
        } else if doc.chars().nth(self.max_chars).is_some() {
            Verdict::Drop(format!("longer than {} characters", self.max_chars))
        } else {
            Verdict::Keep
        }
    }
}

export_filter!(Plugin);
"#;

/// Create the plugin crate `parent/name` and return its directory. `name` must be a valid
/// crate name; the directory must not exist yet (or be empty).
pub fn create(parent: &Path, name: &str) -> Result<PathBuf, PluginError> {
    let dir = parent.join(name);
    let fail = |message: String| PluginError::Scaffold { path: dir.clone(), message };
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        return Err(fail(format!(
            "`{name}` is not a valid crate name: use letters, digits, `-` and `_`, starting with a letter"
        )));
    }
    if name == "hone-filter-sdk" || name == "hone_filter_sdk" {
        return Err(fail("that name is taken by the SDK the plugin depends on".into()));
    }
    if dir.read_dir().is_ok_and(|mut d| d.next().is_some()) {
        return Err(fail("the directory exists and is not empty".into()));
    }
    let files: [(&str, String); 7] = [
        ("Cargo.toml", MANIFEST.replace("{name}", name)),
        ("Cargo.lock", LOCK.to_string()),
        ("src/lib.rs", LIB.replace("{name}", name)),
        (".gitignore", "/target\n".to_string()),
        ("hone/sdk/Cargo.toml", SDK_MANIFEST.to_string()),
        ("hone/sdk/src/lib.rs", SDK_LIB.to_string()),
        ("hone/wit/filter.wit", WIT.to_string()),
    ];
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| fail(format!("cannot create `{}`: {e}", p.display())))?;
        }
        std::fs::write(&path, text)
            .map_err(|e| fail(format!("cannot write `{}`: {e}", path.display())))?;
    }
    Ok(dir)
}
