"""Leak checks that a busy test process cannot fool.

A leak grows the resident set in every round of calls. A one-off growth (malloc
touching a new arena, another test's thread allocating at the same moment, the
allocator keeping freed pages) shows up in one round only, so a leak test looks
at the smallest growth over a few rounds, after a warm-up round.
"""
import psutil


def steady_rss_growth(run, rounds=3):
    """Run `run()` once to warm up, then `rounds` times; the smallest RSS growth, in bytes."""
    process = psutil.Process()
    run()
    growth = []
    for _ in range(rounds):
        before = process.memory_info().rss
        run()
        growth.append(process.memory_info().rss - before)
    return min(growth)


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
