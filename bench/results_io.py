"""What every benchmark shares: where results go, and writing them atomically."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write `bench/results/<name>` via a temporary file and a rename, and echo it."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / name
    partial = target.with_name(target.name + ".tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    partial.replace(target)
    print(json.dumps(result, indent=2))
    return target
