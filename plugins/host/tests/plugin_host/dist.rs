//! The components shipped in `plugins/dist/` (so `hone run` works on a machine without the
//! wasm32-wasip2 target) match their sources. `HONE_BLESS=1` rewrites them from a fresh
//! build instead of checking:
//!
//!     HONE_BLESS=1 cargo test --release -p hone-plugin-host --test plugin_host dist

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::common::{plugins_dir, wasm};

/// (package, library name) of each shipped plugin.
const SHIPPED: &[(&str, &str)] =
    &[("min-words", "min_words"), ("pii-redact", "pii_redact"), ("lang-id", "lang_id")];

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Manifest {
    /// `rustc -V` of the toolchain that built the files.
    rustc: String,
    plugins: BTreeMap<String, Entry>,
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
struct Entry {
    /// blake3 of the `.wasm`.
    wasm: String,
    /// blake3 over every source file the build reads (see `source_files`).
    sources: String,
}

/// The files a plugin's build depends on, relative to `plugins/`: its crate, the SDK, the
/// WIT, and the guest workspace's manifest (profile) and lock file.
fn source_files(package: &str) -> Vec<PathBuf> {
    let root = plugins_dir();
    let mut files = vec![PathBuf::from("Cargo.toml"), PathBuf::from("Cargo.lock")];
    for dir in [format!("examples/{package}"), "sdk".to_string(), "wit".to_string()] {
        collect(&root, &PathBuf::from(dir), &mut files);
    }
    files.sort();
    files
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(root.join(rel)).unwrap() {
        let e = e.unwrap();
        let rel = rel.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            if e.file_name() != "target" {
                collect(root, &rel, out);
            }
        } else {
            out.push(rel);
        }
    }
}

fn sources_digest(package: &str) -> String {
    let mut h = blake3::Hasher::new();
    for rel in source_files(package) {
        let bytes = std::fs::read(plugins_dir().join(&rel)).unwrap();
        h.update(rel.to_string_lossy().as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(&bytes);
    }
    h.finalize().to_hex().to_string()
}

fn rustc_version() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = std::process::Command::new(rustc).arg("-V").output().expect("run rustc -V");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn shipped_components_match_their_sources() {
    let dist = plugins_dir().join("dist");
    let manifest_path = dist.join("manifest.json");
    if std::env::var_os("HONE_BLESS").is_some() {
        let mut plugins = BTreeMap::new();
        for (package, lib) in SHIPPED {
            let bytes = std::fs::read(wasm(lib)).unwrap();
            std::fs::create_dir_all(&dist).unwrap();
            std::fs::write(dist.join(format!("{package}.wasm")), &bytes).unwrap();
            let entry = Entry {
                wasm: blake3::hash(&bytes).to_hex().to_string(),
                sources: sources_digest(package),
            };
            plugins.insert(package.to_string(), entry);
        }
        let m = Manifest { rustc: rustc_version(), plugins };
        std::fs::write(&manifest_path, serde_json::to_string_pretty(&m).unwrap() + "\n").unwrap();
        return;
    }
    let bless = "rebuild them: HONE_BLESS=1 cargo test --release -p hone-plugin-host --test plugin_host dist";
    let m: Manifest = serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(m.plugins.len(), SHIPPED.len());
    let same_toolchain = m.rustc == rustc_version();
    for (package, lib) in SHIPPED {
        let entry = &m.plugins[*package];
        let shipped = std::fs::read(dist.join(format!("{package}.wasm"))).unwrap();
        assert_eq!(
            blake3::hash(&shipped).to_hex().as_str(),
            entry.wasm,
            "plugins/dist/{package}.wasm is not the file the manifest names; {bless}"
        );
        assert_eq!(
            sources_digest(package),
            entry.sources,
            "plugins/dist/{package}.wasm is stale: its sources changed since it was built; {bless}"
        );
        if same_toolchain {
            // Same sources and toolchain must give the same bytes (paths are remapped).
            assert!(
                std::fs::read(wasm(lib)).unwrap() == shipped,
                "plugins/dist/{package}.wasm differs from a fresh build of the same sources; {bless}"
            );
        }
    }
}
