#!/usr/bin/env python3
"""GGUF files of the tiny family checkpoints, written by llama.cpp's own converter.

Converts crates/lcross-model/tests/fixtures/hf/tiny-{llama,qwen3,mistral,gemma2,phi3,olmo2} with
llama.cpp's `convert_hf_to_gguf.py` (f32, so the weights are the checkpoint's exactly) into
crates/lcross-model/tests/fixtures/gguf/, where tests/families.rs checks them against the same
transformers numbers (reference.json) as the folders. The tiny checkpoints carry a byte-level
BPE tokenizer.json that the converter's tokenizer table does not know (it identifies real
models' pre-tokenizers by a hash): the script tells it "gpt-2" (byte-level BPE, what the tiny
tokenizer is) and writes every family's vocabulary the GPT-2 way, as it does for Qwen. Nothing
else of the converter is changed: tensor names, norms (+1 for gemma2), fused tensors (phi3),
rope factors and metadata keys are llama.cpp's.

    /opt/refenv/bin/python scripts/reference/make_gguf_fixtures.py --llama-cpp PATH/TO/llama.cpp

(PATH/TO/llama.cpp: a llama.cpp source tree, e.g. vendor/llama.cpp of the llama-cpp-python
source release, as scripts/bench/shaped_7b.py unpacks it under target/peers/; the Python
needs torch, transformers, numpy, sentencepiece not required.)
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "lcross-model" / "tests" / "fixtures"
FAMILIES = ["tiny-llama", "tiny-qwen3", "tiny-mistral", "tiny-gemma2", "tiny-phi3", "tiny-olmo2"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--llama-cpp", required=True, help="llama.cpp source tree (convert_hf_to_gguf.py, gguf-py, conversion/)")
    a = ap.parse_args()
    src = Path(a.llama_cpp).resolve()
    sys.path.insert(0, str(src / "gguf-py"))
    sys.path.insert(0, str(src))
    import convert_hf_to_gguf as convert  # noqa: E402
    from conversion import base  # noqa: E402

    gpt2 = base.TextModel._set_vocab_gpt2
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
    for name in ("set_vocab", "_set_vocab_sentencepiece", "_set_vocab_llama_hf", "_set_vocab_qwen"):
        if hasattr(base.TextModel, name):
            setattr(base.TextModel, name, gpt2)
    from conversion.phi import Phi3MiniModel

    Phi3MiniModel.set_vocab = gpt2  # its own sentencepiece reader
    out = FIXTURES / "gguf"
    out.mkdir(exist_ok=True)
    for name in FAMILIES:
        target = out / f"{name}.gguf"
        sys.argv = ["convert_hf_to_gguf.py", str(FIXTURES / "hf" / name), "--outtype", "f32", "--outfile", str(target)]
        convert.main()
        print(name, target.stat().st_size // 1024, "KiB")


if __name__ == "__main__":
    main()
