"""The reference's cleaning step: the judge checks each training row's SQL against its question and DDL;
rows it rejects are dropped and reported. Other splits are copied unchanged."""
from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from sqlray.evaluation.judge import clean_messages
from sqlray.evaluation.judge_runner import JudgeSettings, run_judge


def _clean_build(r: dict) -> list[dict]:
    return clean_messages(r["context"], r["question"], r["answer"])


def clean_dataset(source: str, out_dir: str | Path, s: JudgeSettings, split: str = "train",
                  journal: str | Path | None = None) -> dict:
    from sqlray.core import atomic_write_jsonl
    from sqlray.evaluation.cli import with_ids
    from sqlray.text2sql import get_split, load_text2sql

    dd = load_text2sql(source)
    rows = with_ids(list(get_split(dd, split, source)))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = run_judge(rows, s, journal or out / "clean.journal.sqlite", build=_clean_build)
    kept, dropped = [], []
    for r in rows:
        verdict = result["verdicts"][str(r["id"])]
        (kept if verdict == "yes" else dropped).append(
            r if verdict == "yes" else {**r, "judge": verdict, "judge_error": result["errors"][str(r["id"])]})
    atomic_write_jsonl(out / f"{split}.jsonl", kept)
    atomic_write_jsonl(out / "clean_report.jsonl", dropped)
    src = Path(source)
    if src.is_dir():  # the other splits stay as they are, so the folder is a drop-in data.source
        for f in src.iterdir():
            if f.stem != split and f.suffix in (".jsonl", ".json", ".csv", ".parquet") and not f.name.startswith("."):
                shutil.copy2(f, out / f.name)
    summary = {"rows": len(rows), "kept": len(kept), "dropped": len(dropped),
               "dropped_by_reason": dict(Counter("judge said no" if d["judge"] == "no" else str(d["judge_error"])
                                                 for d in dropped)),
               "requests_sent": result["requests_sent"]}
    (out / "clean_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
