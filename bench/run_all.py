"""Run every benchmark in bench/ one after another and print their figures (``make bench``).

Benchmarks print numbers; they never pass or fail on timing. Targets are listed in docs/benchmarks.md.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHES = ("simulator.py", "client_pool.py", "dashboard.py", "sync_books.py", "fanout.py", "risk_latency.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    failures = 0
    for name in BENCHES:
        path = here / name
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(path)], check=False)
        print(f"--- {name}: exit {result.returncode} after {time.perf_counter() - started:.1f} s", flush=True)
        failures += result.returncode != 0
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
