"""Shared setup of the Python tests: the data mirror, a fresh result store, the fixtures,
the CLI binary for comparisons, and loud skips."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "crates" / "lcross-model" / "tests" / "fixtures"
TINY = FIXTURES / "hf"

# The tests read the local data mirror (what CI has) unless told otherwise, and write to a
# result store of their own.
os.environ.setdefault("LCROSS_DATA", str(ROOT.parent / "shared" / "data"))
_CACHE = tempfile.mkdtemp(prefix="lcross-pytest-cache-")
os.environ["LCROSS_CACHE"] = _CACHE


def skip_loudly(reason: str) -> None:
    """Skip a test and say so on stderr (pytest -rs lists it too)."""
    print(f"SKIPPED: {reason}", file=sys.stderr)
    pytest.skip(reason)


def real_models_off() -> bool:
    return bool(os.environ.get("LCROSS_SKIP_MODEL_TESTS"))


@pytest.fixture
def real_models():
    if real_models_off():
        skip_loudly("LCROSS_SKIP_MODEL_TESTS is set: real-model test not run")


@pytest.fixture(scope="session")
def tiny_llama():
    import lcross

    return lcross.Model(str(TINY / "tiny-llama"))


@pytest.fixture(scope="session")
def smollm():
    import lcross

    if real_models_off():
        skip_loudly("LCROSS_SKIP_MODEL_TESTS is set: real-model test not run")
    return lcross.Model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def qwen():
    import lcross

    if real_models_off():
        skip_loudly("LCROSS_SKIP_MODEL_TESTS is set: real-model test not run")
    return lcross.Model("qwen2.5-coder-0.5b-instruct")


def lcross_binary() -> Path:
    """The CLI built by `cargo test --release` / `cargo build --release` ($LCROSS_BIN overrides)."""
    given = os.environ.get("LCROSS_BIN")
    path = Path(given) if given else ROOT / "target" / "release" / "lcross"
    if not path.is_file():
        found = shutil.which("lcross")
        if found:
            return Path(found)
        skip_loudly(f"no lcross binary at {path} (build it with cargo build --release): CLI comparison not run")
    return path


def run_cli(*args: str) -> dict:
    """Run `lcross ARGS --json` and parse its output."""
    out = subprocess.run([str(lcross_binary()), *args, "--json"], capture_output=True, text=True, env=os.environ.copy())
    assert out.returncode == 0, f"lcross {' '.join(args)} failed: {out.stderr}"
    return json.loads(out.stdout)


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())
