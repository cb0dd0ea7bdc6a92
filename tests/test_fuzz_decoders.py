"""Bounded fuzzing: atheris on every request decoder and on ONNX bytes (from_onnx), libFuzzer
on the .mls reader and on every model kind's loader and predict; crash corpus replay.

Each target runs for MLSERVE_FUZZ_SECONDS (default 2) here; scripts/fuzz runs
them for longer. Inputs that once crashed a decoder are kept in
tests/fuzz/corpus/<target>/ and replayed below on every run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from memory_support import fuzzer_rss_limit_flag

HERE = Path(__file__).resolve().parent
FUZZ = HERE / "fuzz"
ROOT = HERE.parent
sys.path.insert(0, str(FUZZ))

from decoders import TARGETS, check  # noqa: E402

SECONDS = int(os.environ.get("MLSERVE_FUZZ_SECONDS", "2"))
CORPUS = sorted((FUZZ / "corpus").glob("*/*"))


@pytest.mark.parametrize("path", CORPUS, ids=[f"{p.parent.name}/{p.name}" for p in CORPUS])
def test_crash_corpus_is_now_a_4xx(path):
    assert path.parent.name in TARGETS
    check(path.parent.name, path.read_bytes())


@pytest.mark.parametrize("target", TARGETS)
def test_atheris_decoder_bounded(target, tmp_path):
    pytest.importorskip("atheris")
    result = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_decoders_atheris.py"), f"--target={target}",
         f"-max_total_time={SECONDS}", "-max_len=2048", fuzzer_rss_limit_flag(), "-seed=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120 + SECONDS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done" in result.stderr, result.stderr[-2000:]


def test_libfuzzer_mls_loader_bounded(tmp_path):
    assert shutil.which("clang"), "clang with libFuzzer is needed (.ci/run installs it)"
    exe = tmp_path / "fuzz_mls_format"
    build = subprocess.run(
        ["clang", "-std=c11", "-g", "-O1", "-D_GNU_SOURCE", "-fsanitize=fuzzer,address,undefined",
         "-fno-sanitize-recover=undefined", "-I", str(ROOT / "csrc"), str(FUZZ / "fuzz_mls_format.c"),
         str(ROOT / "csrc" / "mls_format.c"), str(ROOT / "csrc" / "mls_status.c"),
         str(ROOT / "csrc" / "mls_array.c"), "-o", str(exe)],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    from serving_support import fit_classifier, fit_regressor

    import mlserve

    for name, model in [("reg", fit_regressor()), ("clf", fit_classifier())]:
        mlserve.save(model, str(corpus / f"{name}.mls"))
    result = subprocess.run(
        [str(exe), f"-max_total_time={SECONDS}", "-max_len=65536", "-seed=1", fuzzer_rss_limit_flag(),
         str(corpus)],
        capture_output=True, text=True, timeout=120 + SECONDS,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_libfuzzer_every_model_kind_bounded(tmp_path):
    """tests/fuzz/fuzz_mls_models.c: mutated files of every kind (checksums recomputed) are
    loaded by the families' own C validation and, when they load, predicted on."""
    assert shutil.which("clang"), "clang with libFuzzer is needed (.ci/run installs it)"
    import scipy_openblas32 as blas
    from mls_seeds import write_seeds

    exe = tmp_path / "fuzz_mls_models"
    sources = sorted(str(p) for p in (ROOT / "csrc").glob("mls_*.c"))
    sources += sorted(str(p) for p in (ROOT / "csrc" / "graph").glob("*.c"))
    build = subprocess.run(
        ["clang", "-std=c11", "-g", "-O1", "-D_GNU_SOURCE", "-DMLS_BLAS_SCIPY_PREFIX=1",
         "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=undefined",
         "-I", str(ROOT / "csrc"), "-I", blas.get_include_dir(),
         str(FUZZ / "fuzz_mls_models.c"), *sources, "-L", blas.get_lib_dir(),
         f"-l{blas.get_library()}", "-lm", f"-Wl,-rpath,{blas.get_lib_dir()}", "-o", str(exe)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    assert len(write_seeds(corpus)) == 8
    result = subprocess.run(
        [str(exe), f"-max_total_time={max(SECONDS, 10)}", "-max_len=65536", "-seed=1",
         fuzzer_rss_limit_flag(), str(corpus)],
        capture_output=True, text=True, timeout=180 + SECONDS, env={**os.environ,
        "OPENBLAS_NUM_THREADS": "1", "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done" in result.stderr, result.stderr[-2000:]


def test_atheris_onnx_bytes_bounded(tmp_path):
    """tests/fuzz/fuzz_onnx_atheris.py: mutated ONNX graphs load or raise ConvertError, and
    the ones that load predict; seeded with the raw bytes of the seed graphs."""
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    from fuzz_onnx_atheris import SEEDS

    assert len(SEEDS) >= 20
    for i, seed in enumerate(SEEDS):
        (corpus / f"raw-{i}").write_bytes(b"\x00" + seed)  # byte 0: fuzz the bytes themselves
    result = subprocess.run(
        [sys.executable, str(FUZZ / "fuzz_onnx_atheris.py"), f"-max_total_time={max(SECONDS, 5)}",
         "-max_len=16384", fuzzer_rss_limit_flag(), "-seed=1", str(corpus)],
        cwd=tmp_path, capture_output=True, text=True, timeout=180 + SECONDS,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Done" in result.stderr, result.stderr[-2000:]
