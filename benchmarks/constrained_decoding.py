"""What the schema grammar costs and buys: the same model generates SQL for the same rows with free
decoding and under each row's grammar (evaluation/constrain.py), side by side in one run, on one thread.
Prints rows/s, generated tokens/s, the slowdown and EX for both. Use a trained model (the demo's
runs/tiny-cpu/model) for EX figures that mean anything; the default untrained tiny model shows cost only.

    python benchmarks/constrained_decoding.py [--model runs/tiny-cpu/model] [--split test_unseen_schemas]
        [--rows 96] [--batch-size 32]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    import torch

    from sqlray.core import format_table
    from sqlray.evaluation.generate import generate_sql, load_for_generation
    from sqlray.evaluation.scoring import join_predictions, score_row, summarize
    from sqlray.text2sql import load_text2sql
    from sqlray.training.tiny import ensure_tiny_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(REPO / ".cache" / "tiny-llama"))
    ap.add_argument("--split", default="test_unseen_schemas")
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.model == str(REPO / ".cache" / "tiny-llama"):
        ensure_tiny_model(a.model, str(REPO / "data" / "text2sql"))
    model, tok = load_for_generation(a.model)
    rows = [{**r, "id": i} for i, r in enumerate(load_text2sql(str(REPO / "data" / "text2sql"))[a.split])][: a.rows]
    generate_sql(model, tok, rows[:4], 8, 4, constrain=True)  # warm-up: kernels, the grammar compiler
    table = []
    for constrain in (False, True):
        t = time.perf_counter()
        preds = generate_sql(model, tok, rows, a.max_new_tokens, a.batch_size, constrain=constrain)
        dt = time.perf_counter() - t
        tokens = sum(len(tok(p["raw"], add_special_tokens=False)["input_ids"]) for p in preds)
        ex = summarize([score_row(r) for r in join_predictions(rows, preds)])["all"]["ex"]
        table.append(["schema grammar" if constrain else "free", len(rows), dt, len(rows) / dt, tokens / dt, ex])
    print(format_table(["decoding", "rows", "seconds", "rows/s", "tokens/s", "EX"], table, floats=".3f"))
    print(f"grammar / free time: {table[1][2] / table[0][2]:.2f}x   (model {a.model}, split {a.split}, 1 thread)")


if __name__ == "__main__":
    main()
