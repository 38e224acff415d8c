#!/usr/bin/env python3
"""Reference values for lcross-model's tests, from Hugging Face transformers.

transformers loads each GGUF, dequantized to f32, with its own tokenizer builder and its
own model code: an implementation independent of ours. This script writes small JSON
fixtures (token ids, rendered chat templates, last-token hidden states, next-token argmax,
greedy continuations) that `cargo test` compares against. It is heavy (torch) and is run
by hand, never in CI:

    python3 -m venv /opt/refenv && /opt/refenv/bin/pip install torch transformers gguf accelerate
    /opt/refenv/bin/python scripts/reference/make_fixtures.py [MODEL_ID ...]

Output: crates/lcross-model/tests/fixtures/<model-id>.json
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

# Text that stresses the tokenizer: unicode, emoji, CJK, code, digits, runs of spaces,
# tabs and newlines, special tokens written in the text.
TOKENIZER_TEXTS = [
    "Hello, world!",
    "The year 2025 had 365 days; 3.14159 is pi and 1,000,000 is a million.",
    "  leading spaces,   runs   of spaces, trailing  ",
    "tabs\tand\t\ttabs\nnew\n\nlines\r\nwindows",
    "Unicode: café, naïve, Straße, Ωμέγα, Привет мир",
    "Emoji: 🙂🚀👩‍💻 and flags 🇫🇷",
    "CJK: 你好，世界。日本語のテキスト。한국어 문장.",
    "def f(x):\n    return [i**2 for i in range(x) if i % 2 == 0]  # squares\n",
    "fn main() { println!(\"{}\", 42_u64.pow(3)); }",
    "Special tokens in text: <|im_start|>user\nhi<|im_end|> <|endoftext|> <bos> <eos> <start_of_turn>",
    "I'll say it's done, they've gone, we're here, you'd know. DON'T SHOUT.",
    "",
    " ",
    "\n\n\n",
    "a" * 50,
    "1234567890 00012 9999999",
]

CHAT_PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one sentence why the sky is blue.",
]
SYSTEM = "You are a concise assistant."


def model_dir():
    env = os.environ.get("LCROSS_MODELS")
    return Path(env) if env else Path.home() / ".cache" / "lcross" / "models"


def render(tok, user, system=None, add_generation_prompt=True):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}]
    return tok.apply_chat_template(msgs, tokenize=False,
                                   add_generation_prompt=add_generation_prompt)


def plain_format(user):
    # lcross's documented format for models without a chat template.
    return f"{user}\n\n"


def main(argv):
    wanted = argv[1:] or MODELS
    out_dir = Path(__file__).resolve().parents[2] / "crates/lcross-model/tests/fixtures"
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for mid in wanted:
        d = model_dir()
        fname = f"{mid}.gguf"
        print(f"== {mid}", flush=True)
        tok = AutoTokenizer.from_pretrained(d, gguf_file=fname)
        spec = json.loads(tok.backend_tokenizer.to_str())
        spec["model"].pop("vocab", None)
        spec["model"].pop("merges", None)
        spec["added_tokens"] = spec["added_tokens"][:8]
        (Path("/tmp") / f"tokspec-{mid}.json").write_text(json.dumps(spec, indent=1))

        tokenized = []
        for t in TOKENIZER_TEXTS:
            ids = tok(t)["input_ids"]
            tokenized.append({"text": t, "ids": ids,
                              "decoded": tok.decode(ids, skip_special_tokens=False)})

        has_template = tok.chat_template is not None
        templates = []
        if has_template:
            for p in CHAT_PROMPTS[:2]:
                templates.append({"user": p, "system": None, "add_generation_prompt": True,
                                  "rendered": render(tok, p)})
                templates.append({"user": p, "system": SYSTEM, "add_generation_prompt": True,
                                  "rendered": render(tok, p, SYSTEM)})
                templates.append({"user": p, "system": None, "add_generation_prompt": False,
                                  "rendered": render(tok, p, None, False)})

        model = AutoModelForCausalLM.from_pretrained(d, gguf_file=fname, dtype=torch.float32)
        model.eval()
        n_layers = model.config.num_hidden_layers
        mid_layer = n_layers // 2
        forwards = []
        for p in CHAT_PROMPTS:
            text = render(tok, p) if has_template else plain_format(p)
            ids = tok(text, add_special_tokens=not has_template)["input_ids"] if has_template \
                else tok(text)["input_ids"]
            inp = torch.tensor([ids])
            with torch.no_grad():
                out = model(inp, output_hidden_states=True)
                logits = out.logits[0, -1]
                hs = out.hidden_states[mid_layer + 1][0, -1]
                last = out.hidden_states[n_layers][0, -1]
                gen = model.generate(inp, max_new_tokens=20, do_sample=False,
                                     attention_mask=torch.ones_like(inp))
            top5 = torch.topk(logits, 5)
            forwards.append({
                "prompt": p, "text": text, "ids": ids, "layer": mid_layer,
                "hidden": [round(float(x), 6) for x in hs],
                "last_layer_norm": float(last.norm()),
                "top5_ids": top5.indices.tolist(),
                "top5_logits": [round(float(x), 5) for x in top5.values],
                "greedy": gen[0, len(ids):].tolist(),
            })
            print(p, "->", repr(tok.decode(gen[0, len(ids):])), flush=True)
        fixture = {
            "model": mid,
            "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, f32",
            "num_layers": n_layers,
            "hidden_size": model.config.hidden_size,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "tokenize": tokenized,
            "chat_template": templates,
            "forward": forwards,
        }
        (out_dir / f"{mid}.json").write_text(json.dumps(fixture, ensure_ascii=False, indent=1))
        del model


if __name__ == "__main__":
    main(sys.argv)
