"""Fit a map on activations you captured yourself with transformers (or any other
library): lcross takes any arrays (numpy, torch tensors) and gives numpy back.
Run: python examples/own_activations.py [SOURCE TARGET SOURCE_LAYER TARGET_LAYER]
(Hugging Face ids or directories; needs torch and transformers)."""

import sys

import numpy as np

import lcross

try:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
except ImportError:
    print("this example needs torch and transformers (pip install torch transformers)", file=sys.stderr)
    sys.exit(0)

texts = [f"Sentence number {i} is about {topic}." for i, topic in enumerate(["rain", "cats", "trains", "bread", "music", "stars"] * 4)]


def last_token_states(model_id: str, layer: int) -> "torch.Tensor":
    """The residual stream after block `layer` at the last token of each text."""
    tok = AutoTokenizer.from_pretrained(model_id)
    model = AutoModelForCausalLM.from_pretrained(model_id, torch_dtype=torch.float32)
    rows = []
    with torch.no_grad():
        for t in texts:
            out = model(**tok(t, return_tensors="pt"), output_hidden_states=True)
            rows.append(out.hidden_states[layer + 1][0, -1])
    return torch.stack(rows)


args = sys.argv[1:] or ["HuggingFaceTB/SmolLM2-135M-Instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "12", "9"]
X = last_token_states(args[0], int(args[2]))
Y = last_token_states(args[1], int(args[3]))
T = lcross.fit_map(X, Y, estimator="ridge")  # torch tensors in, no conversion needed
print(T, T.diagnostics)
print("one row through T:", np.round(T.apply(X[0].numpy())[:5], 3))
