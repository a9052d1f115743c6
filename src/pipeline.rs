//! The pipeline a command works on, and its workspace: the file given, else `./pipeline.yaml`,
//! else the bundled default; the store in the file's directory unless `--workspace` says.

use std::path::{Path, PathBuf};

use hone_engine::spec::{self, LoadError, Pipeline};
use hone_engine::workspace::Workspace;

use crate::PipelineArgs;
use crate::exit::{EXIT_INVALID, Fatal};

/// The pipeline file: the argument, else ./pipeline.yaml, else the bundled default.
pub(crate) fn pipeline_path(arg: &Option<PathBuf>) -> Result<PathBuf, Fatal> {
    if let Some(p) = arg {
        return Ok(p.clone());
    }
    let local = PathBuf::from("pipeline.yaml");
    if local.exists() {
        return Ok(local);
    }
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines").join("tiny-chatgpt.yaml");
    if bundled.exists() {
        return Ok(bundled);
    }
    Err(Fatal {
        message: "error: no pipeline given and no `pipeline.yaml` here\n   = help: pass a pipeline file: `hone run path/to/pipeline.yaml`".into(),
        code: EXIT_INVALID,
    })
}

pub(crate) fn load(args: &PipelineArgs) -> Result<(Pipeline, Workspace), Fatal> {
    let path = pipeline_path(&args.pipeline)?;
    let registry = hone_stages::registry();
    let p = spec::load(&path, &registry, &args.set).map_err(|e| match e {
        LoadError::Invalid(d) => Fatal { message: d.to_string(), code: EXIT_INVALID },
        e @ LoadError::Io { .. } => Fatal { message: format!("error: {e}"), code: EXIT_INVALID },
    })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| ".".into());
    let root = args.workspace.clone().unwrap_or_else(|| dir.clone());
    std::fs::create_dir_all(&root).map_err(|e| {
        Fatal::workspace(format!("cannot create workspace `{}`: {e}", root.display()))
    })?;
    let ws = Workspace::open(&root)?.with_base(&dir);
    Ok((p, ws))
}
