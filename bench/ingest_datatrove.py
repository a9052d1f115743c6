"""datatrove's side of bench/ingest_parquet.sh: read a Parquet corpus with `ParquetReader`,
apply the same filters hone's chain does, and write JSONL, in one process (one task, one
worker: datatrove runs a file per task). Prints one JSON line; run it under /usr/bin/time for
CPU time.

    python bench/ingest_datatrove.py CORPUS.parquet none|quality OUT_DIR

`quality` = GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter with their default
thresholds, which hone's gopher-quality, gopher-repetition and c4 filters copy.
"""

import json
import sys
import time
from pathlib import Path

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.writers import JsonlWriter


def main():
    corpus, chain, out = Path(sys.argv[1]).resolve(), sys.argv[2], Path(sys.argv[3])
    steps = [ParquetReader(str(corpus.parent), glob_pattern=corpus.name, text_key="text", id_key="id")]
    if chain == "quality":
        steps += [GopherQualityFilter(), GopherRepetitionFilter(), C4QualityFilter()]
    elif chain != "none":
        sys.exit(f"unknown chain {chain}")
    steps.append(JsonlWriter(str(out / "kept"), compression=None))
    t0 = time.time()
    LocalPipelineExecutor(pipeline=steps, tasks=1, workers=1, logging_dir=str(out / "logs")).run()
    kept = sum(1 for f in (out / "kept").glob("*.jsonl") for _ in open(f))
    print(json.dumps({"chain": chain, "seconds": time.time() - t0, "kept": kept}))


if __name__ == "__main__":
    main()
