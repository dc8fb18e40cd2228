"""Renaming's development set (README, "Renaming names the model never saw"): 300 rows over 40 generated
schemas whose every name is a common English word outside the generator's vocabulary, scored as they are
and renamed (execution accuracy under the schema grammar, by language), side by side in one run.

    python benchmarks/rename_dev.py [--model data/tiny-sql-base] [--rows 300] [--split-file dev.jsonl]

The game database is not used to choose anything: this set is.
"""
from __future__ import annotations

import argparse
import json
import random

from sqlray.core import format_table


def dev_rows(n_schemas: int = 40, rows: int = 300) -> list[dict]:
    from sqlray.training.datagen import database_rows
    from sqlray.training.schemagen import synth_databases

    dbs = synth_databases(n_schemas, seed=2026, first_id=9000, nonce=1.0, words="english")
    rng = random.Random(7)
    out = [r for db in dbs for r in database_rows(db, rng, variants=1)]
    rng.shuffle(out)
    return [dict(r, id=f"dev-{i}") for i, r in enumerate(out[:rows])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="data/tiny-sql-base")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--split-file", help="also write the rows here (jsonl), e.g. for `sqlray eval generate`")
    args = ap.parse_args()

    from sqlray.evaluation.generate import generate_sql, load_for_generation
    from sqlray.evaluation.rename import load_vocab
    from sqlray.evaluation.scoring import join_predictions, score_row

    rows = dev_rows(rows=args.rows)
    if args.split_file:
        with open(args.split_file, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    vocab = load_vocab(args.model)
    if vocab is None:
        raise SystemExit(f"{args.model} has no schema_vocab.json: nothing to compare")
    model, tok = load_for_generation(args.model)
    table = []
    for name, v in (("as it is", None), ("renamed", vocab)):
        scored = [score_row(r) for r in join_predictions(rows, generate_sql(model, tok, rows, 96, 32, True, v))]
        ex = lambda lang: sum(bool(r.get("ex")) for r in scored if lang in (None, r["lang"])) / max(
            1, sum(lang in (None, r["lang"]) for r in scored))
        table.append([name, len(scored), ex(None), ex("en"), ex("ko"),
                      sum("renamed" in r for r in scored)])
    print(format_table(["prompt", "rows", "EX", "EX en", "EX ko", "rows renamed"], table))


if __name__ == "__main__":
    main()
