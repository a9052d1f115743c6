//! Every pipeline shipped in `pipelines/` loads and plans.

use crate::support::Ws;

#[test]
fn every_shipped_pipeline_loads_and_plans() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            n += 1;
            let ws = Ws::new();
            let out =
                ws.hone(&["plan", p.to_str().unwrap(), "--workspace", ws.path().to_str().unwrap()]);
            assert_eq!(out.code, 0, "{} does not plan:\n{}", p.display(), out.stderr);
        }
    }
    assert!(n > 0, "no pipelines in {}", dir.display());
}

#[test]
fn the_same_seed_gives_the_same_digests_in_fresh_workspaces() {
    let pipeline = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/data.yaml");
    let digests: Vec<(String, String)> = (0..2)
        .map(|_| {
            let ws = Ws::new();
            let w = ws.path().to_str().unwrap().to_string();
            let p = pipeline.to_str().unwrap();
            ws.hone(&["run", p, "--workspace", &w]).ok();
            let show = |id: &str| {
                let v: serde_json::Value = serde_json::from_str(
                    &ws.hone(&["show", id, p, "--workspace", &w, "--json"]).ok().stdout,
                )
                .unwrap();
                v["artifact"].as_str().unwrap().to_string()
            };
            (show("corpus"), show("tokenizer"))
        })
        .collect();
    assert_eq!(digests[0], digests[1]);
}

/// `compare.yaml` is the default pipeline with `dpo` and `grpo` branches: every other stage, and the
/// vars they read, are the default's, so that in the same store they come from its cache.
#[test]
fn the_comparison_pipeline_shares_every_stage_but_its_own_with_the_default() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines");
    let read = |f: &str| -> serde_yaml::Value {
        serde_yaml::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let (default, compare) = (read("tiny-chatgpt.yaml"), read("compare.yaml"));
    assert_eq!(default["seed"], compare["seed"]);
    for (var, value) in default["vars"].as_mapping().unwrap() {
        assert_eq!(&compare["vars"][var], value, "var {var:?}");
    }
    let own = ["dpo", "grpo", "eval"];
    for (id, stage) in default["stages"].as_mapping().unwrap() {
        if !own.contains(&id.as_str().unwrap()) {
            assert_eq!(&compare["stages"][id], stage, "stage {id:?} differs from the default's");
        }
    }
    let models = compare["stages"]["eval"]["inputs"]["models"].as_sequence().unwrap();
    assert_eq!(models.len(), 5, "base, sft, ppo, dpo and grpo side by side");
}
