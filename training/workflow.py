"""The main job: score the base model, fine-tune, score the result, write summary.json and print a table."""
from __future__ import annotations

import json
import time
from pathlib import Path

from sqlray.core import atomic_write_jsonl, atomic_write_text, format_table
from sqlray.training.config import TrainConfig


def evaluate_model(model: str, cfg: TrainConfig, out_dir: Path | None = None, tag: str = "",
                   constrain: bool | None = None) -> dict[str, dict]:
    """EM/EX on each test split with Ray generator actors; scored rows go to out_dir/scored_{tag}_{split}.jsonl.
    ``constrain``: decode under the schema grammar (default: ``eval.constrain_sql``)."""
    constrain = cfg.eval.constrain_sql if constrain is None else constrain
    from sqlray.evaluation.generate import generate_with_actors
    from sqlray.evaluation.scoring import join_predictions, score_row, summarize
    from sqlray.text2sql import get_split, load_text2sql

    dd = load_text2sql(cfg.data.source, cfg.data.config_name)
    results = {}
    for split in cfg.data.test_splits:
        rows = list(get_split(dd, split, cfg.data.source))[: cfg.eval.max_rows]
        for i, r in enumerate(rows):
            r.setdefault("id", f"{split}-{i}")
        preds = generate_with_actors(model, rows, num_actors=cfg.eval.num_actors,
                                     max_new_tokens=cfg.eval.max_new_tokens, batch_size=cfg.eval.batch_size,
                                     constrain=constrain, use_gpu=eval_on_gpu(cfg),
                                     rename=cfg.eval.rename_names)
        scored = [score_row(r) for r in join_predictions(rows, preds)]
        results[split] = {**summarize(scored)["all"], "by_lang": summarize(scored, "lang"),
                          "by_shape": summarize(scored, "shape")}
        if out_dir is not None:
            atomic_write_jsonl(out_dir / f"scored_{tag}_{split}.jsonl", scored)
    return results


def eval_on_gpu(cfg: TrainConfig) -> bool:
    return cfg.scaling.use_gpu if cfg.eval.use_gpu is None else cfg.eval.use_gpu


def before_after_table(before: dict[str, dict], after: dict[str, dict], free: dict[str, dict] | None = None) -> str:
    """EM/EX before and after training; with ``free`` (scores of unconstrained decoding) two more columns."""
    rows = [[split, a["n"], before.get(split, {}).get("em"), a.get("em"), before.get(split, {}).get("ex"), a.get("ex")]
            for split, a in after.items()]
    head = ["split", "n", "EM before", "EM after", "EX before", "EX after"]
    if free:
        rows = [[*r, free.get(r[0], {}).get("em"), free.get(r[0], {}).get("ex")] for r in rows]
        head += ["EM after, free decoding", "EX after, free decoding"]
    return format_table(head, rows)


def breakdown_table(after: dict[str, dict]) -> str:
    """EX after training by SQL shape (rows) and split (columns), with each split's Korean / English EX."""
    splits = [s for s in after if "by_shape" in after[s]]
    shapes = sorted({k for s in splits for k in after[s]["by_shape"]})
    rows = [["Korean", *[after[s]["by_lang"].get("ko", {}).get("ex") for s in splits]],
            ["English", *[after[s]["by_lang"].get("en", {}).get("ex") for s in splits]]]
    rows += [[k, *[after[s]["by_shape"].get(k, {}).get("ex") for s in splits]] for k in shapes]
    return format_table(["EX after, by", *splits], rows, floats=".2f")


def targets_table(after: dict[str, dict], targets: dict[str, float],
                  before: dict[str, dict] | None = None) -> tuple[str, dict[str, dict]]:
    """Each goal (split: lowest acceptable EX) beside the EX reached, and the base's where it was scored (so
    the table shows what training added): the printed table and, per split, target, EX and met. A split
    that was not scored is not met."""
    verdict = {}
    for split, goal in targets.items():
        ex = after.get(split, {}).get("ex")
        verdict[split] = {"target_ex": goal, "ex": ex, "met": ex is not None and ex >= goal}
    rows = [[s, v["target_ex"], (before or {}).get(s, {}).get("ex"), v["ex"],
             "yes" if v["met"] else ("NO" if v["ex"] is not None else "not scored")] for s, v in verdict.items()]
    return format_table(["split", "EX target", "EX before", "EX after", "met"], rows), verdict


def train_and_evaluate(cfg: TrainConfig) -> Path:
    from sqlray.training.driver import ensure_train_ray, preflight, run_dir, run_training

    t0 = time.time()
    preflight(cfg)
    ensure_train_ray(cfg)
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    before = {}
    if cfg.eval.enabled and cfg.eval.score_base:
        print(f"[sqlray] scoring the base model {cfg.model.name_or_path} on {cfg.data.test_splits}", flush=True)
        before = evaluate_model(cfg.model.name_or_path, cfg, out, "base")
    print(f"[sqlray] fine-tuning ({cfg.model.method}, ZeRO-{cfg.deepspeed.stage}, "
          f"{cfg.scaling.num_workers} workers)", flush=True)
    outcome = run_training(cfg, checked=True)
    after, free = {}, {}
    if cfg.eval.enabled:
        print("[sqlray] scoring the fine-tuned model", flush=True)
        after = evaluate_model(str(outcome.model_dir), cfg, out, "finetuned")
        if cfg.eval.constrain_sql and cfg.eval.also_unconstrained:
            print("[sqlray] scoring it again with free (unconstrained) decoding", flush=True)
            free = evaluate_model(str(outcome.model_dir), cfg, out, "finetuned_free", constrain=False)
    goals, verdict = targets_table(after, cfg.eval.targets, before) if after and cfg.eval.targets else ("", {})
    summary = {"run": cfg.run.name, "model_dir": str(outcome.model_dir),
               "adapter_dir": str(outcome.adapter_dir) if outcome.adapter_dir else None,
               "splits": after, "splits_free_decoding": free, "before": before, "targets": verdict,
               "train": outcome.metrics, "wall_clock_s": round(time.time() - t0, 1),
               "config": cfg.model_dump(mode="json")}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False))
    if after:
        print("\n" + before_after_table(before, after, free) + "\n")
        print(breakdown_table(after) + "\n")
        if goals:
            print(goals + "\n")
    print(f"[sqlray] loss curve: {out / 'loss_curve.png'}")
    print(f"[sqlray] run folder: {out}")
    return out
