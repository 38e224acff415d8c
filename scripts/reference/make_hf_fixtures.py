#!/usr/bin/env python3
"""Tiny random-weight Hugging Face checkpoints for testing lcross's HF-directory loader.

Writes, under crates/lcross-model/tests/fixtures/hf/:
  tiny-llama/  f32 safetensors, llama3 rope scaling, untied lm_head
  tiny-qwen2/  bf16 safetensors, qkv bias, tied embeddings, chat template
  tiny-gemma3/ f32 safetensors, q/k norms, sandwich norms, sliding window, (1+w) norms
each with config.json, tokenizer.json, tokenizer_config.json and reference.json
(token ids, last-position logits, a hidden state, greedy continuation) computed by
transformers in f32. The tokenizer is a 384-token byte-level BPE trained here on text
written for this script. Run by hand (needs torch, transformers, tokenizers):

    /opt/refenv/bin/python scripts/reference/make_hf_fixtures.py
"""
import json
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, trainers
from transformers import (Gemma3TextConfig, Gemma3ForCausalLM, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM)

OUT = Path(__file__).resolve().parents[2] / "crates/lcross-model/tests/fixtures/hf"

CORPUS = [
    "Steering vectors move a model's hidden states toward a concept.",
    "A linear map between two models can carry a direction from one to the other.",
    "The quick brown fox jumps over the lazy dog, twice, at 10:45 on a Tuesday.",
    "def add(a, b):\n    return a + b\n",
    "Residual streams are added to after every block of the decoder.",
    "Small models are fast; large models know more. Both have layers and heads.",
] * 20

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def save(name, model, tok, dtype, chat_template=None, bos=None):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", bos_token=bos,
                                   pad_token="<|endoftext|>")
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(d)
    model.to(dtype).save_pretrained(d, safe_serialization=True)
    # reference in f32 from the saved (possibly bf16-rounded) weights
    ref_model = type(model).from_pretrained(d, dtype=torch.float32).eval()
    text = "Steering vectors move hidden states."
    ids = fast(text)["input_ids"]
    with torch.no_grad():
        out = ref_model(torch.tensor([ids]), output_hidden_states=True)
        gen = ref_model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                 attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    ref = {
        "generator": f"transformers {transformers.__version__}, torch {torch.__version__}, f32",
        "text": text, "ids": ids,
        "logits_last": [round(float(x), 6) for x in out.logits[0, -1]],
        "hidden_layer": 1,
        "hidden_last": [round(float(x), 6) for x in out.hidden_states[2][0, -1]],
        "greedy": gen[0, len(ids):].tolist(),
    }
    (d / "reference.json").write_text(json.dumps(ref, indent=1))
    print(name, sum(p.stat().st_size for p in d.iterdir()) // 1024, "KiB")


def main():
    torch.manual_seed(1234)
    tok = make_tokenizer()
    v = tok.get_vocab_size()
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64}))
    save("tiny-llama", llama, tok, torch.float32)
    qwen = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True))
    save("tiny-qwen2", qwen, tok, torch.bfloat16, CHAT_TEMPLATE)
    gemma = Gemma3ForCausalLM(Gemma3TextConfig(
        vocab_size=v, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=256,
        sliding_window=4, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        query_pre_attn_scalar=32, rms_norm_eps=1e-6))
    with torch.no_grad():  # random norm weights so the (1 + w) form is exercised
        for n, p in gemma.named_parameters():
            if "norm" in n:
                p.normal_(0.0, 0.3)
    save("tiny-gemma3", gemma, tok, torch.float32, bos="<|endoftext|>")


if __name__ == "__main__":
    main()
