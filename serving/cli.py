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
    # Replicas behind HAProxy stay up 30 s after a shutdown so that external load balancers can drop them;
    # the local HAProxy is reconfigured by Serve itself, and the 30 s made every serve.shutdown time out.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")


def start(settings, app_name: str = "sqlray") -> str:
    """Deploy on the current (or a new local) Ray cluster; returns the base URL once replicas are up."""
    import ray
    from ray import serve

    from sqlray.serving.app import build_app

    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):  # a cluster being joined keeps the ingress it was started with
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
        if not settings.create_tiny_if_missing and not os.path.exists(path) and path.startswith((".", "/", "runs")):
            raise ConfigError(f"{name}: {path} does not exist")
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
