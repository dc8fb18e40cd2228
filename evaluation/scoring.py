"""Score predictions (EM strict/normalised, test-suite EX) and summarise them. Pure functions."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from sqlray.evaluation.execution import execution_match
from sqlray.evaluation.sql import normalized_match, strict_match


class ScoreError(ValueError):
    """An input row is missing what scoring needs."""


def check_row(row: dict[str, Any]) -> None:
    for f in ("context", "answer", "prediction"):
        if not isinstance(row.get(f), str):
            raise ScoreError(f"row {row.get('id', '?')}: field {f!r} must be a string, got {type(row.get(f)).__name__}")


def score_row(row: dict[str, Any], n_databases: int = 3) -> dict[str, Any]:
    """The row with em_strict, em, ex and ex_error added (every input field kept)."""
    check_row(row)
    res = execution_match(row["prediction"], row["answer"], row["context"], n_databases)
    return {**row, "em_strict": strict_match(row["prediction"], row["answer"]),
            "em": normalized_match(row["prediction"], row["answer"]), "ex": res.ex, "ex_error": res.error,
            "ex_excluded": res.excluded}


def _score_chunk(rows: list[dict]) -> list[dict]:
    return [score_row(r) for r in rows]


def score_rows(rows: list[dict], chunk: int = 64) -> list[dict]:
    """score_row over all rows: Ray tasks in chunks when Ray is up, in order either way. A task whose
    worker dies (the OOM killer, a crash in SQLite) is retried row by row; a row whose own task dies is
    scored wrong with the reason, and the run goes on."""
    try:
        import ray
    except ImportError:  # pragma: no cover
        ray = None
    for r in rows:  # bad input is the caller's error, raised here rather than inside a task
        check_row(r)
    if ray is None or not ray.is_initialized() or len(rows) <= chunk:
        return _score_chunk(rows)
    task = ray.remote(num_cpus=1, max_retries=0)(_score_chunk)
    parts = [rows[i:i + chunk] for i in range(0, len(rows), chunk)]
    refs = [task.remote(p) for p in parts]
    out: list[dict] = []
    for part, ref in zip(parts, refs):
        try:
            out += ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as e:
            out += _score_alone(task, part, e)
    return out


def _score_alone(task, rows: list[dict], first_error: Exception) -> list[dict]:
    import ray

    refs = [task.remote([r]) for r in rows]
    out = []
    for r, ref in zip(rows, refs):
        try:
            out += ray.get(ref)
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as e:
            reason = f"scoring worker died: {type(e).__name__}: {str(e).splitlines()[0][:160]}"
            out.append({**r, "em_strict": strict_match(r["prediction"], r["answer"]),
                        "em": normalized_match(r["prediction"], r["answer"]), "ex": False, "ex_error": reason,
                        "ex_excluded": None})
    return out


def join_predictions(rows: list[dict], preds: list[dict]) -> list[dict]:
    """Attach predictions to rows by id, never by position."""
    by_id = {p["id"]: p for p in preds}
    missing = [r["id"] for r in rows if r["id"] not in by_id]
    if missing:
        raise ScoreError(f"{len(missing)} rows have no prediction (first ids: {missing[:5]})")
    keep = ("prediction", "raw", "renamed")  # renamed: names the prompt renamed (evaluation.rename)
    return [{**{k: v for k, v in r.items() if k not in keep}, "raw": None, "prediction": by_id[r["id"]]["prediction"],
             **{k: v for k, v in by_id[r["id"]].items() if k in keep}} for r in rows]


def summarize(scored: list[dict], by: str | None = None) -> dict[str, dict[str, Any]]:
    """{group: {em, em_strict, ex, n, n_ex, n_gold_errors, excluded}}: EX is over the n_ex rows it can
    judge (None when it can judge none: not a score of 0); ``excluded`` counts the others by reason
    (gold_error, gold_empty, ddl, sandbox)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in scored:
        groups[str(r.get(by, "?")) if by else "all"].append(r)
    out = {}
    for g, rs in sorted(groups.items()):
        counted = [r for r in rs if r["ex"] is not None]
        out[g] = {"em": sum(r["em"] for r in rs) / len(rs), "em_strict": sum(r["em_strict"] for r in rs) / len(rs),
                  "ex": sum(bool(r["ex"]) for r in counted) / len(counted) if counted else None, "n": len(rs),
                  "n_ex": len(counted), "n_gold_errors": len(rs) - len(counted),
                  "excluded": dict(Counter(r.get("ex_excluded") or "other" for r in rs if r["ex"] is None))}
    return out
