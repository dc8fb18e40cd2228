"""What a finished search leaves behind: a results table and rank x alpha heatmaps (the best config and
adapter are written by tune.run_tune from the trial this module picks)."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from sqlray.core import format_table

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Each objective and which way is better.
MODES = {"eval_loss": "min", "val_ex": "max"}


def _best(df, metric: str, mode: str) -> float | None:
    if df is None or metric not in df:
        return None
    col = df[metric].dropna()  # val_ex reads NaN until a trial's end
    if not len(col):
        return None
    return float(col.max() if mode == "max" else col.min())


def trial_rows(results, metric: str) -> list[dict]:
    """One row per trial: its parameters, best eval_loss, the objective (if not eval_loss), steps and status."""
    rows = []
    for r in results:
        cfg = r.config or {}
        df = r.metrics_dataframe
        last = r.metrics or {}
        trial = last.get("trial_id") or (Path(r.path).name if r.path else "?")  # its Train run is train-<id>
        rows.append({"trial": trial, "rank": cfg.get("rank"),
                     "alpha": (cfg.get("alpha_multiple") or 0) * (cfg.get("rank") or 0),
                     "learning_rate": cfg.get("learning_rate"), "dropout": cfg.get("dropout"),
                     "target_modules": cfg.get("target_modules"), "eval_loss": _best(df, "eval_loss", "min"),
                     metric: _best(df, metric, MODES[metric]),
                     "reports": int(len(df)) if df is not None else 0,
                     "last_step": last.get("step"), "checkpoint": last.get("checkpoint_path"),
                     "status": "error" if r.error else ("done" if last.get("completed") else "stopped early"),
                     "error": str(r.error).splitlines()[0][:160] if r.error else None})
    return rows


def _order(row: dict, metric: str) -> tuple:
    """Sort key, best first: by the objective, ties (EX often has them) to the lower eval_loss, trials
    without the objective (stopped early, failed) last."""
    sign = -1 if MODES[metric] == "max" else 1
    loss = row["eval_loss"]
    return (row[metric] is None, sign * (row[metric] or 0), loss if loss is not None else float("inf"))


def results_table(rows: list[dict], metric: str) -> str:
    cols = ["eval_loss"] + ([metric] if metric != "eval_loss" else [])
    body = [[r["trial"][:33], r["rank"], r["alpha"], f"{r['learning_rate']:.2e}" if r["learning_rate"] else None,
             *[r[c] for c in cols], r["last_step"],
             r["status"] + (f": {r['error']}" if r["error"] else "")]
            for r in sorted(rows, key=lambda r: _order(r, metric))]
    return format_table(["trial", "rank", "alpha", "lr", *cols, "steps", "status"], body, floats=".4f")


def plot_heatmap(rows: list[dict], metric: str, path: Path) -> Path:
    """Best metric per (rank, alpha) cell; empty cells were not tried."""
    better = max if MODES[metric] == "max" else min
    ok = [r for r in rows if r[metric] is not None]
    ranks = sorted({r["rank"] for r in ok})
    alphas = sorted({r["alpha"] for r in ok})
    grid = [[float("nan")] * len(alphas) for _ in ranks]
    for r in ok:
        i, j = ranks.index(r["rank"]), alphas.index(r["alpha"])
        grid[i][j] = r[metric] if grid[i][j] != grid[i][j] else better(grid[i][j], r[metric])
    fig, ax = plt.subplots(figsize=(1.2 * len(alphas) + 3, 0.8 * len(ranks) + 2))
    im = ax.imshow(grid, cmap="viridis" if better is max else "viridis_r", aspect="auto")  # bright = better
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(ranks)), [str(r) for r in ranks])
    ax.set_xlabel("LoRA alpha")
    ax.set_ylabel("LoRA rank")
    for i in range(len(ranks)):
        for j in range(len(alphas)):
            if grid[i][j] == grid[i][j]:
                ax.text(j, i, f"{grid[i][j]:.3f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label=f"best {metric} ({'higher' if better is max else 'lower'} is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pick_best(rows: list[dict], results, metric: str):
    """The result behind the best row (same order as the table) that has the objective and no error."""
    ok = [(row, r) for row, r in zip(rows, results) if row["status"] != "error" and row[metric] is not None]
    return min(ok, key=lambda rr: _order(rr[0], metric))[1] if ok else None


def write_outputs(t, results, exp_dir: Path):
    """results.txt/json and the heatmaps; returns the best trial's result (None if no trial has the objective)."""
    rows = trial_rows(results, t.metric)
    table = results_table(rows, t.metric)
    print("\n" + table + "\n")
    (exp_dir / "results.txt").write_text(table + "\n")
    (exp_dir / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    if any(r[t.metric] is not None for r in rows):
        plot_heatmap(rows, t.metric, exp_dir / "rank_alpha_heatmap.png")
    if t.metric != "eval_loss" and any(r["eval_loss"] is not None for r in rows):
        # Trials ASHA stopped have a loss but no end-of-trial score: this map shows every trial.
        plot_heatmap(rows, "eval_loss", exp_dir / "rank_alpha_eval_loss.png")
    return _pick_best(rows, results, t.metric)
