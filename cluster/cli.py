"""`sqlray cluster up|status|down`, `sqlray submit -- CMD`, `sqlray jobs list|status|logs|stop`."""
from __future__ import annotations

import json
import sys


def _cmd_cluster(args) -> None:
    from pathlib import Path

    from sqlray.cluster import local

    folder = Path(args.state).expanduser().resolve() if args.state else None
    if args.action == "up":
        st = local.up(workers=args.workers, cpus_per_node=args.cpus_per_node, head_cpus=args.head_cpus, folder=folder)
        print(f"[sqlray] cluster up: head + {args.workers} workers ({args.cpus_per_node} CPU each)")
        print(f"[sqlray] address {st.gcs_address}  (RAY_ADDRESS={st.gcs_address} sqlray train ... joins it)")
        print(f"[sqlray] dashboard/Jobs API {st.dashboard_url} (loopback only, token auth)")
    elif args.action == "status":
        print(json.dumps(local.status(folder), indent=1, default=str))
    else:
        stopped = local.down(folder)
        print(f"[sqlray] stopped: {', '.join(stopped) or 'nothing was running'}")


def _cmd_submit(args) -> None:
    from sqlray.cluster import jobs

    cmd = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    job_id = jobs.submit(cmd, args.address, args.working_dir)
    print(f"[sqlray] submitted {job_id} to {args.address or jobs.default_address()}", flush=True)
    if not args.follow:
        return
    status = jobs.follow(job_id, args.address)
    print(f"[sqlray] job {job_id}: {status}")
    sys.exit(jobs.exit_code(status))


def _cmd_jobs(args) -> None:
    from sqlray.cluster import jobs

    c = jobs.client(args.address)
    if args.action == "list":
        for j in c.list_jobs():
            print(f"{j.submission_id or j.job_id:<32}{str(j.status.value):<11}{j.entrypoint}")
        return
    if not args.job_id:
        raise SystemExit(f"sqlray: error: jobs {args.action}: give the job id")
    if args.action == "status":
        print(c.get_job_status(args.job_id).value)
    elif args.action == "logs":
        print(c.get_job_logs(args.job_id), end="")
    else:
        print("stopping" if c.stop_job(args.job_id) else "already finished")


def add_commands(sub) -> None:
    c = sub.add_parser("cluster", help="a real multi-node Ray cluster on this machine (loopback)")
    c.add_argument("action", choices=["up", "status", "down"])
    c.add_argument("--workers", type=int, default=2, help="worker nodes besides the head")
    c.add_argument("--cpus-per-node", type=float, default=1, help="CPUs each worker node advertises")
    c.add_argument("--head-cpus", type=float, default=None, help="CPUs of the head (default: --cpus-per-node)")
    c.add_argument("--state", help="folder for the cluster's state and logs (default: SQLRAY_CLUSTER_DIR, "
                                   "else ~/.sqlray/cluster)")
    c.set_defaults(fn=_cmd_cluster)

    s = sub.add_parser("submit", help="run a sqlray command as a Ray job: sqlray submit --follow -- sqlray train ...")
    s.add_argument("--address", help="Jobs API URL (default: RAY_ADDRESS, else the local `cluster up` one)")
    s.add_argument("--follow", action="store_true", help="stream logs and exit with the job's status")
    s.add_argument("--working-dir", default=".", help="uploaded with the job (minus .venv, runs, caches)")
    s.add_argument("entrypoint", nargs="+", help="-- then the command")
    s.set_defaults(fn=_cmd_submit)

    j = sub.add_parser("jobs", help="list, inspect and stop Ray jobs")
    j.add_argument("action", choices=["list", "status", "logs", "stop"])
    j.add_argument("job_id", nargs="?")
    j.add_argument("--address")
    j.set_defaults(fn=_cmd_jobs)
