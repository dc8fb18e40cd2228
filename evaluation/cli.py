"""`sqlray eval generate|score|report`."""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from sqlray.core import ConfigError, atomic_write_jsonl, ensure_ray


def with_ids(rows: list[dict]) -> list[dict]:
    """Rows keep their id; rows without one get a content key (never a position)."""
    out = []
    for r in rows:
        if "id" not in r:
            blob = json.dumps([r.get("context"), r.get("question"), r.get("answer")], ensure_ascii=False)
            r = {**r, "id": hashlib.sha256(blob.encode()).hexdigest()[:16]}
        out.append(r)
    return out


def _cmd_generate(args) -> None:
    from sqlray.evaluation.generate import generate_via_endpoint, generate_with_actors
    from sqlray.evaluation.scoring import join_predictions
    from sqlray.text2sql import get_split, load_text2sql

    rows = with_ids(list(get_split(load_text2sql(args.data, args.data_config), args.split, args.data)))[: args.max_rows]
    if args.endpoint:
        if args.constrain:
            raise ConfigError("--constrain needs a local --model: an endpoint's /v1/completions decodes freely "
                              "(sqlray's /v1/sql is constrained server-side); drop --constrain")
        if args.rename:
            raise ConfigError("--rename needs a local --model: the prompt goes to the endpoint as it is "
                              "(sqlray's /v1/sql renames server-side); drop --rename")
        preds = generate_via_endpoint(args.endpoint, args.model, rows, args.max_new_tokens, args.concurrency)
    else:
        ensure_ray()
        preds = generate_with_actors(args.model, rows, args.adapter, args.num_actors, args.max_new_tokens, args.batch_size,
                                     constrain=args.constrain is not False, use_gpu=args.gpu,
                                     rename=args.rename is not False)
    atomic_write_jsonl(args.out, [{**r, "split": args.split} for r in join_predictions(rows, preds)])
    print(args.out)


def score_file(rows: list[dict], metrics: set[str], judge_settings=None, journal=None) -> list[dict]:
    from sqlray.evaluation.judge_runner import run_judge
    from sqlray.evaluation.scoring import ScoreError, score_rows

    rows = with_ids(rows)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ScoreError("input: duplicate 'id' values; rows are joined by id, so ids must be unique")
    scored = score_rows(rows) if metrics & {"em", "ex"} else [dict(r) for r in rows]
    if "judge" in metrics:
        out = run_judge(rows, judge_settings, journal)
        for r in scored:
            r["judge"], r["judge_error"] = out["verdicts"][str(r["id"])], out["errors"][str(r["id"])]
        print(f"judge: {out['requests_sent']} requests sent, {out['prompt_tokens']} prompt + "
              f"{out['completion_tokens']} completion tokens")
    return scored


def _cmd_score(args) -> None:
    from sqlray.evaluation.judge_runner import JudgeSettings
    from sqlray.evaluation.report import read_jsonl

    metrics = {m.strip() for m in args.metrics.split(",")}
    unknown = metrics - {"em", "ex", "judge"}
    if unknown:
        raise SystemExit(f"sqlray: error: --metrics: unknown {sorted(unknown)}; expected em, ex, judge")
    ensure_ray()
    settings = JudgeSettings(model=args.judge_model, base_url=args.judge_base_url, rpm=args.rpm, tpm=args.tpm,
                             num_actors=args.judge_actors)
    journal = args.journal or f"{args.output}.journal.sqlite"
    scored = score_file(read_jsonl(args.input), metrics, settings, journal)
    atomic_write_jsonl(args.output, scored)
    print(args.output)


def _cmd_report(args) -> None:
    from sqlray.evaluation.report import plot_report, read_jsonl, report_tables

    files = {Path(f).stem: read_jsonl(f) for f in args.files}
    print(report_tables(files))
    print(plot_report(files, args.png))


def add_commands(sub) -> None:
    e = sub.add_parser("eval", help="generate predictions, score them (EM, EX, judge), report")
    es = e.add_subparsers(dest="eval_command", required=True)

    g = es.add_parser("generate", help="greedy SQL generation with the reference prompt")
    g.add_argument("--model", required=True, help="model folder or hub id (or the model name at --endpoint)")
    g.add_argument("--adapter", help="LoRA adapter folder")
    g.add_argument("--endpoint", help="OpenAI-compatible base URL (…/v1) instead of a local model")
    g.add_argument("--data", default="data/text2sql")
    g.add_argument("--data-config")
    g.add_argument("--split", default="test")
    g.add_argument("--out", required=True)
    g.add_argument("--max-rows", type=int)
    g.add_argument("--num-actors", type=int, default=2)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--gpu", action="store_true", help="one GPU per generator actor, bf16/fp16 decoding")
    g.add_argument("--concurrency", type=int, default=8)
    g.add_argument("--max-new-tokens", type=int, default=128)
    g.add_argument("--constrain", action=argparse.BooleanOptionalAction, default=None,
                   help="decode under each row's schema grammar (names from its DDL, literals from its question); "
                        "on by default for a local --model, not available with --endpoint")
    g.add_argument("--rename", action=argparse.BooleanOptionalAction, default=None,
                   help="rename tables and columns the model never saw to names it knows, and back in its SQL, "
                        "when its folder has a schema_vocab.json (evaluation.rename); on by default for a local "
                        "--model, not available with --endpoint")
    g.set_defaults(fn=_cmd_generate)

    s = es.add_parser("score", help="add em, ex (test-suite), judge to every row")
    s.add_argument("--input", required=True)
    s.add_argument("--output", required=True)
    s.add_argument("--metrics", default="em,ex")
    s.add_argument("--judge-model", default="gpt-4-turbo-preview")
    s.add_argument("--judge-base-url", help="OpenAI-compatible base URL; OPENAI_BASE_URL otherwise")
    s.add_argument("--journal", help="judge journal (default: OUTPUT.journal.sqlite); rerun to resume")
    s.add_argument("--rpm", type=float, default=2500)
    s.add_argument("--tpm", type=float, default=100_000)
    s.add_argument("--judge-actors", type=int, default=4)
    s.set_defaults(fn=_cmd_score)

    r = es.add_parser("report", help="tables and a PNG chart over scored files")
    r.add_argument("files", nargs="+")
    r.add_argument("--png", default="report.png")
    r.set_defaults(fn=_cmd_report)
