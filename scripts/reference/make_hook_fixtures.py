#!/usr/bin/env python3
"""Reference values of lcross's hook points, from Hugging Face transformers.

For each project model (loaded from its GGUF, dequantized to f32, by transformers' own
code), the last-token state at each hook point of a few blocks on one chat prompt:
- resid_pre(L)  = hidden_states[L]              (the stream entering block L)
- attn_out(L)   = what the attention branch adds: the output of `self_attn` (llama,
                  qwen2), of `post_attention_layernorm` (gemma3, which norms it)
- mlp_out(L)    = what the MLP branch adds: the output of `mlp` (llama, qwen2), of
                  `post_feedforward_layernorm` (gemma3)
- resid_post(L) = hidden_states[L + 1]          (blocks below the last: no final norm)

Heavy (torch); run by hand, never in CI:

    python3 -m venv /opt/refenv && /opt/refenv/bin/pip install torch transformers gguf accelerate
    /opt/refenv/bin/python scripts/reference/make_hook_fixtures.py [MODEL_ID ...]

Output: crates/lcross-model/tests/fixtures/hooks/<model-id>.json
"""
import json
import os
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

MODELS = ["smollm2-135m-instruct", "gemma3-270m", "qwen2.5-coder-0.5b-instruct",
          "qwen2.5-coder-1.5b-instruct"]
PROMPT = "Explain in one sentence why the sky is blue."


def model_dir():
    env = os.environ.get("LCROSS_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "lcross" / "models"


def main(argv):
    wanted = argv[1:] or MODELS
    out_dir = Path(__file__).resolve().parents[2] / "crates/lcross-model/tests/fixtures/hooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    for mid in wanted:
        d, fname = model_dir(), f"{mid}.gguf"
        print(f"== {mid}", flush=True)
        tok = AutoTokenizer.from_pretrained(d, gguf_file=fname)
        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=fname, dtype=torch.float32)
        model.eval()
        n = model.config.num_hidden_layers
        layers = sorted({0, n // 2, n - 2})
        if tok.chat_template is not None:
            text = tok.apply_chat_template([{"role": "user", "content": PROMPT}], tokenize=False,
                                           add_generation_prompt=True)
            ids = tok(text, add_special_tokens=False)["input_ids"]
        else:
            text = f"{PROMPT}\n\n"
            ids = tok(text)["input_ids"]
        seen = {}

        def keep(name):
            def hook(_module, _inputs, output):
                out = output[0] if isinstance(output, tuple) else output
                seen[name] = out[0, -1].detach().clone()
            return hook

        handles = []
        for layer in layers:
            block = model.model.layers[layer]
            gemma = hasattr(block, "post_feedforward_layernorm")
            attn = block.post_attention_layernorm if gemma else block.self_attn
            mlp = block.post_feedforward_layernorm if gemma else block.mlp
            handles.append(attn.register_forward_hook(keep(("attn_out", layer))))
            handles.append(mlp.register_forward_hook(keep(("mlp_out", layer))))
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_hidden_states=True)
        for h in handles:
            h.remove()
        points = []
        for layer in layers:
            values = {
                "resid_pre": out.hidden_states[layer][0, -1],
                "attn_out": seen[("attn_out", layer)],
                "mlp_out": seen[("mlp_out", layer)],
                "resid_post": out.hidden_states[layer + 1][0, -1],
            }
            for point, v in values.items():
                points.append({"layer": layer, "point": point,
                               "values": [float(f"{float(x):.7g}") for x in v]})
        fixture = {
            "model": mid,
            "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, f32",
            "text": text,
            "ids": ids,
            "points": points,
        }
        (out_dir / f"{mid}.json").write_text(json.dumps(fixture))
        del model


if __name__ == "__main__":
    main(sys.argv)
