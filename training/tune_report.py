"""What a finished search leaves behind: a results table, a rank x alpha heatmap, the best config as
a ready-to-train YAML, and the best trial's adapter."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _best(df, metric: str, mode: str) -> float | None:
    if df is None or metric not in df:
        return None
    col = df[metric].dropna()  # val_ex reads NaN until a trial's end
    if not len(col):
        return None
    return float(col.max() if mode == "max" else col.min())


def trial_rows(results, metric: str) -> list[dict]:
    """One row per trial: its parameters, best eval_loss, the objective (if not eval_loss), steps and status."""
    from training.tune import MODES

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
    from training.tune import MODES

    sign = -1 if MODES[metric] == "max" else 1
    loss = row["eval_loss"]
    return (row[metric] is None, sign * (row[metric] or 0), loss if loss is not None else float("inf"))


def format_table(rows: list[dict], metric: str) -> str:
    cols = ["eval_loss"] + ([metric] if metric != "eval_loss" else [])
    head = f"{'trial':<34}{'rank':>5}{'alpha':>7}{'lr':>10}" + "".join(f"{c:>11}" for c in cols) + f"{'steps':>7}  status"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: _order(r, metric)):
        vals = "".join(f"{r[c]:>11.4f}" if r[c] is not None else f"{'-':>11}" for c in cols)
        lr = f"{r['learning_rate']:.2e}" if r["learning_rate"] else "-"
        lines.append(f"{r['trial'][:33]:<34}{r['rank'] or '-':>5}{r['alpha'] or '-':>7}{lr:>10}{vals}"
                     f"{r['last_step'] or '-':>7}  {r['status']}" + (f": {r['error']}" if r["error"] else ""))
    return "\n".join(lines)


def plot_heatmap(rows: list[dict], metric: str, path: Path) -> Path:
    """Best metric per (rank, alpha) cell; empty cells were not tried."""
    from training.tune import MODES

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


def write_outputs(t, results, exp_dir: Path) -> Path:
    from training.tune import best_trial_yaml, export_best_adapter

    rows = trial_rows(results, t.metric)
    table = format_table(rows, t.metric)
    print("\n" + table + "\n")
    (exp_dir / "results.txt").write_text(table + "\n")
    (exp_dir / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    if any(r[t.metric] is not None for r in rows):
        plot_heatmap(rows, t.metric, exp_dir / "rank_alpha_heatmap.png")
    if t.metric != "eval_loss" and any(r["eval_loss"] is not None for r in rows):
        # Trials ASHA stopped have a loss but no end-of-trial score: this map shows every trial.
        plot_heatmap(rows, "eval_loss", exp_dir / "rank_alpha_eval_loss.png")
    best = _pick_best(rows, results, t.metric)
    if best is not None:
        (exp_dir / "best_config.yaml").write_text(best_trial_yaml(t, best.config))
        ckpt = (best.metrics or {}).get("checkpoint_path")  # TuneReportCallback passes the Train checkpoint here
        adapter = export_best_adapter(ckpt, exp_dir)
        print(f"[sqlray] best trial: rank {best.config['rank']}, alpha {best.config['alpha_multiple'] * best.config['rank']:g}, "
              f"lr {best.config['learning_rate']:.2e} -> {exp_dir / 'best_config.yaml'}"
              + (f"; adapter {adapter}" if adapter else ""))
    print(f"[sqlray] tune folder: {exp_dir}")
    return exp_dir
