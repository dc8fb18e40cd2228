"""Judge throughput against the local test server: achieved requests/minute as a share of the
configured limit, for 1, 4 and 16 actors (goal >= 0.95), in one run.

    python benchmarks/judge_throughput.py [--rpm 1200] [--requests 240] [--latency 0.2]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sqlray.evaluation.fake_openai import FakeOpenAI, Faults
from sqlray.evaluation.judge_runner import JudgeSettings, run_judge

CTX = "CREATE TABLE t (id INT PRIMARY KEY, v INT);"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rpm", type=float, default=1200)
    ap.add_argument("--requests", type=int, default=480)
    ap.add_argument("--latency", type=float, default=0.2, help="server seconds per answer")
    args = ap.parse_args()

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"limit {args.rpm:.0f} RPM, server latency {args.latency}s, {args.requests} requests per run")
    print(f"{'actors':>7}{'achieved RPM':>15}{'share of limit':>17}{'max in 5s':>14}{'allowed':>10}")
    for actors in (1, 4, 16):
        rows = [{"id": f"{actors}-{i}", "context": CTX, "question": f"q{i}", "answer": f"SELECT v FROM t WHERE id={i}",
                 "prediction": f"SELECT v FROM t WHERE id={i}"} for i in range(args.requests)]
        with FakeOpenAI(Faults(latency_s=args.latency)) as srv, tempfile.TemporaryDirectory() as tmp:
            s = JudgeSettings(model="bench", base_url=srv.base_url, api_key="x", rpm=args.rpm, tpm=10**9,
                              num_actors=actors, concurrency_per_actor=max(1, 64 // actors))
            run_judge(rows, s, Path(tmp) / "j.sqlite", progress=False)
            times = sorted(t for t, _, _ in srv.requests)
        # Throughput: least-squares slope of request index over time after the first 2 s (cold actors send
        # their first requests late, which tilts a short run). Compliance: the most requests in any 5 s
        # window of the whole run against what the limit allows.
        warm = [t for t in times if t - times[0] >= 2.0]  # actors' first requests start cold
        times_all, times = times, warm
        n, mt = len(times), sum(times) / len(times)
        slope = sum((t - mt) * (i - (n - 1) / 2) for i, t in enumerate(times)) / sum((t - mt) ** 2 for t in times)
        window = max(sum(1 for u in times_all[i:] if u - t < 5.0) for i, t in enumerate(times_all))
        allowed = args.rpm / 60 * 5 + args.rpm / 60  # 5 s of budget plus the 1 s burst allowance
        print(f"{actors:>7}{slope * 60:>15.0f}{slope * 60 / args.rpm:>17.3f}{window:>14d}{allowed:>10.0f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
