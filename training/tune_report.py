"""What a finished search leaves behind: a results table, a rank x alpha heatmap, the best config as
a ready-to-train YAML, and the best trial's adapter."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def trial_rows(results, metric: str) -> list[dict]:
    rows = []
    for r in results:
        cfg = r.config or {}
        df = r.metrics_dataframe
        best = float(df[metric].min()) if df is not None and metric in df and len(df) else None
        name = Path(r.path).name if r.path else "?"
        # "tune_trial_<exp>_<n>_<params>_<date>": the id is what tells trials (and their train-<id> folders) apart
        trial = "_".join(name.split("_")[2:4]) if name.startswith("tune_trial_") else name
        rows.append({"trial": trial, "rank": cfg.get("rank"),
                     "alpha": (cfg.get("alpha_multiple") or 0) * (cfg.get("rank") or 0),
                     "learning_rate": cfg.get("learning_rate"), metric: best,
                     "reports": int(len(df)) if df is not None else 0,
                     "last_step": (r.metrics or {}).get("step"),
                     "status": "error" if r.error else ("done" if (r.metrics or {}).get("completed") else "stopped early"),
                     "error": str(r.error).splitlines()[0][:160] if r.error else None})
    return rows


def format_table(rows: list[dict], metric: str) -> str:
    head = f"{'trial':<34}{'rank':>5}{'alpha':>7}{'lr':>10}{metric:>11}{'reports':>8}  status"
    lines = [head, "-" * len(head)]
    for r in sorted(rows, key=lambda r: (r[metric] is None, r[metric] or 0)):
        m = f"{r[metric]:.4f}" if r[metric] is not None else "-"
        lr = f"{r['learning_rate']:.2e}" if r["learning_rate"] else "-"
        lines.append(f"{r['trial'][:33]:<34}{r['rank'] or '-':>5}{r['alpha'] or '-':>7}{lr:>10}{m:>11}"
                     f"{r['reports']:>8}  {r['status']}" + (f": {r['error']}" if r["error"] else ""))
    return "\n".join(lines)


def plot_heatmap(rows: list[dict], metric: str, path: Path) -> Path:
    """Best metric per (rank, alpha) cell; empty cells were not tried."""
    ok = [r for r in rows if r[metric] is not None]
    ranks = sorted({r["rank"] for r in ok})
    alphas = sorted({r["alpha"] for r in ok})
    grid = [[float("nan")] * len(alphas) for _ in ranks]
    for r in ok:
        i, j = ranks.index(r["rank"]), alphas.index(r["alpha"])
        grid[i][j] = r[metric] if grid[i][j] != grid[i][j] else min(grid[i][j], r[metric])
    fig, ax = plt.subplots(figsize=(1.2 * len(alphas) + 3, 0.8 * len(ranks) + 2))
    im = ax.imshow(grid, cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(len(alphas)), [f"{a:g}" for a in alphas])
    ax.set_yticks(range(len(ranks)), [str(r) for r in ranks])
    ax.set_xlabel("LoRA alpha")
    ax.set_ylabel("LoRA rank")
    for i in range(len(ranks)):
        for j in range(len(alphas)):
            if grid[i][j] == grid[i][j]:
                ax.text(j, i, f"{grid[i][j]:.3f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label=f"best {metric} (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(t, results, exp_dir: Path) -> Path:
    from training.tune import best_trial_yaml, export_best_adapter

    rows = trial_rows(results, t.metric)
    table = format_table(rows, t.metric)
    print("\n" + table + "\n")
    (exp_dir / "results.txt").write_text(table + "\n")
    (exp_dir / "results.json").write_text(json.dumps(rows, indent=2, default=str))
    if any(r[t.metric] is not None for r in rows):
        plot_heatmap(rows, t.metric, exp_dir / "rank_alpha_heatmap.png")
    ok = [r for r in results if not r.error and r.metrics_dataframe is not None and t.metric in r.metrics_dataframe]
    if ok:
        best = min(ok, key=lambda r: float(r.metrics_dataframe[t.metric].min()))
        (exp_dir / "best_config.yaml").write_text(best_trial_yaml(t, best.config))
        ckpt = (best.metrics or {}).get("checkpoint_path")  # TuneReportCallback passes the Train checkpoint here
        adapter = export_best_adapter(ckpt, exp_dir)
        print(f"[sqlray] best trial: rank {best.config['rank']}, alpha {best.config['alpha_multiple'] * best.config['rank']:g}, "
              f"lr {best.config['learning_rate']:.2e} -> {exp_dir / 'best_config.yaml'}"
              + (f"; adapter {adapter}" if adapter else ""))
    print(f"[sqlray] tune folder: {exp_dir}")
    return exp_dir
