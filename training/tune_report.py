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
        rows.append({"trial": trial, "seed": cfg.get("seed"), "rank": cfg.get("rank"),
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
             r["seed"], *[r[c] for c in cols], r["last_step"],
             r["status"] + (f": {r['error']}" if r["error"] else "")]
            for r in sorted(rows, key=lambda r: _order(r, metric))]
    return format_table(["trial", "rank", "alpha", "lr", "seed", *cols, "steps", "status"], body, floats=".4f")


CONFIG_KEYS = ("rank", "alpha", "learning_rate", "dropout", "target_modules")


def _config_key(row: dict) -> tuple:
    return tuple(json.dumps(row[k]) for k in CONFIG_KEYS)


def seed_summary(rows: list[dict], metric: str) -> list[dict]:
    """One row per configuration over its seeds: mean, sample standard deviation, min and max of the
    objective (trials without it, stopped or failed, are counted apart), best first by the mean."""
    import statistics

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(_config_key(r), []).append(r)
    out = []
    for members in groups.values():
        vals = [m[metric] for m in members if m[metric] is not None]
        out.append({**{k: members[0][k] for k in CONFIG_KEYS}, "seeds": sorted(str(m["seed"]) for m in members),
                    "n": len(vals), "missing": len(members) - len(vals),
                    "mean": statistics.fmean(vals) if vals else None,
                    "std": statistics.stdev(vals) if len(vals) > 1 else None,
                    "min": min(vals) if vals else None, "max": max(vals) if vals else None})
    sign = -1 if MODES[metric] == "max" else 1
    return sorted(out, key=lambda g: (g["mean"] is None, sign * (g["mean"] or 0)))


def seed_table(groups: list[dict], metric: str) -> str:
    body = [[g["rank"], g["alpha"], f"{g['learning_rate']:.2e}" if g["learning_rate"] else None, g["n"], g["mean"],
             g["std"], g["min"], g["max"], g["missing"]] for g in groups]
    return format_table(["rank", "alpha", "lr", "scored", f"{metric} mean", "std", "min", "max", "no score"],
                        body, floats=".4f")


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


def _pick_best(rows: list[dict], results, metric: str, among: tuple | None = None):
    """The result behind the best row (same order as the table) that has the objective and no error;
    ``among``: only rows of that configuration (the best by mean over seeds)."""
    ok = [(row, r) for row, r in zip(rows, results) if row["status"] != "error" and row[metric] is not None
          and (among is None or _config_key(row) == among)]
    return min(ok, key=lambda rr: _order(rr[0], metric))[1] if ok else None


def write_outputs(t, results, exp_dir: Path):
    """results.txt/json and the heatmaps; returns the best trial's result (None if no trial has the objective).
    With several seeds the best configuration is the best mean, and the heatmap shows means."""
    rows = trial_rows(results, t.metric)
    table = results_table(rows, t.metric)
    seeded = bool(t.search.seeds and len(t.search.seeds) > 1)
    groups = seed_summary(rows, t.metric) if seeded else []
    if seeded:  # a difference means something only beside its spread
        table += "\n\nOver seeds " + ", ".join(map(str, t.search.seeds)) + ":\n" + seed_table(groups, t.metric)
    print("\n" + table + "\n")
    (exp_dir / "results.txt").write_text(table + "\n")
    (exp_dir / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    if seeded:
        (exp_dir / "results_over_seeds.json").write_text(json.dumps(groups, indent=2, default=str))
    if any(r[t.metric] is not None for r in rows):
        cells = [{**g, t.metric: g["mean"]} for g in groups] if seeded else rows
        plot_heatmap(cells, t.metric, exp_dir / "rank_alpha_heatmap.png")
    if t.metric != "eval_loss" and any(r["eval_loss"] is not None for r in rows):
        # Trials ASHA stopped have a loss but no end-of-trial score: this map shows every trial.
        plot_heatmap(rows, "eval_loss", exp_dir / "rank_alpha_eval_loss.png")
    best = next((g for g in groups if g["mean"] is not None), None)
    return _pick_best(rows, results, t.metric, _config_key(best) if best else None)
