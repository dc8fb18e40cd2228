"""Tables and a PNG chart over scored files, so base / fine-tuned / cleaned / another base read side by side."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from sqlray.evaluation.scoring import summarize  # noqa: E402

METRICS = ("em", "ex", "judge")


def read_jsonl(path: str | Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    from sqlray.evaluation.scoring import ScoreError

                    raise ScoreError(f"{path}:{n}: not a JSON line: {e}") from None
    return rows


def _rates(rows: list[dict]) -> dict[str, float | int]:
    out: dict[str, float | int] = {"n": len(rows)}
    if rows and "ex" in rows[0]:
        # EX is None where no row could be judged: left out, so the table prints '-' and the chart 0
        out.update({k: v for k, v in summarize(rows)["all"].items() if k in ("em", "ex") and v is not None})
    judged = [r for r in rows if r.get("judge") in ("yes", "no")]
    if judged:
        out["judge"] = sum(r["judge"] == "yes" for r in judged) / len(judged)
    return out


def report_tables(files: dict[str, list[dict]]) -> str:
    """One table per grouping: overall, then per split / db_id / shape where the rows carry them."""
    parts = []
    for group in (None, "split", "db_id", "shape"):
        lines = []
        for name, rows in files.items():
            if group and not any(group in r for r in rows):
                continue
            keys = sorted({str(r.get(group, "?")) for r in rows}) if group else ["all"]
            for k in keys:
                sel = [r for r in rows if not group or str(r.get(group, "?")) == k]
                rates = _rates(sel)
                cells = "".join(f"{rates[m]:>8.3f}" if m in rates else f"{'-':>8}" for m in METRICS)
                lines.append(f"{name:<28}{k:<18}{rates['n']:>6}{cells}")
        if lines:
            title = f"by {group}" if group else "overall"
            head = f"{'file':<28}{(group or ''):<18}{'n':>6}" + "".join(f"{m.upper():>8}" for m in METRICS)
            parts.append(f"== {title} ==\n{head}\n" + "\n".join(lines))
    return "\n\n".join(parts)


def plot_report(files: dict[str, list[dict]], path: str | Path) -> Path:
    names = list(files)
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(names) + 2), 4))
    width = 0.8 / len(METRICS)
    for i, m in enumerate(METRICS):
        vals = [_rates(files[n]).get(m, 0.0) for n in names]
        ax.bar([x + i * width for x in range(len(names))], vals, width, label=m.upper())
    ax.set_xticks([x + width for x in range(len(names))], names, rotation=15)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
