"""The example notebooks (examples/notebooks/) run from top to bottom without an error.

Each is executed by nbclient in a kernel of the test environment's own Python, in a
temporary folder (the notebooks write their .mls files and stores there), with a time
limit per cell. They are stored without outputs, so a diff shows code, not results.
"""
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "examples" / "notebooks").glob("*.ipynb"))
KERNEL = "mlserve-test"


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory, monkeypatch_module):
    # a kernelspec that runs this interpreter, found before any installed "python3" kernel
    spec = tmp_path_factory.mktemp("jupyter") / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mlserve tests", "language": "python",
    }))
    monkeypatch_module.setenv("JUPYTER_PATH", str(spec.parent.parent))
    # the kernel imports this checkout's mlserve, whichever is installed
    root = str(Path(__file__).parent.parent)
    monkeypatch_module.setenv("PYTHONPATH", os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    monkeypatch_module.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_the_four_scenarios_have_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert any("house" in n for n in names) and any("segment" in n for n in names)
    assert any("recommend" in n for n in names) and any("image" in n for n in names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, kernel_dir):
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()        # raises CellExecutionError naming the cell on any error
    outputs = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.get("data", {})]
    assert images, f"{path.name} shows no plot"
    if "house" in path.stem:   # the model's and the store's _repr_html_, as Jupyter shows them
        html = [o["data"]["text/html"] for o in outputs
                if o.output_type == "execute_result" and "text/html" in o.get("data", {})]
        assert any("LinearRegression" in h and "sqft" in h for h in html), html
        assert any("houses" in h and "production" in h for h in html), html
