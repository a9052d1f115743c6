//! `pipelines/byo-data.yaml` ("bring your own data") end to end through the `hone` binary,
//! on the datasets it ships in `pipelines/data/` (Parquet written by pyarrow and HF
//! `datasets`, a `save_to_disk` folder), shrunk to tiny sizes: every stage runs, the
//! preference folder's pairs reach the reward model, and a var pointed at a file of another
//! form (TRL JSONL) changes only what reads it.

use std::path::Path;

use crate::support::Ws;

/// Tiny sizes, as `-s` overrides.
const TINY: &[&str] = &[
    "vars.threads=1",
    "stages.base.with.n_layer=1",
    "stages.base.with.n_head=2",
    "stages.base.with.n_embd=32",
    "stages.base.with.steps=6",
    "stages.base.with.eval_every=3",
    "stages.base.with.batch_size=4",
    "stages.sft.with.steps=4",
    "stages.sft.with.eval_every=2",
    "stages.sft.with.batch_size=4",
    "stages.sft.with.eval_records=8",
    "stages.reward.with.steps=4",
    "stages.reward.with.batch_size=4",
    "stages.ppo.with.rollouts=8",
    "stages.ppo.with.batch_size=4",
    "stages.ppo.with.steps=4",
    "stages.ppo.with.max_new_tokens=8",
    "stages.eval.with.limit=8",
    "stages.eval.with.max_new_tokens=8",
];

const PIPELINE: &str = "pipelines/byo-data.yaml";

fn hone(ws: &Ws, cmd: &[&str], extra: &[&str]) -> crate::support::Out {
    ws.pipeline(cmd, PIPELINE, &[TINY, extra])
}

fn meta(ws: &Ws, stage: &str, extra: &[&str]) -> serde_json::Value {
    let show = ws.show(PIPELINE, stage, &[TINY, extra]);
    if stage == "eval" {
        return show["metrics"].clone();
    }
    let dir = show["output"].as_str().expect("an output path").to_string();
    serde_json::from_str(&std::fs::read_to_string(Path::new(&dir).join("meta.json")).unwrap())
        .unwrap()
}

#[test]
fn parquet_and_a_datasets_folder_go_through_sft_reward_and_ppo() {
    let ws = Ws::new();
    let out = hone(&ws, &["run"], &[]).ok();
    let mut ran = out.ran();
    ran.sort();
    assert_eq!(
        ran,
        [
            "base",
            "chat",
            "corpus",
            "eval",
            "held_out",
            "pairs",
            "ppo",
            "prompts",
            "rank",
            "reward",
            "sft",
            "tokenizer"
        ]
    );
    // The text Parquet's `text` column (its `id` and `url` are not read), the chat Parquet's
    // `messages` structs, and the `datasets` folder's `train` split of conversational pairs.
    let corpus = meta(&ws, "corpus", &[]);
    assert_eq!((corpus["format"].as_str(), corpus["records"].as_u64()), (Some("text"), Some(1500)));
    let chat = meta(&ws, "chat", &[]);
    assert_eq!((chat["format"].as_str(), chat["records"].as_u64()), (Some("chat"), Some(800)));
    let pairs = meta(&ws, "pairs", &[]);
    assert_eq!(pairs["format"], "preference");
    assert_eq!(pairs["records"].as_u64().unwrap() + pairs["unusable"].as_u64().unwrap_or(0), 400);
    assert_eq!(meta(&ws, "held_out", &[])["records"], 40, "the `test` split");
    let rank = meta(&ws, "rank", &[]);
    assert_eq!(rank["ranked"], pairs["records"], "every pair of the corpus is a ranking");
    let eval = meta(&ws, "eval", &[]);
    assert!(eval.to_string().contains("ppo"), "{eval}");

    // The same pairs as TRL JSONL with string fields: only what reads them is planned.
    let mut jsonl = String::new();
    for i in 0..30 {
        jsonl.push_str(&format!(
            "{{\"prompt\": \"What is {i} plus 1?\", \"chosen\": \"{i} plus 1 is {}.\", \"rejected\": \"Go away.\"}}\n",
            i + 1
        ));
    }
    ws.write("prefs.jsonl", &jsonl);
    let other = format!("vars.preferences={}", ws.path().join("prefs.jsonl").display());
    let plan = hone(&ws, &["plan", "--json"], &[&other]).ok().plan();
    let runs: Vec<&str> =
        plan.iter().filter(|(_, what, _)| what == "run").map(|(id, ..)| id.as_str()).collect();
    for id in ["pairs", "prompts", "held_out", "rank", "reward", "ppo", "eval"] {
        assert!(runs.contains(&id), "{id} should rerun: {plan:?}");
    }
    for id in ["corpus", "tokenizer", "base", "chat", "sft"] {
        assert!(!runs.contains(&id), "{id} should stay cached: {plan:?}");
    }

    // Multi-turn conversations (TRL's conversational form, implicit prompt): the earlier
    // turns are the prompt, kept as a conversation through rank, reward, ppo and evaluate.
    let mut conv = String::new();
    for i in 0..24 {
        let turns = |last: &str| {
            serde_json::json!([
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello! How can I help?"},
                {"role": "user", "content": format!("What is {i} plus 2?")},
                {"role": "assistant", "content": last}
            ])
        };
        let good = format!("{i} plus 2 is {}.", i + 2);
        conv.push_str(&format!(
            "{}\n",
            serde_json::json!({"chosen": turns(&good), "rejected": turns("I do not know.")})
        ));
    }
    ws.write("conv.jsonl", &conv);
    let conv_var = format!("vars.preferences={}", ws.path().join("conv.jsonl").display());
    let out = hone(&ws, &["run"], &[&conv_var]).ok();
    assert!(out.ran().contains(&"ppo".to_string()), "{}", out.stderr);
    let dir = |stage: &str| {
        let yaml = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/byo-data.yaml");
        let w = ws.path().to_str().unwrap().to_string();
        let mut args = vec!["show", stage, yaml.to_str().unwrap(), "--workspace", &w, "--json"];
        for s in TINY.iter().chain([&conv_var.as_str()]) {
            args.extend(["-s", s]);
        }
        let show: serde_json::Value = serde_json::from_str(&ws.hone(&args).ok().stdout).unwrap();
        std::path::PathBuf::from(show["output"].as_str().unwrap())
    };
    let first = |path: std::path::PathBuf| -> serde_json::Value {
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(text.lines().next().unwrap()).unwrap()
    };
    let prompt = &first(dir("rank").join("rankings.jsonl"))["prompt"];
    assert_eq!(prompt.as_array().map(Vec::len), Some(3), "{prompt}");
    assert_eq!(prompt[2]["role"], "user");
    let answer = first(dir("eval").join("answers.jsonl"));
    assert_eq!(answer["prompt"].as_array().map(Vec::len), Some(3), "{answer}");
}
