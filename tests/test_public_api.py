"""The package's public surface: what `dir(mlserve)` and `from mlserve import *` give."""

import subprocess
import sys

import mlserve

SUBPACKAGES = {"convert", "serving", "store", "cli"}  # present once imported, as any package's


def _fresh(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_dir_shows_no_stray_names():
    public = set(_fresh("import mlserve; print(' '.join(n for n in dir(mlserve) if n[0] != '_'))").split())
    stray = public - set(mlserve.__all__) - SUBPACKAGES
    assert not stray, f"names in dir(mlserve) that are not in __all__: {sorted(stray)}"
    assert "annotations" not in public


def test_serving_names_are_public_and_lazy():
    for name in ("ModelStore", "blueprint", "MLServe"):
        assert name in mlserve.__all__
        assert name in dir(mlserve)
    # listed before use, but Flask is imported only when they are asked for
    assert _fresh("import sys, mlserve; dir(mlserve); print('flask' in sys.modules)") == "False"


def test_star_import_gives_every_name_in_all():
    names = _fresh(
        "ns = {}; exec('from mlserve import *', ns); "
        "print(' '.join(sorted(n for n in ns if n != '__builtins__')))"
    ).split()
    assert sorted(set(mlserve.__all__)) == names
