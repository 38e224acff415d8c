"""The Python API on the tiny checkpoints and the real models: models, hidden states
against transformers, vectors, maps against numpy, steering, files shared with the CLI,
evaluations, and the errors bad inputs raise."""

import re
from pathlib import Path

import numpy as np
import pytest

import lcross
from conftest import ROOT, TINY, fixture, run_cli, skip_loudly


def rel_l2(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def test_version_is_the_crate_version():
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'\[workspace\.package\][^\[]*?version\s*=\s*"([^"]+)"', cargo, re.S).group(1)
    assert lcross.__version__ == version


def test_every_public_name_has_a_docstring_in_the_stubs():
    stubs = (Path(lcross.__file__).parent / "_lcross.pyi").read_text()
    for name in lcross.__all__:
        if name.startswith("__") or name == "DEFAULT_MODEL":
            continue
        m = re.search(rf"^(class|def) {name}\b.*?(?=^(class|def) |\Z)", stubs, re.S | re.M)
        assert m, f"{name} has no stub"
        assert '"""' in m.group(0), f"{name} has no docstring in the stubs"
    assert (Path(lcross.__file__).parent / "py.typed").exists()


def test_model_basics_on_the_tiny_checkpoint(tiny_llama):
    m = tiny_llama
    assert m.n_layers >= 2 and m.hidden_size > 0 and m.architecture == "llama"
    ids = m.tokenize("Hello world")
    assert ids and all(isinstance(i, int) for i in ids)
    assert m.decode(m.tokenize("Hello world")).strip().endswith("Hello world")
    assert len(m.sha256) == 64
    chat = m.chat("Hi")
    assert "Hi" in chat and len(m.tokenize("Hi", chat=True)) > len(m.tokenize("Hi"))


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "gemma3-270m"])
def test_hidden_states_equal_transformers(name, real_models):
    fx = fixture(name)
    m = lcross.Model(name)
    for case in fx["forward"]:
        assert m.tokenize(case["prompt"], chat=True) == case["ids"], "the chat prompt's ids differ from transformers'"
        h = m.hidden_states([case["prompt"]], case["layer"], chat=True)
        assert h.shape == (1, fx["hidden_size"]) and h.dtype == np.float32
        err = rel_l2(h[0], case["hidden"])
        assert err <= 1e-4, f"{name} layer {case['layer']}: relative L2 {err:.2e} from transformers"


def test_hidden_states_are_batched_like_one_by_one(tiny_llama):
    texts = ["The cat sat.", "A much longer sentence about the weather and the sea.", "Hi"]
    together = tiny_llama.hidden_states(texts, 1, cache=False)
    alone = np.stack([tiny_llama.hidden_states(t, 1, cache=False)[0] for t in texts])
    assert together.shape == (3, tiny_llama.hidden_size)
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,ds,dt", [(200, 24, 16), (12, 40, 8)])
def test_fit_map_equals_numpy(n, ds, dt):
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((n, ds)), rng.standard_normal((n, dt))
    t = lcross.fit_map(x, y)
    assert t.shape == (ds, dt)
    pinv = np.linalg.pinv(x) @ y  # the minimum-norm solution when n < ds
    lstsq = np.linalg.lstsq(x, y, rcond=None)[0]
    assert rel_l2(t.matrix, pinv) <= 1e-8
    assert rel_l2(t.matrix, lstsq) <= 1e-8
    d = t.diagnostics
    assert d["interpolating"] == (n <= ds)
    assert d["rank"] == min(n, ds)
    assert abs(d["train_r2"] - (1 - ((x @ pinv - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())) < 1e-6 or d["interpolating"]
    np.testing.assert_allclose(t.apply(x[:3]), (x[:3] @ pinv).astype(np.float32), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(t.apply(x[0]), (x[0] @ pinv).astype(np.float32), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("estimator", ["ridge", "ridge:0.5", "procrustes", "random:3", "reduced-rank", "reduced-rank:2", "affine", "mlp:8"])
def test_fit_map_takes_every_estimator(estimator):
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((50, 10)), rng.standard_normal((50, 10))
    t = lcross.fit_map(x, y, estimator=estimator)
    assert t.shape == (10, 10) and np.isfinite(t.matrix).all()
    if estimator == "procrustes":
        np.testing.assert_allclose(t.matrix.T @ t.matrix, np.eye(10), atol=1e-8)
    if estimator == "reduced-rank:2":
        assert t.diagnostics["map_rank"] == 2 and np.linalg.matrix_rank(t.matrix, tol=1e-8) == 2
    assert lcross.fit_map(x, x, estimator="identity").matrix.tolist() == np.eye(10).tolist()


def test_affine_map_matches_numpy_least_squares_with_a_bias():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((60, 8)) + 3.0
    y = x @ rng.standard_normal((8, 6)) + rng.standard_normal(6) * 5 + 0.01 * rng.standard_normal((60, 6))
    t = lcross.fit_map(x, y, estimator="affine")
    sol, *_ = np.linalg.lstsq(np.hstack([x, np.ones((60, 1))]), y, rcond=None)
    np.testing.assert_allclose(t.matrix, sol[:8], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(t.bias, sol[8], rtol=1e-7, atol=1e-8)
    assert t.diagnostics["train_r2"] > 0.9999
    assert lcross.fit_map(x, y, estimator="ols").bias is None
    # A vector (a difference of states) moves through T alone.
    np.testing.assert_allclose(t.apply(x[0] - x[1]), ((x[0] - x[1]) @ sol[:8]).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_fit_map_accepts_torch_tensors():
    try:
        import torch
    except ImportError:
        skip_loudly("torch is not installed: fit_map on torch tensors not tested")
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((30, 6)), rng.standard_normal((30, 4))
    t = lcross.fit_map(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert rel_l2(t.matrix, np.linalg.pinv(x.astype(np.float32).astype(np.float64)) @ y.astype(np.float32)) <= 1e-5


def test_fit_map_accepts_array_likes_without_numpy_arrays():
    class Wrapped:
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a if dtype is None else self.a.astype(dtype)

    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((20, 5)), rng.standard_normal((20, 3))
    assert rel_l2(lcross.fit_map(Wrapped(x), y.tolist()).matrix, np.linalg.pinv(x) @ y) <= 1e-8


def test_bad_inputs_raise_the_right_errors(tiny_llama, tmp_path):
    rng = np.random.default_rng(4)
    with pytest.raises(lcross.ShapeError):
        lcross.fit_map(rng.standard_normal((10, 4)), rng.standard_normal((9, 4)))
    with pytest.raises(lcross.ShapeError):
        lcross.fit_map(rng.standard_normal(10), rng.standard_normal((10, 4)))
    x = rng.standard_normal((10, 4))
    x[3, 2] = np.nan
    with pytest.raises(lcross.NonFiniteError, match="row 3, column 2"):
        lcross.fit_map(x, rng.standard_normal((10, 4)))
    with pytest.raises(lcross.BadValueError, match="estimator"):
        lcross.fit_map(rng.standard_normal((10, 4)), rng.standard_normal((10, 4)), estimator="magic")
    with pytest.raises(lcross.DataError, match="nope.safetensors"):
        lcross.SteeringVector.load(tmp_path / "nope.safetensors")
    with pytest.raises(lcross.ModelError):
        lcross.Model(str(tmp_path / "no-such-model.gguf"))
    with pytest.raises(lcross.BadValueError):
        lcross.Model(str(TINY / "tiny-llama"), weights="f8")
    sv = lcross.extract(tiny_llama, [("I love it", "I hate it"), ("Great day", "Awful day")], [1])
    with pytest.raises(lcross.ShapeError):
        sv[0]
    with pytest.raises(lcross.ShapeError):
        lcross.Steer(sv, 1.0, layer=0)
    with pytest.raises(lcross.NotCalibratedError):
        tiny_llama.generate("Hi", steering=lcross.Steer(sv, "auto"), max_tokens=2)
    with pytest.raises(lcross.NonFiniteError):
        lcross.Steer(sv, float("nan"))
    with pytest.raises(lcross.ShapeError):
        lcross.SteeringVector.from_arrays({1: np.zeros(3)}, model=tiny_llama)
    with pytest.raises(lcross.NonFiniteError):
        lcross.SteeringVector.from_arrays({1: np.full(tiny_llama.hidden_size, np.inf)}, model=tiny_llama)
    with pytest.raises(lcross.BadValueError, match="layers"):
        lcross.extract(tiny_llama, [("a", "b")], "one")
    with pytest.raises(lcross.LcrossError):
        lcross.extract(tiny_llama, "builtin:no-such-concept", [1])
    other = lcross.Model(str(TINY / "tiny-qwen2"))
    with pytest.raises(lcross.WrongModelError):
        other.generate("Hi", steering=lcross.Steer(sv, 1.0), max_tokens=2)
    assert len(other.generate("Hi", steering=lcross.Steer(sv, 1.0, force=True), max_tokens=2, chat=False)) == 1
    assert issubclass(lcross.MissingDataError, lcross.DataError) and issubclass(lcross.DataError, lcross.LcrossError)


def test_missing_data_names_the_fetch_command(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setenv("LCROSS_DATA", str(tmp_path))
    with pytest.raises(lcross.MissingDataError, match="lcross data fetch"):
        lcross.extract(tiny_llama, "happiness", [1])


def test_vectors_round_trip_and_the_cli_reads_them(tiny_llama, tmp_path):
    sv = lcross.extract(tiny_llama, "builtin:optimism", [1, 2], limit=6)
    assert sv.layers == [1, 2] and sv[1].shape == (tiny_llama.hidden_size,) and sv[1].dtype == np.float32
    assert sv.metadata["n_pairs"] == 6 and sv.concept == "optimism" and len(sv) == 2 and 2 in sv
    path = tmp_path / "sv.safetensors"
    sv.save(path)
    back = lcross.SteeringVector.load(path)
    assert back.fingerprint == sv.fingerprint
    assert np.array_equal(back[2], sv[2])
    shown = run_cli("vector", "show", str(path))
    assert np.array_equal(np.asarray(shown["layers"]["1"], dtype=np.float32), sv[1])
    made = lcross.SteeringVector.from_arrays({1: sv[1] * 2}, model=tiny_llama, concept="twice")
    assert made.concept == "twice" and np.array_equal(made[1], sv[1] * 2)
    sv.to_gguf(tmp_path / "sv.gguf")
    assert (tmp_path / "sv.gguf").stat().st_size > 0


def test_python_pipeline_equals_the_cli(tiny_llama, tmp_path):
    """extract -> align -> transfer -> steered generation, from Python and from the CLI."""
    src, tgt = str(TINY / "tiny-llama"), str(TINY / "tiny-qwen2")
    target = lcross.Model(tgt)
    sv = lcross.extract(tiny_llama, "builtin:optimism", [1], limit=8)
    run_cli("extract", "-m", src, "-d", "builtin:optimism", "-l", "1", "--limit", "8", "-o", str(tmp_path / "cli-sv.safetensors"))
    cli_sv = lcross.SteeringVector.load(tmp_path / "cli-sv.safetensors")
    assert np.array_equal(cli_sv[1], sv[1]), "Python's vector differs from the CLI's"
    t = lcross.align(tiny_llama, target, "builtin:optimism", source_layer=1, target_layer=1, limit=8)
    run_cli("align", "--source", src, "--source-layer", "1", "--target", tgt, "--target-layer", "1", "--corpus", "builtin:optimism",
            "--limit", "8", "-o", str(tmp_path / "cli-T.safetensors"))
    cli_t = lcross.LinearMap.load(tmp_path / "cli-T.safetensors")
    t.save(tmp_path / "py-T.safetensors")  # files hold T as float32, as the CLI writes it
    assert np.array_equal(cli_t.matrix, lcross.LinearMap.load(tmp_path / "py-T.safetensors").matrix), "Python's map differs from the CLI's"
    assert rel_l2(t.matrix, cli_t.matrix) <= 1e-6
    moved = lcross.transfer(sv, cli_t)
    run_cli("transfer", "--vector", str(tmp_path / "cli-sv.safetensors"), "--map", str(tmp_path / "cli-T.safetensors"), "-o", str(tmp_path / "cli-moved.safetensors"))
    cli_moved = lcross.SteeringVector.load(tmp_path / "cli-moved.safetensors")
    assert np.array_equal(cli_moved[1], moved[1])
    assert moved.metadata["provenance"]["map"]["sha256"] == cli_moved.metadata["provenance"]["map"]["sha256"]
    text = target.generate(["Hello"], steering=lcross.Steer(moved, 3.0), max_tokens=6, chat=False)[0]
    cli = run_cli("steer", "-m", tgt, "--vector", str(tmp_path / "cli-moved.safetensors"), "--beta", "3", "--max-tokens", "6", "Hello")
    assert text == cli["text"], "Python's steered answer differs from the CLI's"


def test_steering_context_and_batches_agree(tiny_llama):
    sv = lcross.extract(tiny_llama, "builtin:optimism", [1], limit=6)
    prompts = ["Tell me about rain.", "What is a good day?"]
    plain = tiny_llama.generate(prompts, max_tokens=6)
    steered = tiny_llama.generate(prompts, steering=lcross.Steer(sv, 8.0), max_tokens=6)
    with tiny_llama.steering([lcross.Steer(sv, 8.0)]):
        inside = tiny_llama.generate(prompts, max_tokens=6)
    after = tiny_llama.generate(prompts, max_tokens=6)
    assert inside == steered and after == plain
    assert steered != plain, "beta 8 on the tiny model should change the answer"
    mixed = tiny_llama.generate_batch([(prompts[0], None), (prompts[1], lcross.Steer(sv, 8.0))], max_tokens=6)
    assert mixed == [plain[0], steered[1]]
    ablated = tiny_llama.generate(prompts, steering=lcross.Steer(sv, 0.0, intervention="ablate"), max_tokens=6)
    assert len(ablated) == 2
    sampled = tiny_llama.generate(prompts, max_tokens=6, temperature=0.8, seed=3)
    assert sampled == tiny_llama.generate(prompts, max_tokens=6, temperature=0.8, seed=3)


def test_eval_ab_returns_the_cli_rows(tiny_llama):
    sv = lcross.extract(tiny_llama, "builtin:optimism", [1], limit=8)
    report = lcross.eval_ab(tiny_llama, "builtin:optimism", vectors=[sv], betas=[0, 2], limit=6)
    assert report["metric"] == "ab_prob_matching"
    rows = report["rows"]
    assert [r["beta"] for r in rows] == [0.0, 2.0] and all(r["n"] == 6 for r in rows)
    cli = run_cli("eval", "ab", "-m", str(TINY / "tiny-llama"), "-d", "builtin:optimism", "--betas=0", "--limit", "6", "--no-cache")
    assert abs(cli["rows"][0]["mean"] - rows[0]["mean"]) < 1e-9


def test_fair_evaluation_runs_through_the_metric_face(tiny_llama):
    report = lcross.evaluate("fair", tiny_llama, limit=2, max_tokens=8, items=True)
    assert report["metric"] == "fair"
    assert [r["n"] for r in report["rows"]] == [2], "one unsteered condition of 2 vignettes"
    assert len(report["items"]) == 2 and all(isinstance(it["answer"], str) for it in report["items"])


def test_real_models_extract_transfer_and_steer(smollm, qwen):
    sv = lcross.extract(smollm, "builtin:optimism", [12], limit=16)
    t = lcross.align(smollm, qwen, "builtin:optimism", source_layer=12, target_layer=9)
    assert t.shape == (smollm.hidden_size, qwen.hidden_size)
    moved = lcross.transfer(sv, t)
    assert moved.model_id == qwen.id and moved[9].shape == (qwen.hidden_size,)
    report = lcross.eval_ab(qwen, "builtin:optimism", vectors=[moved], betas=[0, 4], limit=8)
    assert len(report["rows"]) == 2


def test_stubs_match_the_runtime_signatures():
    """Every function and method of the stubs takes the parameters the compiled module takes."""
    import ast
    import inspect

    tree = ast.parse((Path(lcross.__file__).parent / "_lcross.pyi").read_text())

    def stub_params(fn):
        a = fn.args
        return [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs if p.arg != "self"]

    checked = 0
    for node in tree.body:
        targets = []
        if isinstance(node, ast.FunctionDef):
            targets = [(node, getattr(lcross, node.name))]
        elif isinstance(node, ast.ClassDef):
            cls = getattr(lcross, node.name)
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and not any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list):
                    targets.append((fn, cls if fn.name == "__init__" else getattr(cls, fn.name)))
        for fn, obj in targets:
            try:
                sig = inspect.signature(obj)
            except (TypeError, ValueError):
                continue  # no text signature (e.g. a dunder without one)
            runtime = [p for p in sig.parameters if p not in ("self", "cls", "args", "kwargs", "_args")]
            stub = stub_params(fn)
            if fn.name.startswith("__") and fn.name != "__init__":
                stub, runtime = len(stub), len(runtime)  # Python passes dunder arguments by position
            assert stub == runtime, f"{node.name}.{fn.name}: stub {stub} != runtime {runtime}"
            checked += 1
    assert checked >= 20, f"only {checked} signatures compared"


def _interrupt_after(seconds):
    """A SIGINT to this process after `seconds`, as Ctrl-C sends it (the default handler raises KeyboardInterrupt)."""
    import os
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(seconds, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_stops_extraction_and_the_cache_stays_whole(smollm):
    import time

    timer = _interrupt_after(0.3)
    start = time.perf_counter()
    try:
        with pytest.raises(KeyboardInterrupt):
            lcross.extract(smollm, "builtin:optimism", [6, 12], progress=False)
    finally:
        timer.cancel()
    assert time.perf_counter() - start < 5, "Ctrl-C did not stop the extraction within a batch"
    # What the interrupted run stored is whole: the cached rerun equals a run without cache.
    again = lcross.extract(smollm, "builtin:optimism", [6, 12], progress=False)
    fresh = lcross.extract(smollm, "builtin:optimism", [6, 12], cache=False, progress=False)
    assert np.array_equal(again[12], fresh[12]) and np.array_equal(again[6], fresh[6])


def test_ctrl_c_stops_generation_and_the_model_still_runs(smollm):
    timer = _interrupt_after(0.3)
    try:
        with pytest.raises(KeyboardInterrupt):
            smollm.generate(["Write a long story about the sea."] * 4, max_tokens=2000, progress=False)
    finally:
        timer.cancel()
    assert len(smollm.generate(["Hi"], max_tokens=3)[0]) > 0


@pytest.mark.parametrize("family", ["tiny-qwen3", "tiny-mistral", "tiny-gemma2", "tiny-phi3", "tiny-olmo2"])
def test_every_family_loads_from_python_and_matches_transformers(family):
    import json

    ref = json.loads((TINY / family / "reference.json").read_text())
    m = lcross.Model(str(TINY / family))
    assert m.tokenize(ref["text"]) == ref["ids"]
    layers = sorted(int(k) for k in ref["hidden_last"])
    for layer in layers:
        h = m.hidden_states([ref["text"]], layer, cache=False)
        err = rel_l2(h[0], ref["hidden_last"][str(layer)])
        assert err <= 1e-4, f"{family} layer {layer}: relative L2 {err:.2e} from transformers"
    gguf = lcross.Model(str(TINY.parent / "gguf" / f"{family}.gguf"))
    assert gguf.architecture == m.architecture or family == "tiny-mistral"


def test_similarity_of_arrays_equals_numpy():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((40, 12))
    b = a @ rng.standard_normal((12, 8)) + 0.3 * rng.standard_normal((40, 8))
    got = lcross.similarity(a, b, topk=5, cca_dim=4)
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    h = np.eye(40) - 1 / 40
    k, l = an @ an.T, bn @ bn.T
    hsic = lambda x, y: np.trace(x @ h @ y @ h)  # noqa: E731
    assert abs(got["cka"] - hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))) < 1e-9
    assert got["n"] == 40 and all(0 <= got[m] <= 1 + 1e-9 for m in ("mutual_knn", "cka", "svcca"))
    assert abs(lcross.similarity(a, a)["mutual_knn"] - 1.0) < 1e-12
    with pytest.raises(lcross.ShapeError):
        lcross.similarity(a, b[:30])
