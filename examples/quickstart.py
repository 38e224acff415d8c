"""The L-Cross pipeline from Python: a steering vector from SmolLM2, a linear map to
Qwen2.5-Coder, the transferred vector, the A/B metric with no / self / L-Cross
modulation, and a steered answer. Run: python examples/quickstart.py"""

import lcross

src = lcross.Model("smollm2-135m-instruct")
tgt = lcross.Model("qwen2.5-coder-0.5b-instruct")
ls, lt = 12, 9  # steering layers of the two models (40% depth)

# 1. The built-in concept's vector in each model (CAA mean difference).
sv_src = lcross.extract(src, "builtin:optimism", [ls])
sv_own = lcross.extract(tgt, "builtin:optimism", [lt])

# 2. The map T between the hidden spaces, fitted on the concept's texts in both models.
T = lcross.align(src, tgt, "builtin:optimism", source_layer=ls, target_layer=lt)
print(f"T {T.shape}, train R^2 {T.diagnostics['train_r2']:.3f}")

# 3. L-Cross: the source vector moved into the target's space, sv @ T.
sv_lcross = lcross.transfer(sv_src, T)

# 4. The A/B metric on held-out questions: no, self and L-Cross modulation at beta 4.
none = lcross.eval_ab(tgt, "builtin:optimism")["rows"][0]["mean"]
own = lcross.eval_ab(tgt, "builtin:optimism", vectors=[sv_own], betas=[4])["rows"][0]["mean"]
cross = lcross.eval_ab(tgt, "builtin:optimism", vectors=[sv_lcross], betas=[4])["rows"][0]["mean"]
print(f"p(optimistic answer): none {none:.3f} | self {own:.3f} | L-Cross {cross:.3f}")

# 5. An answer, unsteered and steered.
prompt = "My flight was cancelled and I will miss the first day of my holiday. How do you see it?"
plain, steered = tgt.generate_batch([(prompt, None), (prompt, lcross.Steer(sv_lcross, 4.0))], max_tokens=48)
print("unsteered:", plain)
print("L-Cross  :", steered)
