"""Score predictions (EM strict/normalised, test-suite EX) and summarise them. Pure functions."""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlray.evaluation.execution import execution_match
from sqlray.evaluation.sql import normalized_match, strict_match


class ScoreError(ValueError):
    """An input row is missing what scoring needs."""


def score_row(row: dict[str, Any], n_databases: int = 3) -> dict[str, Any]:
    """The row with em_strict, em, ex and ex_error added (every input field kept)."""
    for f in ("context", "answer", "prediction"):
        if not isinstance(row.get(f), str):
            raise ScoreError(f"row {row.get('id', '?')}: field {f!r} must be a string, got {type(row.get(f)).__name__}")
    res = execution_match(row["prediction"], row["answer"], row["context"], n_databases)
    return {**row, "em_strict": strict_match(row["prediction"], row["answer"]),
            "em": normalized_match(row["prediction"], row["answer"]), "ex": res.ex, "ex_error": res.error}


def _score_chunk(rows: list[dict]) -> list[dict]:
    return [score_row(r) for r in rows]


def score_rows(rows: list[dict], chunk: int = 64) -> list[dict]:
    """score_row over all rows: Ray tasks in chunks when Ray is up, in order either way."""
    try:
        import ray
    except ImportError:  # pragma: no cover
        ray = None
    if ray is None or not ray.is_initialized() or len(rows) <= chunk:
        return _score_chunk(rows)
    task = ray.remote(num_cpus=1, max_retries=0)(_score_chunk)
    parts = ray.get([task.remote(rows[i:i + chunk]) for i in range(0, len(rows), chunk)])
    return [r for part in parts for r in part]


def join_predictions(rows: list[dict], preds: list[dict]) -> list[dict]:
    """Attach predictions to rows by id, never by position."""
    by_id = {p["id"]: p for p in preds}
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise ScoreError(f"{len(missing)} rows have no prediction (first ids: {missing[:5]})")
    return [{**r, "prediction": by_id[r["id"]]["prediction"], "raw": by_id[r["id"]].get("raw")} for r in rows]


def summarize(scored: list[dict], by: str | None = None) -> dict[str, dict[str, Any]]:
    """{group: {em, em_strict, ex, n, n_gold_errors}}; EX is over rows whose gold runs."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in scored:
        groups[str(r.get(by, "?")) if by else "all"].append(r)
    out = {}
    for g, rs in sorted(groups.items()):
        counted = [r for r in rs if r["ex"] is not None]
        out[g] = {"em": sum(r["em"] for r in rs) / len(rs), "em_strict": sum(r["em_strict"] for r in rs) / len(rs),
                  "ex": sum(bool(r["ex"]) for r in counted) / max(1, len(counted)), "n": len(rs),
                  "n_gold_errors": len(rs) - len(counted)}
    return out
