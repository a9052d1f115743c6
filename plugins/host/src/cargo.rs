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
///
/// When the toolchain lacks the `wasm32-wasip2` target, it is installed with `rustup target
/// add` (as rustup would for a `rust-toolchain.toml` that names it) and the build is retried
/// once; without rustup the error says how to install it.
pub fn build_crate(
    dir: &Path,
    workspace: bool,
    target_dir: Option<&Path>,
) -> Result<Vec<BuiltPlugin>, PluginError> {
    let manifest = dir.join("Cargo.toml");
    let fail = |message: String| PluginError::Build { dir: dir.to_path_buf(), message };
    if !manifest.is_file() {
        return Err(fail(format!("no `{}`", manifest.display())));
    }
    match cargo_build(&manifest, workspace, target_dir) {
        Err(Build::NoTarget(stderr)) => {
            add_target(dir).map_err(|e| fail(format!("{stderr}\n  = help: the `{TARGET}` target is not installed, and {e}: install it with `rustup target add {TARGET}`")))?;
            cargo_build(&manifest, workspace, target_dir).map_err(|e| fail(e.message()))
        }
        built => built.map_err(|e| fail(e.message())),
    }
}

/// Why a `cargo build` failed.
enum Build {
    /// The target's standard library is missing (`rustup target add` fixes it).
    NoTarget(String),
    Failed(String),
}

impl Build {
    fn message(self) -> String {
        match self {
            Build::NoTarget(m) => {
                format!("{m}\n  = help: install the target: `rustup target add {TARGET}`")
            }
            Build::Failed(m) => m,
        }
    }
}

/// `rustup target add wasm32-wasip2`, run in `dir` so that a `rust-toolchain.toml` there picks
/// the toolchain. One install at a time in this process (plugins build in parallel).
fn add_target(dir: &Path) -> Result<(), String> {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    tracing::info!(target: "hone::plugin", "installing the `{TARGET}` target that WASM plugins build for: `rustup target add {TARGET}`");
    let out = Command::new("rustup")
        .args(["target", "add", TARGET])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("rustup could not be run ({e})"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`rustup target add {TARGET}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn cargo_build(
    manifest: &Path,
    workspace: bool,
    target_dir: Option<&Path>,
) -> Result<Vec<BuiltPlugin>, Build> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "--message-format",
        "json-render-diagnostics",
    ])
    .arg("--manifest-path")
    .arg(manifest);
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
    let mut child = cmd.spawn().map_err(|e| Build::Failed(format!("cannot run cargo: {e}")))?;

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
    for line in
        std::io::BufReader::new(child.stdout.take().expect("piped")).lines().map_while(Result::ok)
    {
        if let Some(b) = artifact(&line) {
            built.push(b);
        }
    }
    let status = child.wait().map_err(|e| Build::Failed(format!("cargo did not finish: {e}")))?;
    let stderr = errors.join().unwrap_or_default();
    if !status.success() {
        let message = format!("cargo exited with {status}:\n{stderr}");
        let no_target = stderr.contains("target may not be installed")
            || stderr.contains("can't find crate for `core`");
        return Err(if no_target { Build::NoTarget(message) } else { Build::Failed(message) });
    }
    if built.is_empty() {
        return Err(Build::Failed(
            "the build produced no `.wasm`: a plugin crate needs `[lib] crate-type = [\"cdylib\"]`"
                .into(),
        ));
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
    let target = msg
        .target
        .filter(|t| msg.reason == "compiler-artifact" && t.kind.iter().any(|k| k == "cdylib"))?;
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
