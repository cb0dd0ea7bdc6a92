"""Shared helpers for mlserve's benchmarks: timing, machine description, tables.

Timing
    ``measure(stmt, namespace)`` runs ``stmt`` in a compiled ``timeit`` loop
    (no lambda or extra Python call per iteration, GC off), calibrates the
    inner loop count so one sample takes ``budget_s / repeats`` and returns the
    median time per call over ``repeats`` samples (``time.perf_counter_ns``).
    ``measure_interleaved`` does the same for several statements, one
    sample of each in rotation, so a noisy spell on a shared machine hits
    every contender of a case alike.
    ``measure_each(fn, repeats)`` times one-shot operations (loading a file)
    call by call, with an untimed ``after`` hook that drops the result.

Description
    ``machine_lines()`` describes CPU, cores, RAM, OS, Python and package
    versions; ``blas_lines()`` lists every BLAS/OpenMP library loaded in the
    process (threadpoolctl) with its kernel and thread count;
    ``openblas_env()`` the OPENBLAS_* / *_NUM_THREADS variables.

Tables
    ``markdown_table(headers, rows)`` prints pipe tables that read well in a
    terminal and paste unchanged into RESULTS.md; ``fmt_time``, ``fmt_rate``
    and ``fmt_ratio`` keep units consistent across benchmarks.
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import importlib
import os
import platform
import statistics
import subprocess
import sys
import time
import timeit
from typing import Callable, Iterable, Sequence

# ------------------------------------------------------------------ apps


def blueprint_app(store, **config):
    """A Flask app with mlserve's blueprint over ``store`` (no access log, no reload),
    for in-process benchmarks through Flask's test client."""
    from flask import Flask

    import mlserve

    app = Flask("bench")
    app.config.update(MLSERVE_ACCESS_LOG=False, **config)
    app.register_blueprint(mlserve.blueprint(store, reload_interval=0))
    return app


# ------------------------------------------------------------------ timing


@dataclasses.dataclass
class Measurement:
    """Time per call in nanoseconds over ``repeats`` samples of ``number`` calls."""

    median_ns: float
    min_ns: float
    max_ns: float
    number: int
    repeats: int

    @property
    def spread(self) -> float:
        """(max - min) / median of the samples: a quick noise indicator."""
        return (self.max_ns - self.min_ns) / self.median_ns if self.median_ns else 0.0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def measure(
    stmt: str,
    namespace: dict,
    *,
    budget_s: float = 0.3,
    repeats: int = 15,
) -> Measurement:
    """Median time per call of ``stmt`` evaluated in ``namespace``.

    The statement is compiled into timeit's loop, so its cost is exactly
    what a caller writing that line pays (plus ~10 ns of loop). One warm-up
    call, then the inner count is doubled until one sample reaches
    ``budget_s / repeats``.
    """
    timer = timeit.Timer(stmt, globals=namespace, timer=time.perf_counter_ns)
    target_ns = budget_s * 1e9 / repeats
    timer.timeit(number=1)  # warm-up: first-call allocations, lazy imports
    number = 1
    while True:
        elapsed = timer.timeit(number=number)
        if elapsed >= target_ns:
            break
        if elapsed <= 0:
            number *= 10
            continue
        # aim slightly past the target so one more round usually suffices
        number = max(number * 2, int(number * target_ns * 1.1 / elapsed))
    samples = [timer.timeit(number=number) / number for _ in range(repeats)]
    return Measurement(
        median_ns=statistics.median(samples),
        min_ns=min(samples),
        max_ns=max(samples),
        number=number,
        repeats=repeats,
    )


def measure_interleaved(
    stmts: dict,
    namespace: dict,
    *,
    budget_s: float = 0.3,
    repeats: int = 15,
) -> dict:
    """``measure`` for several statements, sample by sample in rotation.

    Each statement gets its own inner count (one sample ~ ``budget_s /
    repeats``), then round r takes one sample of every statement, starting
    at a rotating position. On a shared or throttled machine a slow spell
    then hits all contenders of a case alike, so their ratios stay stable
    even when absolute times drift. Returns name -> Measurement.
    """
    target_ns = budget_s * 1e9 / repeats
    timers, numbers = {}, {}
    for name, stmt in stmts.items():
        timer = timeit.Timer(stmt, globals=namespace, timer=time.perf_counter_ns)
        timer.timeit(number=1)  # warm-up
        number = 1
        while True:
            elapsed = timer.timeit(number=number)
            if elapsed >= target_ns:
                break
            number = number * 10 if elapsed <= 0 else max(
                number * 2, int(number * target_ns * 1.1 / elapsed)
            )
        timers[name], numbers[name] = timer, number
    names = list(stmts)
    samples = {name: [] for name in names}
    for r in range(repeats):
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            samples[name].append(timers[name].timeit(number=numbers[name]) / numbers[name])
    return {
        name: Measurement(
            median_ns=statistics.median(s), min_ns=min(s), max_ns=max(s),
            number=numbers[name], repeats=repeats,
        )
        for name, s in samples.items()
    }


def measure_each(
    fn: Callable[[], object],
    repeats: int,
    *,
    warmup: int = 1,
    after: Callable[[object], None] | None = None,
) -> Measurement:
    """Time ``fn()`` call by call (for expensive one-shot operations).

    ``after(result)`` runs untimed after each call (e.g. to check and drop a
    loaded model, so its unmapping is not charged to the next load).
    """
    for _ in range(warmup):
        result = fn()
        if after is not None:
            after(result)
        del result
    samples = []
    for _ in range(repeats):
        gc.collect()
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            t0 = time.perf_counter_ns()
            result = fn()
            t1 = time.perf_counter_ns()
        finally:
            if gc_was_enabled:
                gc.enable()
        samples.append(float(t1 - t0))
        if after is not None:
            after(result)
        del result
    return Measurement(
        median_ns=statistics.median(samples),
        min_ns=min(samples),
        max_ns=max(samples),
        number=1,
        repeats=repeats,
    )


# ------------------------------------------------------------- formatting


def fmt_time(ns: float | None) -> str:
    """'312 ns', '4.21 us', '17.3 ms', '1.20 s' (3 significant digits)."""
    if ns is None:
        return "n/a"
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{_sig3(ns / scale)} {unit}"
    return f"{ns:.0f} ns"


def fmt_rate(per_s: float | None, unit: str = "rows/s") -> str:
    """'3.45 M rows/s', '812 k rows/s', '1.20 G rows/s'."""
    if per_s is None:
        return "n/a"
    for prefix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if per_s >= scale:
            return f"{_sig3(per_s / scale)} {prefix} {unit}"
    return f"{_sig3(per_s)} {unit}"


def fmt_ratio(x: float | None) -> str:
    """'612x', '18.4x', '1.07x', '0.85x'."""
    if x is None:
        return "n/a"
    return f"{_sig3(x)}x"


def fmt_bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{_sig3(n / scale)} {unit}"
    return f"{n:.0f} B"


def _sig3(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A pipe table, columns padded; the first column left-, others right-aligned."""
    rows = [[str(c) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells):
        out = []
        for i, c in enumerate(cells):
            out.append(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = "|" + "|".join(
        ("-" * (w + 2)) if i == 0 else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
    ) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


# ------------------------------------------------------ machine description


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cpu_description() -> dict:
    info = {"model": platform.processor() or "unknown"}
    text = _read("/proc/cpuinfo") or ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and "model name" not in info:
            info["model"] = info["model name"] = value
        elif key in ("cpu family", "model", "stepping", "cpu MHz") and key + "_" not in info:
            info[key + "_"] = value
        elif key == "flags" and "flags" not in info:
            flags = set(value.split())
            info["flags"] = " ".join(
                f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags
            )
            info["hypervisor"] = "hypervisor" in flags
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("L1d cache", "L2 cache", "L3 cache", "Hypervisor vendor"):
                info[key] = " ".join(value.split())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def ram_bytes() -> int | None:
    text = _read("/proc/meminfo") or ""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def os_description() -> str:
    name = None
    text = _read("/etc/os-release") or ""
    for line in text.splitlines():
        if line.startswith("PRETTY_NAME="):
            name = line.split("=", 1)[1].strip().strip('"')
    return f"{name or platform.system()}, kernel {platform.release()}"


def package_version(name: str) -> str:
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:  # noqa: BLE001 - a missing package is reported, not fatal
        try:
            return getattr(importlib.import_module(name), "__version__", "?")
        except Exception:  # noqa: BLE001
            return "not installed"


def git_description(path: str) -> str:
    try:
        head = subprocess.run(
            ["git", "-C", path, "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", path, "status", "--porcelain", "--untracked-files=no", "--", "csrc", "mlserve"],
            capture_output=True, text=True, timeout=5,
        ).stdout.strip()
        return f"{head}{' + uncommitted changes in csrc/ or mlserve/' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def openblas_env() -> dict:
    keys = sorted(
        k for k in os.environ
        if k.startswith("OPENBLAS") or k.endswith("_NUM_THREADS") or k.startswith("MLSERVE_")
    )
    return {k: os.environ[k] for k in keys}


def machine_lines(packages: Sequence[str]) -> list[str]:
    """Lines describing this machine and the software measured."""
    cpu = cpu_description()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    ram = ram_bytes()
    lines = [
        f"date (UTC)    {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M}",
        f"cpu           {cpu.get('model')} (family {cpu.get('cpu family_', '?')}, "
        f"model {cpu.get('model_', '?')}, stepping {cpu.get('stepping_', '?')}, "
        f"{cpu.get('cpu MHz_', '?')} MHz reported)",
        f"cpu features  {cpu.get('flags', '?')}"
        + (f"; virtualised ({cpu.get('Hypervisor vendor', 'hypervisor')})" if cpu.get("hypervisor") else ""),
        f"caches        L1d {cpu.get('L1d cache', '?')}, L2 {cpu.get('L2 cache', '?')}, "
        f"L3 {cpu.get('L3 cache', '?')}",
        f"cores         {os.cpu_count()} logical, {affinity} usable by this process",
        f"ram           {fmt_bytes(ram) if ram else '?'}",
        f"os            {os_description()}",
        f"python        {platform.python_version()} ({platform.python_implementation()}, "
        f"{platform.machine()})",
    ]
    for name in packages:
        lines.append(f"{name:<13} {package_version(name)}")
    env = openblas_env()
    lines.append(
        "env           "
        + (", ".join(f"{k}={v}" for k, v in env.items()) if env else
           "no OPENBLAS_*, *_NUM_THREADS or MLSERVE_* variables set")
    )
    return lines


def load_average() -> str:
    """'1.02 0.87 0.55' (1, 5, 15 min) and the number of CPUs, or 'n/a'."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "n/a"
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cpus"


def file_digest(path: str) -> str:
    import hashlib

    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()[:16]
    except OSError:
        return "unknown"


def blas_lines() -> list[str]:
    """Every BLAS / OpenMP runtime loaded in this process, per threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return ["threadpoolctl not installed: BLAS libraries not listed"]
    lines = []
    for lib in threadpool_info():
        arch = lib.get("architecture") or lib.get("corename") or "-"
        lines.append(
            f"{lib.get('internal_api')} {lib.get('version') or '?'} "
            f"[{arch}, {lib.get('threading_layer', lib.get('user_api'))}, "
            f"num_threads={lib.get('num_threads')}] {lib.get('filepath')}"
        )
    return lines


def print_section(title: str) -> None:
    print()
    print(f"## {title}")
    print()
    sys.stdout.flush()
