//! Building a plugin crate directory into a component: `cargo build --release --target
//! wasm32-wasip2`, with cargo's own incremental cache (the crate's usual target directory),
//! so a second build of an unchanged crate is a no-op taking a fraction of a second.
//!
//! The build remaps `$CARGO_HOME` to `/cargo` in embedded paths (panic locations of
//! dependencies), so the same sources and toolchain give the same bytes on any machine: the
//! component's digest, which enters the stage key, does not depend on where it was built.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::PluginError;

/// The compilation target of plugins.
pub const TARGET: &str = "wasm32-wasip2";

/// One component a build produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltPlugin {
    /// The crate's library name (`min_words` for package `min-words`), which names the file.
    pub name: String,
    /// The package's `Cargo.toml`.
    pub manifest: PathBuf,
    /// The `.wasm` component.
    pub wasm: PathBuf,
}

/// Build the plugin crate in `dir` and return its component. With `workspace`, build every
/// member of the workspace whose root is `dir` and return all their components. `target_dir`
/// overrides cargo's target directory (default: the crate's workspace's `target/`).
pub fn build_crate(dir: &Path, workspace: bool, target_dir: Option<&Path>) -> Result<Vec<BuiltPlugin>, PluginError> {
    let manifest = dir.join("Cargo.toml");
    let fail = |message: String| PluginError::Build { dir: dir.to_path_buf(), message };
    if !manifest.is_file() {
        return Err(fail(format!("no `{}`", manifest.display())));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET, "--message-format", "json-render-diagnostics"])
        .arg("--manifest-path")
        .arg(&manifest);
    if workspace {
        cmd.arg("--workspace");
    }
    if let Some(t) = target_dir {
        cmd.arg("--target-dir").arg(t);
    }
    if let Some(home) = cargo_home() {
        let flag = format!("--remap-path-prefix={}=/cargo", home.display());
        cmd.arg("--config").arg(format!("build.rustflags=[{}]", toml_string(&flag)));
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(format!("cannot run cargo: {e}")))?;

    // Drain stderr on a thread so neither pipe can fill up and stall cargo.
    let stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut tail = std::collections::VecDeque::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tail.len() == 60 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        Vec::from(tail).join("\n")
    });
    let mut built = Vec::new();
    for line in std::io::BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok) {
        if let Some(b) = artifact(&line) {
            built.push(b);
        }
    }
    let status = child.wait().map_err(|e| fail(format!("cargo did not finish: {e}")))?;
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        let hint = if stderr.contains("target may not be installed") || stderr.contains("can't find crate for `core`") {
            "\n  = help: install the target: `rustup target add wasm32-wasip2`"
        } else {
            ""
        };
        return Err(fail(format!("cargo exited with {status}:\n{stderr}{hint}")));
    }
    if built.is_empty() {
        return Err(fail("the build produced no `.wasm`: a plugin crate needs `[lib] crate-type = [\"cdylib\"]`".into()));
    }
    Ok(built)
}

/// The cdylib `.wasm` named by one line of cargo's JSON messages, if it names one.
fn artifact(line: &str) -> Option<BuiltPlugin> {
    #[derive(serde::Deserialize)]
    struct Msg {
        reason: String,
        #[serde(default)]
        manifest_path: PathBuf,
        #[serde(default)]
        target: Option<Target>,
        #[serde(default)]
        filenames: Vec<PathBuf>,
    }
    #[derive(serde::Deserialize)]
    struct Target {
        name: String,
        kind: Vec<String>,
    }
    let msg: Msg = serde_json::from_str(line).ok()?;
    let target = msg.target.filter(|t| msg.reason == "compiler-artifact" && t.kind.iter().any(|k| k == "cdylib"))?;
    let wasm = msg.filenames.into_iter().find(|f| f.extension().is_some_and(|e| e == "wasm"))?;
    Some(BuiltPlugin { name: target.name, manifest: msg.manifest_path, wasm })
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
