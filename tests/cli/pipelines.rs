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
