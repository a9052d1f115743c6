//! Tokenizer benchmark: trains tokenizers on tinyworld's `pretrain` corpus through the engine,
//! then times encoding with the trained `tokenizer.json` (all cores, then one thread).
//! Prints the table for `docs/benchmarks.md` and the artifact digests (compare two runs to
//! check determinism).
//!
//! `cargo run --release -p hone-stages --example tokenizer_bench`

use std::sync::Mutex;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use hone_engine::events::Event;
use hone_engine::exec::{self, RunOptions};
use hone_engine::spec;
use hone_engine::workspace::Workspace;
use hone_stages::model::shards::ShardMeta;
use tokenizers::Tokenizer;

const STAGES: &[(&str, &str)] = &[
    ("bpe512", "{ vocab_size: 512 }"),
    ("bpe4096", "{ vocab_size: 4096 }"),
    ("char", "{ kind: char }"),
];
const REPEATS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let corpus = dir.path().join("corpus");
    std::fs::create_dir(&corpus)?;
    let docs: Vec<String> = hone_stages::tinyworld::dataset("pretrain", 1)
        .expect("tinyworld has pretrain")
        .into_iter()
        .map(|d| d["text"].as_str().unwrap_or_default().to_string())
        .collect();
    let (val, train): (Vec<_>, Vec<_>) = docs.iter().enumerate().partition(|(i, _)| i % 20 == 0);
    let lines = |d: &[(usize, &String)]| {
        d.iter().map(|(_, t)| format!("{}\n", serde_json::json!({ "text": t }))).collect::<String>()
    };
    std::fs::write(corpus.join("train.jsonl"), lines(&train))?;
    std::fs::write(corpus.join("val.jsonl"), lines(&val))?;
    std::fs::write(
        corpus.join("meta.json"),
        serde_json::json!({ "format": "text", "train": train.len(), "val": val.len() }).to_string(),
    )?;
    let train_texts: Vec<String> = train.iter().map(|(_, t)| t.to_string()).collect();
    let train_bytes: usize = train_texts.iter().map(String::len).sum();

    let mut yaml = String::from(
        "name: tokenizer-bench\nseed: 1\nstages:\n  corpus:\n    uses: command\n    with:\n      cmd: cp corpus/* \"$HONE_OUT/\"\n      deps: [corpus]\n",
    );
    for (id, with) in STAGES {
        yaml.push_str(&format!(
            "  {id}:\n    uses: tokenizer\n    inputs: {{ corpus: corpus }}\n    with: {with}\n"
        ));
    }
    let p = spec::load_str(&dir.path().join("bench.yaml"), yaml, &hone_stages::registry(), &[])
        .map_err(|e| e.to_string())?;
    let ws = Workspace::open(dir.path())?;
    let finished = Mutex::new(Vec::new());
    let sink = |e: Event| {
        if let Event::StageFinished { stage, seconds, artifact, .. } = e {
            finished.lock().unwrap().push((stage, seconds, artifact));
        }
    };
    // One stage at a time, so the stage times are not sharing cores.
    let opts = RunOptions { jobs: 1, ..RunOptions::default() };
    let summary = exec::run(&ws, &p, &opts, &sink, &AtomicBool::new(false))?;
    if !summary.ok() {
        return Err(format!("run failed: {:?}", summary.failed).into());
    }

    println!(
        "corpus: tinyworld pretrain seed 1, {} train documents, {:.2} MB; {} cores",
        train.len(),
        train_bytes as f64 / 1e6,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!();
    println!(
        "| tokenizer | vocab | train tokens | bytes/token | stage (train + encode + write) | encode, all cores | encode, 1 thread | encode, per CPU-second |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let finished = finished.into_inner().unwrap();
    for (id, _) in STAGES {
        let (_, seconds, artifact) =
            finished.iter().find(|(s, _, _)| s == id).ok_or("stage did not finish")?;
        let out = ws.store.object_path(artifact);
        let meta: ShardMeta = serde_json::from_slice(&std::fs::read(out.join("meta.json"))?)?;
        let tok = Tokenizer::from_file(out.join("tokenizer.json"))?;
        // Best of a few runs, in MB/s of wall time and of this process's CPU time.
        let rate =
            |parallel: bool| -> Result<(f64, f64), Box<dyn std::error::Error + Send + Sync>> {
                tokenizers::utils::parallelism::set_parallelism(parallel);
                let (mut wall, mut cpu) = (f64::MAX, f64::MAX);
                for _ in 0..REPEATS {
                    let (t, c) = (Instant::now(), cpu_seconds());
                    let enc = tok.encode_batch_fast(train_texts.clone(), false)?;
                    wall = wall.min(t.elapsed().as_secs_f64());
                    cpu = cpu.min(cpu_seconds() - c);
                    std::hint::black_box(enc);
                }
                let mb = train_bytes as f64 / 1e6;
                Ok((mb / wall, mb / cpu.max(0.01)))
            };
        let ((all, _), (one, one_cpu)) = (rate(true)?, rate(false)?);
        let content = meta.train_tokens - train.len() as u64;
        println!(
            "| {id} | {} | {} | {:.2} | {seconds:.2} s | {all:.1} MB/s | {one:.1} MB/s | {one_cpu:.1} MB/s |",
            meta.vocab_size,
            meta.train_tokens,
            train_bytes as f64 / content as f64
        );
    }
    println!();
    for (id, _) in STAGES {
        if let Some((_, _, a)) = finished.iter().find(|(s, _, _)| s == id) {
            println!("{id} artifact {a}");
        }
    }
    Ok(())
}

/// CPU time (user + system) this process has used, from `/proc/self/stat` (Linux; 0 elsewhere).
/// On a shared machine wall time measures the neighbours too; CPU time measures the work.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file, 11 and 12 here; in USER_HZ (100 on Linux).
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}
