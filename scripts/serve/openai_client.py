"""Check `lcross serve` with the official `openai` Python client.

Run by scripts/serve/openai_client.sh against a server it starts with one registered
vector named `v`. Exits non-zero on the first mismatch.
"""
import sys

from openai import OpenAI

base, model = sys.argv[1], sys.argv[2]
client = OpenAI(base_url=base, api_key="unused")
messages = [{"role": "user", "content": "Describe the weather tomorrow."}]

models = [m.id for m in client.models.list()]
assert models == [model], models

plain = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=24)
text = plain.choices[0].message.content
assert text and plain.usage.completion_tokens > 0, plain
print("plain:", repr(text))

steered = client.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=24,
    extra_body={"steering": [{"vector": "v", "beta": 8}]})
stext = steered.choices[0].message.content
print("steered:", repr(stext))
assert stext != text, "steering through extra_body changed nothing"
assert steered.model_extra["lcross"]["steering"][0]["beta"] == 8.0, steered.model_extra

chunks = list(client.chat.completions.create(
    model=model, messages=messages, temperature=0, max_tokens=24, stream=True,
    stream_options={"include_usage": True}, extra_body={"steering": [{"vector": "v", "beta": 8}]}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == stext, (streamed, stext)
assert chunks[-1].usage.completion_tokens == steered.usage.completion_tokens, chunks[-1]
print("streamed == steered")

lp = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=4, logprobs=True, top_logprobs=3)
content = lp.choices[0].logprobs.content
assert len(content) >= 1 and len(content[0].top_logprobs) == 3, content
print("logprobs:", [(t.token, round(t.logprob, 3)) for t in content])

legacy = client.completions.create(model=model, prompt="The capital of France is", temperature=0, max_tokens=4)
print("completion:", repr(legacy.choices[0].text))

try:
    client.chat.completions.create(model=model, messages=messages, extra_body={"steering": [{"vector": "nope", "beta": 1}]})
    raise AssertionError("an unknown vector was accepted")
except Exception as e:  # openai.BadRequestError
    assert getattr(e, "status_code", None) == 400, e
    print("unknown vector -> 400:", e.body["message"] if hasattr(e, "body") and e.body else e)
print("OK: the openai client works with lcross serve")
