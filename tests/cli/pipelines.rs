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
            let out = ws.hone(&["plan", p.to_str().unwrap(), "--workspace", ws.path().to_str().unwrap()]);
            assert_eq!(out.code, 0, "{} does not plan:\n{}", p.display(), out.stderr);
        }
    }
    assert!(n > 0, "no pipelines in {}", dir.display());
}
