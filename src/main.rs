//! `hone`: run, plan and inspect ML pipelines. The CLI parses flags, loads the pipeline,
//! and hands the engine a reporter; the commands themselves live in `commands.rs`.
//!
//! Exit codes:
//! - 0: success
//! - 1: a stage failed (`run`), `cache verify` found corrupted objects, or `generate`/`chat`/`score` failed
//! - 2: bad command-line usage
//! - 3: the pipeline file is missing or invalid
//! - 4: workspace error (busy with `--no-wait`, unreadable store, unknown stage id)
//! - 5: a stage awaits input from a person (`hone label STAGE`); finished stages stay cached
//! - 130: interrupted (Ctrl-C)

mod cluster;
mod commands;
mod exit;
mod history;
mod pipeline;
mod remote;
mod report;
mod sweep;
mod tracker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "hone",
    version,
    about = "The ChatGPT training recipe as a declarative, cached, reproducible pipeline"
)]
#[command(
    after_help = "Exit codes: 0 ok, 1 stage failed or corruption found, 2 usage, 3 invalid pipeline, 4 workspace error, 5 a stage awaits input (hone label), 130 interrupted"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the pipeline: stages whose inputs changed run, the rest come from the cache.
    Run {
        #[command(flatten)]
        p: PipelineArgs,
        #[command(flatten)]
        sel: SelectArgs,
        /// Run every combination of these values as a variant (`--sweep
        /// stages.ppo.with.lr=1e-5,3e-5`, repeatable: the cross product). Stages the variants
        /// share run once; the variants run side by side; each is recorded as a run.
        #[arg(long, value_name = "KEY=V1,V2")]
        sweep: Vec<String>,
        /// Log the run to this MLflow tracking server (default: `MLFLOW_TRACKING_URI`, if set):
        /// params, stepwise metrics, artifact paths. A server that is down costs a warning.
        #[arg(long, value_name = "URI")]
        mlflow: Option<String>,
        /// How many stages may run at once (default: number of CPUs).
        #[arg(short, long, value_name = "N")]
        jobs: Option<usize>,
        /// Fail at once instead of waiting when another run holds the workspace.
        #[arg(long)]
        no_wait: bool,
        /// Print events as JSON lines on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        ex: cluster::ExecArgs,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// List the recorded runs, newest first: when, pipeline, overrides, what ran (every
    /// `hone run` is recorded in the store's `history/`).
    Runs {
        #[command(flatten)]
        h: HistoryArgs,
        /// Only the newest N.
        #[arg(short = 'n', long, value_name = "N")]
        last: Option<usize>,
        /// Print the runs as JSON (a line each, as the table shows them).
        #[arg(long)]
        json: bool,
        /// With --json: the whole records (each stage's key, params and metrics).
        #[arg(long, requires = "json")]
        full: bool,
    },
    /// What differs between two recorded runs: overrides, params, stages whose key changed,
    /// metrics side by side. A and B are run ids (or unique prefixes) or -N (the N-th newest);
    /// the default is the last two runs.
    Diff {
        #[arg(allow_hyphen_values = true)]
        a: Option<String>,
        #[arg(allow_hyphen_values = true)]
        b: Option<String>,
        #[command(flatten)]
        h: HistoryArgs,
        #[arg(long)]
        json: bool,
    },
    /// The jobs of the latest Slurm submission (`hone run --executor slurm`) and their states.
    Status {
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long)]
        json: bool,
    },
    /// Run, then rerun what is affected whenever the pipeline or a file it reads changes.
    Watch {
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(short, long, value_name = "N")]
        jobs: Option<usize>,
    },
    /// Say what `run` would do for every stage, and why.
    Plan {
        #[command(flatten)]
        p: PipelineArgs,
        #[command(flatten)]
        sel: SelectArgs,
        /// Plan every combination of these values as a variant (as `run --sweep`).
        #[arg(long, value_name = "KEY=V1,V2")]
        sweep: Vec<String>,
        /// Also say which stages the remote cache would give (`run --remote`).
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
        remote: Option<String>,
        /// Print `{"stages":[{"id","action","reasons"}...]}`.
        #[arg(long)]
        json: bool,
    },
    /// Show a stage's state, key, outputs, metrics and log.
    Show {
        /// The stage id.
        id: String,
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long)]
        json: bool,
    },
    /// Write an HTML page of the pipeline's results (stage graph and states, training curves,
    /// data filter counts, evaluation table, sample answers) and print its path.
    Report {
        #[command(flatten)]
        p: PipelineArgs,
        /// Where to write it (default: `.hone/reports/<pipeline name>.html` in the workspace).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Copy a stage's outputs out of the store.
    Export {
        id: String,
        /// Destination directory (must not exist, or be empty).
        dest: PathBuf,
        #[command(flatten)]
        p: PipelineArgs,
    },
    /// Print the stage graph.
    Graph {
        #[command(flatten)]
        p: PipelineArgs,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Print the digest hone gives a file or directory (as used in stage keys).
    Digest {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// List the stage kinds hone knows, with their ports.
    Kinds {
        /// Only this kind.
        kind: Option<String>,
    },
    /// Write WASM filter plugins.
    Plugin {
        #[command(subcommand)]
        op: PluginOp,
    },
    /// Sample text from a model: a model directory, or a stage's output with --stage.
    Generate(GenerateArgs),
    /// Chat with a chat model (an `sft` stage's output): interactive, or one answer with --prompt.
    Chat(ChatArgs),
    /// Score an answer to a prompt with a reward model (a `reward` stage's output): the raw reward and σ(r).
    Score(ScoreArgs),
    /// Run one stage job (a JSON file written by a remote executor) and print its events as
    /// JSON lines: what `hone run --executor slurm` submits.
    #[command(hide = true)]
    ExecStage {
        /// The job file.
        job: PathBuf,
    },
    /// Rank a `rank` stage's candidates by hand (`labeler: human`): an interactive session
    /// that saves every answer at once and resumes where it stopped.
    Label {
        /// The `rank` stage's id.
        id: String,
        #[command(flatten)]
        p: PipelineArgs,
    },
    /// Inspect and maintain the store.
    Cache {
        #[command(subcommand)]
        op: CacheOp,
        /// The workspace (default: the current directory).
        #[arg(long, global = true, value_name = "DIR")]
        workspace: Option<PathBuf>,
    },
}

/// Which model `generate` and `chat` use: a directory, or a stage's up-to-date output.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "stage"])))]
struct ModelArgs {
    /// A model directory (`model.safetensors`, `config.json`, `tokenizer.json`).
    model: Option<PathBuf>,
    /// Or: the id of a stage whose output is a model (it must be up to date).
    #[arg(long, value_name = "ID")]
    stage: Option<String>,
    /// With --stage: the pipeline file (default: ./pipeline.yaml, else the bundled default).
    #[arg(long, value_name = "FILE", requires = "stage")]
    pipeline: Option<PathBuf>,
    /// With --stage: override a pipeline value, as for `run`.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE", requires = "stage")]
    set: Vec<String>,
    /// With --stage: where `.hone/` lives.
    #[arg(long, value_name = "DIR", requires = "stage")]
    workspace: Option<PathBuf>,
}

/// Sampling flags; unset ones come from the model's generation_config.json.
#[derive(Args)]
struct SamplingArgs {
    /// New tokens at most.
    #[arg(short = 'n', long)]
    max_tokens: Option<usize>,
    /// 0 is greedy; higher is more random.
    #[arg(short, long)]
    temperature: Option<f64>,
    /// Sample from the k most likely tokens only (0: all).
    #[arg(long)]
    top_k: Option<usize>,
    /// Sample from the most likely tokens whose probability adds up to p.
    #[arg(long)]
    top_p: Option<f64>,
    /// Seed of the sampling: the same seed gives the same text.
    #[arg(long, default_value_t = 1337)]
    seed: u64,
}

impl SamplingArgs {
    /// The flags that override the model's `generation_config.json`.
    fn overrides(&self) -> hone_stages::model::sample::Overrides {
        hone_stages::model::sample::Overrides {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            max_new_tokens: self.max_tokens,
        }
    }
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    src: ModelArgs,
    /// The text to continue (empty: start from <|endoftext|>).
    #[arg(short, long, default_value = "")]
    prompt: String,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Args)]
struct ChatArgs {
    #[command(flatten)]
    src: ModelArgs,
    /// Answer this one message, print the reply to stdout and exit (for scripts).
    #[arg(short, long)]
    prompt: Option<String>,
    /// A system message to start the conversation with.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
}

#[derive(Args)]
struct ScoreArgs {
    #[command(flatten)]
    src: ModelArgs,
    /// The prompt (the user's message).
    #[arg(short, long)]
    prompt: String,
    /// The answer to score (the assistant's message).
    #[arg(short, long)]
    answer: String,
    /// Print `{"reward": r, "score": σ(r)}`.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum CacheOp {
    /// List cache entries.
    Ls,
    /// Delete objects and records that no pipeline's current stages use.
    Gc {
        #[arg(long)]
        dry_run: bool,
    },
    /// Re-hash every object; quarantine corrupted ones so the next run recomputes them.
    Verify,
    /// Upload the store's records (or those of these stages) that the remote cache lacks:
    /// objects first, records last.
    Push {
        /// Only the records of these stage ids.
        stages: Vec<String>,
        /// The remote (default: HONE_REMOTE, else `hone cache remote`'s setting).
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
    },
    /// Download the remote cache's records (or those of these stages) that the store lacks,
    /// each object's digest checked before it enters the store.
    Pull {
        /// Only the records of these stage ids.
        stages: Vec<String>,
        /// The remote (default: HONE_REMOTE, else `hone cache remote`'s setting).
        #[arg(long, value_name = "URL")]
        remote: Option<String>,
    },
    /// Show the remote cache in effect, or save URL as this workspace's (`--user`: yours).
    /// URLs: s3://bucket/prefix, gs://…, az://…, http(s)://host/path (WebDAV), a directory.
    /// Credentials come from the environment (AWS_*, GOOGLE_*, AZURE_*), never the URL.
    Remote {
        url: Option<String>,
        #[arg(long)]
        user: bool,
    },
}

/// The remote cache of `run`.
#[derive(Args, Clone, Default)]
pub(crate) struct RemoteArgs {
    /// Fetch stages whose key the remote cache holds instead of running them: URL, or without
    /// one the configured remote (HONE_REMOTE, else `hone cache remote`'s setting).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    remote: Option<String>,
    /// Upload each stage's result to the remote cache as it finishes (with --remote's).
    #[arg(long)]
    push: bool,
}

#[derive(Subcommand)]
enum PluginOp {
    /// Create a plugin crate NAME that builds as is for wasm32-wasip2.
    New {
        /// The crate name (letters, digits, `-`, `_`).
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Copy, Clone, ValueEnum)]
enum GraphFormat {
    Dot,
    Mermaid,
}

/// Which stages `run` and `plan` apply to.
#[derive(Args, Clone)]
struct SelectArgs {
    /// Only these stages (their inputs must be cached).
    #[arg(long, value_name = "ID", num_args = 1.., conflicts_with = "until")]
    only: Vec<String>,
    /// This stage and everything it depends on.
    #[arg(long, value_name = "ID")]
    until: Option<String>,
    /// These stages even if cached.
    #[arg(long, value_name = "ID", num_args = 1..)]
    force: Vec<String>,
}

#[derive(Args, Clone)]
pub(crate) struct PipelineArgs {
    /// The pipeline file (default: ./pipeline.yaml, else the bundled default pipeline).
    pipeline: Option<PathBuf>,
    /// Override a value: `-s vars.d_model=192`, `-s stages.train.with.lr=3e-4`.
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where the store (`.hone/`) lives (default: the pipeline file's directory). Relative
    /// paths in the pipeline still resolve against the pipeline file's directory.
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
}

/// Where the run history is: the workspace of a pipeline, as for `hone run`.
#[derive(Args)]
pub(crate) struct HistoryArgs {
    /// The pipeline whose workspace holds the history (default: as `hone run` finds it).
    #[arg(long, value_name = "FILE")]
    pipeline: Option<PathBuf>,
    /// The workspace (the directory holding `.hone/`), instead of the pipeline's.
    #[arg(long, value_name = "DIR")]
    workspace: Option<PathBuf>,
}

fn main() -> ExitCode {
    // SAFETY: the first statement of main, before any thread exists.
    unsafe { hone_stages::init() };
    let cli = Cli::parse();
    commands::init_tracing();
    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("{}", e.message);
            ExitCode::from(e.code)
        }
    }
}
