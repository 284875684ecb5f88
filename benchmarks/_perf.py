"""Timing and memory helpers for ``benchmarks/performance.py``: interleaved medians, peak memory, machine facts."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    """Wait for queued kernels (CUDA); a no-op on the CPU, where calls return when done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Seconds per call of several functions, measured side by side in rounds."""

    times: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        return statistics.median(self.times[name])

    def ratio(self, num: str, den: str) -> float:
        """Median over rounds of ``time(num) / time(den)`` from the same round (robust to drift between rounds)."""
        return statistics.median(a / b for a, b in zip(self.times[num], self.times[den], strict=True))


def interleaved(fns: Mapping[str, Callable[[], object]], device: torch.device, *, repeats: int,
                budget_s: float) -> Timing:
    """Time every function once per round, rounds alternating the order (a, b, c / c, b, a).

    One warm-up round first (not timed; it also estimates the cost of a round), then
    ``repeats`` timed rounds, fewer (never under 3) when a round costs more than
    ``budget_s / repeats`` seconds.
    """
    names = list(fns)
    start = time.perf_counter()
    for name in names:
        fns[name]()
    sync(device)
    round_s = time.perf_counter() - start
    rounds = max(3, min(repeats, int(budget_s / max(round_s, 1e-9))))
    out = Timing({name: [] for name in names})
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            sync(device)
            t0 = time.perf_counter()
            fns[name]()
            sync(device)
            out.times[name].append(time.perf_counter() - t0)
    return out


def _status_kib(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_rise_mib(run: Callable[[], object]) -> float:
    """How far one call of ``run`` raises this process's resident memory above where it was, MiB.

    Linux: the peak-RSS mark (``VmHWM``) is reset to the current RSS (``/proc/self/clear_refs``), so
    earlier peaks (imports, model construction) do not hide the call's; elsewhere ``ru_maxrss``.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kib("VmRSS")
    except OSError:
        before = None
    if before is None:
        start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        run()
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start) / 1024
    run()
    return max(0.0, ((_status_kib("VmHWM") or before) - before) / 1024)


def peak_memory_mib(run: Callable[[], object], device: torch.device, spec: Mapping[str, object],
                    script: Path, threads: int, *, subprocess_: bool = True) -> float:
    """Extra peak memory of one call of ``run``, MiB.

    CUDA: ``torch.cuda.max_memory_allocated`` above what was allocated before the call, in
    this process. CPU: torch's CPU allocator keeps no peak statistics and tracemalloc does not
    see tensor memory, so the call runs in a fresh subprocess (``script --peak-child spec``)
    that reports the rise of its resident set over the call (:func:`rss_rise_mib`): every page
    the call touched, allocator overhead included. ``subprocess_=False`` (smoke runs) measures
    in this process instead, where memory freed earlier and kept by the C allocator can hide part of it.
    """
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    if not subprocess_:
        return rss_rise_mib(run)
    cmd = [sys.executable, str(script), "--peak-child", json.dumps(dict(spec)), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"peak-memory child failed: {proc.stderr[-2000:]}")
    return float(json.loads(proc.stdout.strip().splitlines()[-1])["peak_mib"])


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
