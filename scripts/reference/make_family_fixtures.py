#!/usr/bin/env python3
"""Tiny random-weight checkpoints of the families added after the first three (issue 30),
with transformers' numbers to test lcross against.

Writes, under crates/lcross-model/tests/fixtures/hf/:
  tiny-qwen3/    f32, q/k norms (plain weights), head_dim 32 != hidden/heads, no biases
  tiny-mistral/  f32, sliding window of 5 on every layer (the prompt is longer)
  tiny-gemma2/   f32, sliding (window 5) and global layers alternating, soft-capped attention
                 scores and final logits (caps small enough to matter), sandwich norms,
                 query_pre_attn_scalar != head_dim, (1+w) norms
  tiny-phi3/     f32, fused qkv and gate_up projections, longrope scaling (short factors
                 within original_max_position_embeddings, attention factor from the
                 max / original ratio), sliding window of 7 on every layer
  tiny-olmo2/    f32, post-norms only, q/k norms over the whole projection, saved in
                 shards with model.safetensors.index.json
each with config.json (transformers 5 spelling), tokenizer files and reference.json: the
prompt's ids (longer than any window), last-token hidden states after every layer,
the last position's top-5 logits, and 16 greedy tokens, computed by transformers in f32.
Run by hand (needs torch, transformers, tokenizers):

    /opt/refenv/bin/python scripts/reference/make_family_fixtures.py
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import (Gemma2Config, Gemma2ForCausalLM, MistralConfig, MistralForCausalLM, Olmo2Config, Olmo2ForCausalLM,
                          Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM)

sys.path.insert(0, str(Path(__file__).parent))
from make_hf_fixtures import CHAT_TEMPLATE, OUT, make_tokenizer  # noqa: E402

PROMPT = ("Steering vectors move hidden states toward a concept, and a linear map between two models "
          "can carry a direction from one to the other, layer by layer.")


def save(name, model, tok, layers, max_shard_size=None):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(d)
    if max_shard_size:
        model.save_pretrained(d, safe_serialization=True, max_shard_size=max_shard_size)
    else:
        model.save_pretrained(d, safe_serialization=True)
    ref_model = type(model).from_pretrained(d, dtype=torch.float32).eval()
    ids = fast(PROMPT)["input_ids"]
    # resid_post of every block from hooks on the blocks (output_hidden_states' last entry
    # has the final norm applied)
    captured = {}
    for l in range(layers):
        def keep(module, args, output, l=l):
            captured[l] = (output[0] if isinstance(output, tuple) else output)[0, -1].clone()
        ref_model.model.layers[l].register_forward_hook(keep)
    with torch.no_grad():
        out = ref_model(torch.tensor([ids]), output_hidden_states=True)
        for l in range(layers - 1):
            assert torch.equal(captured[l], out.hidden_states[l + 1][0, -1]), "the hooks read what output_hidden_states gives"
        after = dict(captured)
        gen = ref_model.generate(torch.tensor([ids]), max_new_tokens=16, do_sample=False, min_new_tokens=16,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    logits = out.logits[0, -1]
    top = torch.topk(logits, 5)
    ref = {
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, f32",
        "text": PROMPT,
        "ids": ids,
        "hidden_last": {str(l): [round(float(x), 6) for x in after[l]] for l in range(layers)},
        "top5_ids": top.indices.tolist(),
        "top5_logits": [round(float(x), 5) for x in top.values],
        "greedy": gen[0, len(ids):].tolist(),
    }
    (d / "reference.json").write_text(json.dumps(ref, indent=1))
    print(name, len(ids), "prompt tokens,", sum(p.stat().st_size for p in d.iterdir()) // 1024, "KiB")


def randomize_norms(model):
    with torch.no_grad():  # norm weights away from 1 so a missed norm shows
        for n, p in model.named_parameters():
            if "norm" in n:
                p.normal_(1.0, 0.3)


def main():
    torch.manual_seed(2026)  # the same seed and order as when the fixtures were made
    tok = make_tokenizer()
    v = tok.get_vocab_size()
    qwen3 = Qwen3ForCausalLM(Qwen3Config(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True))
    randomize_norms(qwen3)
    save("tiny-qwen3", qwen3, tok, 3)
    mistral = MistralForCausalLM(MistralConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=5, tie_word_embeddings=False))
    randomize_norms(mistral)
    save("tiny-mistral", mistral, tok, 3)
    gemma2 = Gemma2ForCausalLM(Gemma2Config(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=24,
        max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=5,
        attn_logit_softcapping=1.5, final_logit_softcapping=3.0, hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True))
    with torch.no_grad():  # gemma norms are (1 + w): w away from 0
        for n, p in gemma2.named_parameters():
            if "norm" in n:
                p.normal_(0.0, 0.3)
            elif "q_proj" in n or "k_proj" in n:  # scores of a few units, so the cap of 1.5 bends them
                p.normal_(0.0, 0.3)
            elif "embed_tokens" in n:  # logits of several units, so the final cap of 3 bends them
                p.normal_(0.0, 0.15)
    save("tiny-gemma2", gemma2, tok, 4)
    half = 64 // 4 // 2
    phi3 = Phi3ForCausalLM(Phi3Config(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        original_max_position_embeddings=128, rms_norm_eps=1e-5, sliding_window=7,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "short_factor": [round(1.0 + 0.25 * i, 2) for i in range(half)],
                         "long_factor": [round(2.0 + 0.5 * i, 2) for i in range(half)]},
        tie_word_embeddings=False, pad_token_id=0, bos_token_id=1, eos_token_id=2))
    randomize_norms(phi3)
    save("tiny-phi3", phi3, tok, 3)
    olmo2 = Olmo2ForCausalLM(Olmo2Config(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=500000.0, tie_word_embeddings=False, pad_token_id=0))
    randomize_norms(olmo2)
    save("tiny-olmo2", olmo2, tok, 3, max_shard_size="100KB")


if __name__ == "__main__":
    main()
