#!/usr/bin/env python3
"""llama.cpp control-vector files from gguf-py (llama.cpp's own Python GGUF library), for
lcross-core's control-vector tests.

1. Writes `cvec-gguf-py.gguf` the way repeng and llama.cpp's tools do (GGUFWriter with
   architecture "controlvector", a model hint, a layer count, f32 `direction.<layer>`
   tensors) from seeded values, and the values themselves to `cvec-gguf-py.json`:
   lcross must import exactly these.
2. If `cvec-lcross.gguf` exists (written by `lcross vector export`, see the test), reads it
   with GGUFReader and checks what llama.cpp's loader relies on: architecture, tensor names
   `direction.<layer>` with layer >= 1, f32 type, one dimension, and the values of the JSON.
Run by hand:  /opt/refenv/bin/python scripts/reference/make_cvec_fixtures.py
"""
import json
from pathlib import Path

import numpy as np
import gguf

FIX = Path(__file__).resolve().parents[2] / "crates" / "lcross-core" / "tests" / "fixtures"
rng = np.random.default_rng(20261125)
layers = {3: rng.standard_normal(16).astype(np.float32), 14: rng.standard_normal(16).astype(np.float32)}

w = gguf.GGUFWriter(str(FIX / "cvec-gguf-py.gguf"), "controlvector")
w.add_string("controlvector.model_hint", "qwen2")
w.add_uint32("controlvector.layer_count", len(layers))
for layer, v in layers.items():
    w.add_tensor(f"direction.{layer}", v)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
json.dump({"model_hint": "qwen2", "layers": {str(k): v.tolist() for k, v in layers.items()}},
          open(FIX / "cvec-gguf-py.json", "w"))
print("wrote cvec-gguf-py.gguf / .json")

ours = FIX / "cvec-lcross.gguf"
if ours.exists():
    r = gguf.GGUFReader(str(ours))
    arch = r.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector", "architecture"
    hint = r.fields["controlvector.model_hint"]
    assert bytes(hint.parts[hint.data[0]]).decode() == "qwen2", "model hint"
    got = {}
    for t in r.tensors:
        assert t.name.startswith("direction."), t.name
        layer = int(t.name.split(".", 1)[1])
        assert layer >= 1, "llama.cpp refuses direction.0"
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.tensor_type
        assert len(t.shape) == 1, t.shape
        got[layer] = np.array(t.data, dtype=np.float32)
    assert sorted(got) == sorted(layers), sorted(got)
    for k, v in layers.items():
        assert np.array_equal(got[k], v), k
    print("cvec-lcross.gguf: read by gguf-py, same layers and values")
