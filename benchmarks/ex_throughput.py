"""Execution-accuracy throughput with test-suite databases (3 per pair): scored pairs per second,
one process and Ray tasks over both cores, in one run (goal >= 200 pairs/s on 2 cores).

    python benchmarks/ex_throughput.py [--pairs 2000]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sqlray.evaluation.scoring import score_row, score_rows

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=2000)
    args = ap.parse_args()
    gold = [json.loads(x) for f in ("test.jsonl", "validation.jsonl", "train.jsonl")
            for x in (REPO / "data" / "text2sql" / f).read_text().splitlines()]
    # half the predictions are right, half are perturbed (a different literal or operator)
    rows = []
    for i, r in enumerate(gold[: args.pairs]):
        pred = r["answer"] if i % 2 else r["answer"].replace(">", ">=").replace("<", "<=").replace("LIMIT 1", "LIMIT 2")
        rows.append({**r, "prediction": pred})
    t = time.perf_counter()
    single = [score_row(r) for r in rows]
    one = len(rows) / (time.perf_counter() - t)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    score_rows(rows[:128])  # warm the workers
    t = time.perf_counter()
    parallel = score_rows(rows)
    two = len(rows) / (time.perf_counter() - t)
    ray.shutdown()
    assert [r["ex"] for r in single] == [r["ex"] for r in parallel]
    print(f"{'path':<28}{'pairs/s':>10}")
    print(f"{'1 process':<28}{one:>10.0f}")
    print(f"{'Ray tasks, 2 cores':<28}{two:>10.0f}")
    changed = [r for r in single if r["prediction"] != r["answer"]]
    print(f"EX on this set: {sum(bool(r['ex']) for r in single) / len(single):.3f}; {len(changed)} of {len(single)} "
          f"predictions differ from gold, and EX marks {sum(not r['ex'] for r in changed)} of those wrong")


if __name__ == "__main__":
    main()
