//! Ingest + filter throughput on a generated corpus.
//!
//! ```text
//! ingest gen  FILE MB          write MB megabytes of generated JSONL text records to FILE
//! ingest gen-parquet FILE MB  the same documents as a Parquet file (`text`, `id`; snappy, as
//!                             pyarrow writes by default) of at least MB megabytes
//! ingest run  FILE CHAIN       ingest FILE in a fresh workspace beside it, print one JSON line
//! ```
//!
//! CHAIN is `none`, `quality` (gopher-quality, gopher-repetition, c4, dedup-exact), `all`
//! (quality + dedup-minhash), or built-in filter names joined by commas. `bench/ingest.sh` drives both under `/usr/bin/time -v`
//! for peak memory. Without arguments (as `cargo bench` runs it), a 20 MB round trip in a
//! temp dir.
//!
//! The generator is deterministic: English-like prose over a Zipf-ish vocabulary with the
//! common stop words, plus a share of documents each filter should drop (too short,
//! repeated lines, boilerplate, braces, exact and near duplicates).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

const STOP: &[&str] = &[
    "the", "of", "and", "to", "a", "in", "that", "is", "with", "have", "be", "it", "for", "on",
    "as", "was",
];
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "ter", "san", "vel", "dor", "pa", "ri", "con", "sta", "ble", "men", "tion",
    "ar", "ly", "ous", "in", "ex", "pro",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn vocabulary() -> Vec<String> {
    let mut rng = Rng(7);
    (0..4000)
        .map(|_| {
            let n = 1 + rng.below(3);
            (0..n)
                .map(|_| SYLLABLES[rng.below(SYLLABLES.len() as u64) as usize])
                .collect::<String>()
        })
        .collect()
}

/// A document of prose from a seed (so duplicates can be regenerated instead of stored).
fn prose(seed: u64, vocab: &[String]) -> String {
    let mut rng = Rng(seed);
    let paragraphs = 1 + rng.below(5);
    let mut out = String::new();
    for p in 0..paragraphs {
        if p > 0 {
            out.push_str("\n\n");
        }
        let sentences = 3 + rng.below(5);
        for s in 0..sentences {
            if s > 0 {
                out.push(if rng.below(4) == 0 { '\n' } else { ' ' });
            }
            let words = 6 + rng.below(14);
            for w in 0..words {
                let word: &str = if rng.below(10) < 4 {
                    STOP[rng.below(STOP.len() as u64) as usize]
                } else {
                    // Squaring skews towards the front: a few words are common, most rare.
                    let r = rng.below(1 << 16) as f64 / 65536.0;
                    &vocab[(r * r * vocab.len() as f64) as usize]
                };
                if w == 0 {
                    let mut c = word.chars();
                    out.extend(c.next().map(|c| c.to_ascii_uppercase()));
                    out.push_str(c.as_str());
                } else {
                    out.push(' ');
                    out.push_str(word);
                }
            }
            out.push(if rng.below(8) == 0 { '?' } else { '.' });
        }
    }
    out
}

fn document(i: u64, vocab: &[String]) -> String {
    let mut rng = Rng(i ^ 0xabcdef);
    match rng.below(100) {
        0..=79 => prose(i, vocab),
        80..=84 => "Click here to subscribe".to_string(),
        85..=87 => "Buy now and save big today.\n".repeat(30),
        88..=89 => {
            format!("{} Lorem ipsum dolor sit amet, consectetur adipiscing elit.", prose(i, vocab))
        }
        90..=91 => format!("{}\nfunction f() {{ return {i}; }}", prose(i, vocab)),
        92..=95 => prose(i.saturating_sub(1 + rng.below(50)), vocab),
        _ => {
            let mut d = prose(i.saturating_sub(1 + rng.below(50)), vocab);
            d.push_str(" Indeed.");
            d
        }
    }
}

fn generate(path: &Path, mb: u64) -> std::io::Result<(u64, u64)> {
    let vocab = vocabulary();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let (mut bytes, mut docs) = (0u64, 0u64);
    while bytes < mb << 20 {
        let line = serde_json::to_string(
            &serde_json::json!({ "text": document(docs, &vocab), "id": docs }),
        )
        .expect("json");
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
        bytes += line.len() as u64 + 1;
        docs += 1;
    }
    out.flush()?;
    Ok((bytes, docs))
}

/// The same documents as [`generate`] writes, as Parquet (`text` string, `id` int64), snappy
/// compressed, row groups of 100,000 rows, until the file holds at least `mb` MiB.
fn generate_parquet(path: &Path, mb: u64) -> Result<(u64, u64), String> {
    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    use std::sync::Arc;

    let vocab = vocabulary();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(100_000))
        .build();
    let file = File::create(path).map_err(|e| e.to_string())?;
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("text", arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new("id", arrow_schema::DataType::Int64, false),
    ]));
    let mut w =
        ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| e.to_string())?;
    let mut docs = 0u64;
    loop {
        let ids: Vec<i64> = (docs as i64..docs as i64 + 10_000).collect();
        let texts: Vec<String> = ids.iter().map(|&i| document(i as u64, &vocab)).collect();
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(texts)) as ArrayRef,
                Arc::new(Int64Array::from(ids)) as ArrayRef,
            ],
        )
        .map_err(|e| e.to_string())?;
        w.write(&batch).map_err(|e| e.to_string())?;
        docs += 10_000;
        if w.bytes_written() as u64 + w.in_progress_size() as u64 >= mb << 20 {
            break;
        }
    }
    w.close().map_err(|e| e.to_string())?;
    Ok((std::fs::metadata(path).map_err(|e| e.to_string())?.len(), docs))
}

/// The `filters:` YAML of a chain: a preset, or built-in names joined by commas.
fn filters(chain: &str) -> String {
    let names = match chain {
        "none" => "",
        "quality" => "gopher-quality,gopher-repetition,c4,dedup-exact",
        "all" => "gopher-quality,gopher-repetition,c4,dedup-exact,dedup-minhash",
        list => list,
    };
    if names.is_empty() {
        return String::new();
    }
    let items: String = names.split(',').map(|n| format!("      - builtin: {n}\n")).collect();
    format!("    filters:\n{items}")
}

/// A field of /proc/self/status in KiB (0 where there is none, e.g. not on Linux).
fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// Samples the peak anonymous (heap) and file-backed memory while it lives. Peak RSS alone would mislead:
/// the engine hashes input and output files through mmap, and those file pages count in
/// RSS (they are page cache the kernel can drop, not memory the stage holds).
struct AnonPeak {
    stop: std::sync::Arc<AtomicBool>,
    /// Peak (anonymous, file-backed) KiB.
    thread: std::thread::JoinHandle<(u64, u64)>,
}

impl AnonPeak {
    fn start() -> Self {
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut anon, mut file) = (0, 0);
            loop {
                anon = status_kib("RssAnon").max(anon);
                file = status_kib("RssFile").max(file);
                if flag.load(std::sync::atomic::Ordering::Relaxed) {
                    return (anon, file);
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        AnonPeak { stop, thread }
    }
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn run(corpus: &Path, chain: &str) -> Result<String, String> {
    let corpus = corpus.canonicalize().map_err(|e| format!("{}: {e}", corpus.display()))?;
    let ws_dir = PathBuf::from(format!("{}.ws-{chain}", corpus.display()));
    let _ = std::fs::remove_dir_all(&ws_dir);
    std::fs::create_dir_all(&ws_dir).map_err(|e| e.to_string())?;
    let yaml = format!(
        "name: bench\nseed: 1\nstages:\n  corpus:\n    uses: ingest\n    with: {{ source: \"{}\" }}\n{}",
        corpus.display(),
        filters(chain)
    );
    let p = hone_engine::spec::load_str(
        &ws_dir.join("bench.yaml"),
        yaml,
        &hone_stages::registry(),
        &[],
    )
    .map_err(|e| e.to_string())?;
    let ws = hone_engine::workspace::Workspace::open(&ws_dir).map_err(|e| e.to_string())?;
    let _lock = ws.lock(false, || {}).map_err(|e| e.to_string())?;
    let metrics = std::sync::Mutex::new(serde_json::Map::new());
    let sink = |e: hone_engine::events::Event| {
        if let hone_engine::events::Event::StageFinished { metrics: m, .. } = e {
            *metrics.lock().unwrap() = m;
        }
    };
    let bytes = std::fs::metadata(&corpus).map_err(|e| e.to_string())?.len();
    let anon = AnonPeak::start();
    let t0 = Instant::now();
    let summary =
        hone_engine::exec::run(&ws, &p, &Default::default(), &sink, &AtomicBool::new(false))
            .map_err(|e| e.to_string())?;
    let secs = t0.elapsed().as_secs_f64();
    let (anon_peak_kib, file_peak_kib) = anon.finish();
    if let Some((_, e, _)) = summary.failed.first() {
        return Err(e.clone());
    }
    let m = metrics.into_inner().unwrap();
    let _ = std::fs::remove_dir_all(&ws_dir);
    Ok(serde_json::json!({
        "chain": chain,
        "input_mb": bytes as f64 / (1 << 20) as f64,
        "seconds": secs,
        "mb_per_s": bytes as f64 / (1 << 20) as f64 / secs,
        "records": m.get("records"),
        "train": m.get("train"),
        "val": m.get("val"),
        "peak_anon_mib": anon_peak_kib as f64 / 1024.0,
        "peak_file_mib": file_peak_kib as f64 / 1024.0,
        "peak_rss_mib": status_kib("VmHWM") as f64 / 1024.0,
    })
    .to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["gen", file, mb] => {
            let mb = mb.parse().unwrap_or_else(|_| {
                eprintln!("MB must be a number");
                std::process::exit(2)
            });
            generate(Path::new(file), mb)
                .map(|(bytes, docs)| {
                    format!("{{\"file\": {file:?}, \"bytes\": {bytes}, \"docs\": {docs}}}")
                })
                .map_err(|e| e.to_string())
        }
        ["gen-parquet", file, mb] => {
            let mb = mb.parse().unwrap_or_else(|_| {
                eprintln!("MB must be a number");
                std::process::exit(2)
            });
            generate_parquet(Path::new(file), mb).map(|(bytes, docs)| {
                format!("{{\"file\": {file:?}, \"bytes\": {bytes}, \"docs\": {docs}}}")
            })
        }
        ["run", file, chain] => run(Path::new(file), chain),
        [] => {
            let dir = tempfile::tempdir().expect("temp dir");
            let file = dir.path().join("corpus.jsonl");
            generate(&file, 20).map_err(|e| e.to_string()).and_then(|_| run(&file, "quality"))
        }
        _ => Err("usage: ingest gen FILE MB | ingest gen-parquet FILE MB | ingest run FILE none|quality|all|NAME,NAME,..."
            .to_string()),
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
