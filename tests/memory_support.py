"""Leak checks that a busy test process cannot fool.

A leak grows the resident set in every round of calls. A one-off growth (malloc
touching a new arena, the allocator keeping freed pages) shows up in one round
only, so a leak test looks at the smallest growth over a few rounds, after a
warm-up round.

The rounds run in a forked child of the test process: the child has the fitted
models and data but none of the threads that earlier tests left behind (a
server's metrics flusher, a batcher, tqdm's monitor), so its resident set
moves only with the calls being checked. Two CI runs failed on a steady 5-30 MB
per round in the 4 GB suite process that no run of the test alone reproduced.
"""
import os
import pickle
import select
import time
import traceback

import psutil


def _rounds(run, rounds):
    process = psutil.Process()
    run()
    growth = []
    for _ in range(rounds):
        before = process.memory_info().rss
        run()
        growth.append(process.memory_info().rss - before)
    return min(growth)


def steady_rss_growth(run, rounds=3, timeout_s=600):
    """Run `run()` once to warm up, then `rounds` times; the smallest RSS growth, in bytes.

    Measured in a forked child (see the module's docstring); an exception raised by
    `run` in the child is raised here with the child's traceback.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: measure, send the result, leave without running any cleanup
        os.close(read_end)
        try:
            result = ("ok", _rounds(run, rounds))
        except BaseException as error:  # noqa: BLE001 - sent back to the parent
            result = ("error", f"{type(error).__name__}: {error}\n{traceback.format_exc()}")
        with os.fdopen(write_end, "wb") as pipe:
            pickle.dump(result, pipe)
        os._exit(0)
    os.close(write_end)
    data = b""
    deadline = time.monotonic() + timeout_s
    with os.fdopen(read_end, "rb") as pipe:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                raise TimeoutError(f"the leak check did not finish in {timeout_s} s")
            chunk = os.read(pipe.fileno(), 1 << 16)
            if not chunk:
                break
            data += chunk
    _, status = os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"the leak check's child died (wait status {status})")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise AssertionError(f"the leak check's calls raised in the child: {value}")
    return value


def fuzzer_rss_limit_flag(headroom_mb=2048):
    """libFuzzer's -rss_limit_mb for a fuzzer started from this process.

    Linux keeps a process's peak RSS (getrusage's ru_maxrss, which libFuzzer reads) across
    fork and exec, so a fuzzer started from a test process that has grown (JAX, Spark and
    MLflow loaded by other tests) starts "using" that much. The limit is that inherited
    peak plus the headroom the fuzzer itself may use.
    """
    import resource

    inherited_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return f"-rss_limit_mb={inherited_mb + headroom_mb}"
