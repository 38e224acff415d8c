"""The examples run as they are."""

import os
import subprocess
import sys

from conftest import ROOT, TINY, real_models_off, skip_loudly


def run(script, *args):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, f"{script} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


def test_quickstart():
    if real_models_off():
        skip_loudly("LCROSS_SKIP_MODEL_TESTS is set: examples/quickstart.py not run")
    out = run("quickstart.py")
    assert "train R^2" in out and "L-Cross" in out and "unsteered:" in out


def test_own_activations_with_transformers():
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        skip_loudly("torch / transformers are not installed: examples/own_activations.py not run")
    out = run("own_activations.py", str(TINY / "tiny-llama"), str(TINY / "tiny-qwen2"), "1", "1")
    assert "LinearMap(" in out


def test_the_notebook_is_the_script():
    """examples/quickstart.ipynb holds the same code as quickstart.py, cell by cell."""
    import json

    nb = json.loads((ROOT / "examples" / "quickstart.ipynb").read_text())
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    script = (ROOT / "examples" / "quickstart.py").read_text()
    for line in code.splitlines():
        assert line in script, f"the notebook's line {line!r} is not in quickstart.py"
