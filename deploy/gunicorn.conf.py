"""gunicorn settings for AlgoMirror's web processes (docs/deploy.md):

    gunicorn -c deploy/gunicorn.conf.py algomirror.wsgi:app

The web only: the engine is its own service (``algomirror engine``). Any value here can be overridden
without editing this file, e.g. ``GUNICORN_CMD_ARGS="--workers=3 --bind=127.0.0.1:9000"``.

Sizing: every worker has its own database pool of up to ``ALGOMIRROR_DB_POOL_SIZE`` +
``ALGOMIRROR_DB_MAX_OVERFLOW`` connections (10 + 20 by default), and the engine has one more pool; keep
workers x (pool + overflow) + engine under PostgreSQL's ``max_connections`` (100 by default).
"""

from __future__ import annotations

import multiprocessing
import os
from typing import Any

from algomirror.runner import PAGE_THREADS, SERVER_THREADS

# The address nginx proxies to (loopback: only the proxy reaches it). Read from the process
# environment (systemd's EnvironmentFile), as ALGOMIRROR_HOST/PORT are for `algomirror run`.
bind = f"{os.environ.get('ALGOMIRROR_HOST') or '127.0.0.1'}:{os.environ.get('ALGOMIRROR_PORT') or '8000'}"

# Threaded workers: every open live stream (Server-Sent Events, /live/stream) holds a thread for up to
# 5 minutes, so sync workers would be starved by a few open tabs. Each worker caps its streams at
# threads - PAGE_THREADS (post_worker_init below), leaving threads for pages and posts.
worker_class = "gthread"
threads = SERVER_THREADS
# Threads carry the concurrency; processes add resilience and cores. 2 at least (one can be restarted
# while the other serves), at most 4 (the connection budget above).
workers = max(2, min(multiprocessing.cpu_count(), 4))

# Each worker builds its own app, database pool and Redis connections after the fork: connections are
# never shared between processes. (The app is built on first access: algomirror/wsgi.py.)
preload_app = False

# With gthread this is the worker's own liveness (a hung worker is killed and replaced), not a request
# limit: a live stream may stay open longer.
timeout = 60
# On SIGTERM (a restart): let requests finish; a live stream is cut and the browser reconnects.
graceful_timeout = 30
# nginx keeps connections to us open; a little longer than its idle time is not needed.
keepalive = 5
# Recycle workers now and then (jittered, so not all at once) against slow leaks in a long-lived process.
max_requests = 20000
max_requests_jitter = 2000

# Access log on stdout, gunicorn's own messages on stderr: journald (or the container runtime) keeps both.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("ALGOMIRROR_LOG_LEVEL", "info").lower()
proc_name = "algomirror-web"
# No runtime control socket (newer gunicorn): systemd starts, reloads and stops the service.
control_socket_disable = True

_json_logs = os.environ.get("ALGOMIRROR_LOG_FORMAT", "auto").strip().lower() == "json" or (
    os.environ.get("ALGOMIRROR_LOG_FORMAT", "auto").strip().lower() == "auto"
    and os.environ.get("ALGOMIRROR_ENV", "").strip().lower() == "production"
)
if _json_logs:
    # Production: gunicorn's lines are JSON too (the same formatter as the app's records). The root
    # logger gets no handler here: the app installs its own, with secret redaction (runner.py).
    logconfig_dict: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": "INFO", "handlers": []},
        "formatters": {"json": {"()": "algomirror.runner.JsonLogFormatter"}},
        "handlers": {
            "access": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"},
            "error": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }


def post_worker_init(worker: Any) -> None:
    """Cap this worker's live streams by its real thread count (``--threads`` may have changed it)."""
    app = getattr(worker, "wsgi", None)
    config = getattr(app, "config", None)
    if config is not None:
        config["LIVE_MAX_STREAMS"] = max(1, int(worker.cfg.threads) - PAGE_THREADS)
