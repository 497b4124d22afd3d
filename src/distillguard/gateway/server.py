"""Running the gateway under uvicorn (one process, or several workers through an app factory)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import uvicorn

from distillguard.gateway.app import Gateway
from distillguard.gateway.config import GatewayConfig, load_gateway_config
from distillguard.gateway.hooks import Limiter
from distillguard.gateway.jsonlog import setup_logging
from distillguard.gateway.metrics import MULTIPROC_ENV
from distillguard.gateway.protocols import DEFAULT_PROTOCOL

CONFIG_ENV = "DISTILLGUARD_GATEWAY_CONFIG"


def create_app() -> Gateway:
    """App factory for `--workers N`: each worker reads the config named by $DISTILLGUARD_GATEWAY_CONFIG."""
    p = os.environ.get(CONFIG_ENV)
    cfg = load_gateway_config(Path(p) if p else None)
    setup_logging(cfg.server.log_level)
    return Gateway(cfg)


def _uvicorn_kwargs(cfg: GatewayConfig) -> dict[str, Any]:
    return {
        "host": cfg.server.host,
        "port": cfg.server.port,
        "lifespan": "on",
        # "auto" picks uvloop (a core dependency, with httptools: the cheapest loop and parser for uvicorn)
        "loop": "auto",
        "access_log": False,  # the gateway logs one JSON line per exchange itself
        "log_config": None,
        "server_header": False,
        # X-Forwarded-For is read by the gateway itself, only from server.trusted_proxies (uvicorn's own
        # proxy_headers would otherwise rewrite the client address for any request from 127.0.0.1).
        "proxy_headers": False,
        # Idle keep-alive connections are closed after 5 s (slow or abandoned clients hold no slot).
        "timeout_keep_alive": 5,
        # uvicorn's protocol plus a deadline and a size limit on request heads (slowloris): 408 / 431 per
        # server.header_timeout_s / max_header_bytes (protocols.py)
        "http": DEFAULT_PROTOCOL,
        "h11_max_incomplete_event_size": cfg.server.max_header_bytes,  # the same limit under h11
        "timeout_graceful_shutdown": 30,
    }


def serve(
    cfg: GatewayConfig, limiter: Limiter[Any] | None = None, workers: int = 1, config_path: Path | None = None
) -> None:
    """Serve until SIGINT/SIGTERM; a graceful stop drains in-flight exchanges and closes the audit log."""
    setup_logging(cfg.server.log_level)
    if workers > 1:
        if limiter is not None:
            raise ValueError("a limiter object cannot be shared with worker processes")
        if config_path is not None:
            os.environ[CONFIG_ENV] = str(config_path.resolve())
        # Prometheus multiprocess mode: each worker keeps its values in files of one fresh directory and
        # /metrics sums them (metrics.py), so a scrape is right whichever worker answers it. A directory
        # of its own per run: files left from an earlier run would be added in.
        own_dir = not os.environ.get(MULTIPROC_ENV)
        mp_dir = tempfile.mkdtemp(prefix="dg-gw-metrics-") if own_dir else os.environ[MULTIPROC_ENV]
        os.environ[MULTIPROC_ENV] = mp_dir
        try:
            uvicorn.run(
                "distillguard.gateway.server:create_app",
                factory=True,
                workers=workers,
                **_uvicorn_kwargs(cfg),
            )
        finally:
            if own_dir:
                os.environ.pop(MULTIPROC_ENV, None)
                shutil.rmtree(mp_dir, ignore_errors=True)
        return
    uvicorn.Server(uvicorn.Config(Gateway(cfg, limiter), **_uvicorn_kwargs(cfg))).run()
