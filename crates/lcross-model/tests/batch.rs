//! The batched runtime equals one forward per row: mixed lengths, mixed steering, rows
//! with different KV-cache lengths, rows that stop early and rows that join between
//! decode steps, on the four real models and the tiny Hugging Face checkpoints.

mod common;

use common::{fixtures, load_known, rel_l2};
use lcross_model::{
    BatchGenerator, BatchRow, CapturePositions, FinishReason, GenerateOptions, GenerationRequest, Hooks, KvCache, LoadOptions, Logits, Model, Positions,
    Sampling, Tensor,
};

/// relative L2 bound between a batched row and the same row run alone: float
/// summation order only (measured ~1e-7).
const TOL: f64 = 1e-4;

fn vector(model: &Model, seed: u32) -> Tensor {
    let h = model.config().hidden_size;
    let v: Vec<f32> = (0..h).map(|i| (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 500.0 - 1.0).collect();
    model.vector_tensor(&v).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn prompts(model: &Model) -> Vec<Vec<u32>> {
    ["Name three colours.", "What is the boiling point of water at sea level, in Celsius?", "Hi", "Write one sentence about the moon and the tides."]
        .iter()
        .map(|t| model.prompt(t, true, None).unwrap().ids)
        .collect()
}

/// Hooks of four rows: none, one vector everywhere, two vectors at two layers with
/// other positions, a capture-only row. Captures at two layers in every row.
fn mixed_hooks(model: &Model) -> Vec<Hooks> {
    let n = model.config().num_layers;
    let (a, b) = (n / 3, (2 * n) / 3);
    // A scale that moves the states clearly (vectors have entries in [-1, 1]).
    let scale = 4.0;
    let caps = |h: Hooks| h.with_capture(a, CapturePositions::All).with_capture(b, CapturePositions::Last);
    vec![
        caps(Hooks::none()),
        caps(Hooks::none().with_intervention(a, vector(model, 1), scale, Positions::All)),
        caps(Hooks::none().with_intervention(a, vector(model, 2), -scale, Positions::PromptLast).with_intervention(
            b,
            vector(model, 3),
            scale,
            Positions::From(2),
        )),
        caps(Hooks::none().with_intervention(a, vector(model, 1), scale / 2.0, Positions::All).with_intervention(
            a,
            vector(model, 4),
            scale / 2.0,
            Positions::All,
        )),
    ]
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    let rel = rel_l2(got, want);
    assert!(rel <= TOL, "{what}: relative L2 {rel:.2e} > {TOL:e}");
}

/// No cache: rows of different lengths with their own hooks against single passes.
fn batch_equals_single(model: &Model) {
    let ps = prompts(model);
    let hooks = mixed_hooks(model);
    let rows: Vec<BatchRow> = ps.iter().zip(&hooks).map(|(p, h)| BatchRow { tokens: p, hooks: h }).collect();
    let batched = model.forward_batch(&rows, None, Logits::All).unwrap();
    let mut moved = 0.0f64;
    for (i, (p, h)) in ps.iter().zip(&hooks).enumerate() {
        let single = model.forward(p, None, h, Logits::All).unwrap();
        let plain = model.forward(p, None, &Hooks::none(), Logits::All).unwrap();
        let (got, want) = (flat(batched[i].logits.as_ref().unwrap()), flat(single.logits.as_ref().unwrap()));
        assert_eq!(got.len(), want.len(), "{} row {i}: logits shape", model.id());
        assert_close(&format!("{} row {i} logits", model.id()), &got, &want);
        moved = moved.max(rel_l2(&want, &flat(plain.logits.as_ref().unwrap())));
        for (layer, t) in &single.captures {
            assert_eq!(batched[i].captures[layer].dims(), t.dims(), "{} row {i} layer {layer}: capture shape", model.id());
            assert_close(&format!("{} row {i} capture {layer}", model.id()), &flat(&batched[i].captures[layer]), &flat(t));
        }
    }
    assert!(moved > 1e-3, "{}: steering did not change the logits ({moved:e}); the test would not see a mix-up of rows", model.id());
}

/// Rows continue caches of different lengths with different numbers of tokens.
fn cached_batch_equals_single(model: &Model) {
    let ps = prompts(model);
    let v = vector(model, 5);
    let layer = model.config().num_layers / 2;
    let hooks: Vec<Hooks> = ps
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut h = if i % 2 == 0 { Hooks::none() } else { Hooks::none().with_intervention(layer, v.clone(), 4.0, Positions::Generated) };
            h.prompt_len = Some(p.len());
            h
        })
        .collect();
    let continuations: Vec<Vec<u32>> = vec![vec![ps[0][1]], ps[1][2..5].to_vec(), ps[2][..2].to_vec(), ps[3][3..9].to_vec()];
    let mut cache = KvCache::with_rows(model.config().num_layers, ps.len());
    let rows: Vec<BatchRow> = ps.iter().zip(&hooks).map(|(p, h)| BatchRow { tokens: p, hooks: h }).collect();
    model.forward_batch(&rows, Some(&mut cache), Logits::Last).unwrap();
    let rows: Vec<BatchRow> = continuations.iter().zip(&hooks).map(|(c, h)| BatchRow { tokens: c, hooks: h }).collect();
    let second = model.forward_batch(&rows, Some(&mut cache), Logits::All).unwrap();
    let third_tokens: Vec<[u32; 1]> = ps.iter().map(|p| [p[0]]).collect();
    let rows: Vec<BatchRow> = third_tokens.iter().zip(&hooks).map(|(c, h)| BatchRow { tokens: c, hooks: h }).collect();
    let third = model.forward_batch(&rows, Some(&mut cache), Logits::Last).unwrap();
    assert_eq!(cache.row_lens(), ps.iter().zip(&continuations).map(|(p, c)| p.len() + c.len() + 1).collect::<Vec<_>>());
    for i in 0..ps.len() {
        let mut single = model.new_cache();
        model.forward(&ps[i], Some(&mut single), &hooks[i], Logits::Last).unwrap();
        let s2 = model.forward(&continuations[i], Some(&mut single), &hooks[i], Logits::All).unwrap();
        let s3 = model.forward(&third_tokens[i], Some(&mut single), &hooks[i], Logits::Last).unwrap();
        assert_close(&format!("{} row {i} second pass", model.id()), &flat(second[i].logits.as_ref().unwrap()), &flat(s2.logits.as_ref().unwrap()));
        assert_close(&format!("{} row {i} third pass", model.id()), &flat(third[i].logits.as_ref().unwrap()), &flat(s3.logits.as_ref().unwrap()));
    }
}

/// Greedy generation of steered rows that stop at different times equals each row
/// generated alone, and rows that join between steps do too.
fn generation_equals_single(model: &Model) {
    let ps = prompts(model);
    let hooks = mixed_hooks(model);
    let requests: Vec<GenerationRequest> = ps
        .iter()
        .zip(&hooks)
        .enumerate()
        .map(|(i, (p, h))| GenerationRequest {
            prompt: p.clone(),
            hooks: Hooks { captures: vec![], ..h.clone() },
            options: GenerateOptions { max_tokens: [12, 3, 9, 1][i], sampling: Sampling::Greedy, stop_tokens: model.stop_tokens().to_vec() },
        })
        .collect();
    let alone: Vec<Vec<u32>> = requests.iter().map(|r| model.generate(&r.prompt, &r.options, &r.hooks, |_| Ok(())).unwrap()).collect();
    let batched = model.generate_batch(&requests, 8, |_, _| Ok(())).unwrap();
    assert_eq!(batched, alone, "{}: batched greedy generation", model.id());
    // Two rows in flight at most: the others queue and join as rows finish.
    let narrow = model.generate_batch(&requests, 2, |_, _| Ok(())).unwrap();
    assert_eq!(narrow, alone, "{}: generation with rows joining later", model.id());

    // Rows submitted while others are decoding.
    let mut g = BatchGenerator::new(model, 8);
    let mut out = vec![Vec::new(); requests.len()];
    let mut ids = Vec::new();
    ids.push(g.submit(requests[0].clone()).unwrap());
    ids.push(g.submit(requests[2].clone()).unwrap());
    let mut steps = 0;
    let mut finished = 0;
    while !g.is_idle() {
        steps += 1;
        if steps == 3 {
            ids.push(g.submit(requests[1].clone()).unwrap());
            ids.push(g.submit(requests[3].clone()).unwrap());
        }
        for ev in g.step().unwrap() {
            let k = [0, 2, 1, 3][ids.iter().position(|&id| id == ev.id).unwrap()];
            out[k].extend(ev.token);
            if ev.finished.is_some() {
                finished += 1;
            }
        }
    }
    assert_eq!(finished, requests.len());
    assert_eq!(out, alone, "{}: rows joining between decode steps", model.id());
}

/// A decode batch wide enough for the CPU's small-batch product kernel (8..=32 rows,
/// skinny_gemm.rs; one row decodes through candle's matmul): twelve steered rows that
/// stop at different times give each row's greedy tokens alone. Rows that finish on
/// their first token sit between others in the prefill order (shortest prompt first):
/// they must leave the KV cache without moving another row's cache onto a third row
/// (a bug until the eleventh session).
fn wide_generation_equals_single(model: &Model) {
    let ps = prompts(model);
    let hooks = mixed_hooks(model);
    let requests: Vec<GenerationRequest> = (0..12)
        .map(|i| GenerationRequest {
            prompt: ps[i % 4].clone(),
            hooks: Hooks { captures: vec![], ..hooks[(i / 4 + i) % 4].clone() },
            options: GenerateOptions {
                max_tokens: [4, 1, 6, 2, 1, 5, 3, 1, 6, 2, 4, 7][i],
                sampling: Sampling::Greedy,
                stop_tokens: model.stop_tokens().to_vec(),
            },
        })
        .collect();
    let alone: Vec<Vec<u32>> = requests.iter().map(|r| model.generate(&r.prompt, &r.options, &r.hooks, |_| Ok(())).unwrap()).collect();
    let batched = model.generate_batch(&requests, 12, |_, _| Ok(())).unwrap();
    assert_eq!(batched, alone, "{}: greedy generation of 12 rows in one batch", model.id());
}

/// Layers below a split run once and are forked into conditions.
fn forked_state_equals_full_pass(model: &Model) {
    let ps = prompts(model);
    let split = model.config().num_layers / 2;
    let v = vector(model, 9);
    let conditions: Vec<Hooks> = [0.0, 4.0, -4.0].iter().map(|&b| Hooks::none().with_intervention(split, v.clone(), b, Positions::All)).collect();
    let decoder = model.decoder();
    let refs: Vec<&[u32]> = ps.iter().map(|p| p.as_slice()).collect();
    let mut state = decoder.begin(&refs).unwrap();
    let none = Hooks::none();
    decoder.run_layers(&mut state, &vec![&none; ps.len()], split).unwrap();
    let fork_rows: Vec<usize> = (0..ps.len()).flat_map(|i| std::iter::repeat_n(i, conditions.len())).collect();
    let mut forked = state.fork(&fork_rows).unwrap();
    let hooks: Vec<&Hooks> = (0..ps.len()).flat_map(|_| conditions.iter()).collect();
    decoder.run_layers(&mut forked, &hooks, model.config().num_layers).unwrap();
    let logits = decoder.last_logits(&forked).unwrap();
    for (r, (&i, h)) in fork_rows.iter().zip(&hooks).enumerate() {
        let want = model.forward(&ps[i], None, h, Logits::Last).unwrap();
        assert_close(&format!("{} forked row {r}", model.id()), &flat(&logits.get(r).unwrap()), &flat(want.logits.as_ref().unwrap()));
    }
}

fn check(model: &Model) {
    batch_equals_single(model);
    cached_batch_equals_single(model);
    generation_equals_single(model);
    wide_generation_equals_single(model);
    forked_state_equals_full_pass(model);
}

#[test]
fn batched_runtime_smollm2() {
    let Some(model) = load_known("smollm2-135m-instruct") else { return };
    check(&model);
}

#[test]
fn batched_runtime_gemma3() {
    let Some(model) = load_known("gemma3-270m") else { return };
    check(&model);
}

#[test]
fn batched_runtime_qwen05b() {
    let Some(model) = load_known("qwen2.5-coder-0.5b-instruct") else { return };
    check(&model);
}

#[test]
fn batched_runtime_qwen15b() {
    let Some(model) = load_known("qwen2.5-coder-1.5b-instruct") else { return };
    check(&model);
}

#[test]
fn batched_runtime_tiny_hf_checkpoints() {
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gemma3"] {
        let dir = fixtures().join("hf").join(name);
        let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
        check(&model);
    }
}

#[test]
fn gemma3_sliding_window_is_bounded_in_long_batched_decoding() {
    // tiny-gemma3 has a window of 4: decode well past it with rows of different lengths.
    let dir = fixtures().join("hf").join("tiny-gemma3");
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let requests: Vec<GenerationRequest> = [vec![1u32, 5, 9], vec![2u32, 7, 3, 8, 4, 6, 10, 11]]
        .into_iter()
        .map(|prompt| GenerationRequest {
            prompt,
            hooks: Hooks::none(),
            options: GenerateOptions { max_tokens: 20, sampling: Sampling::Greedy, stop_tokens: vec![] },
        })
        .collect();
    let alone: Vec<Vec<u32>> = requests.iter().map(|r| model.generate(&r.prompt, &r.options, &r.hooks, |_| Ok(())).unwrap()).collect();
    let batched = model.generate_batch(&requests, 4, |_, _| Ok(())).unwrap();
    assert_eq!(batched, alone);
    assert!(alone.iter().all(|a| a.len() == 20));
}

#[test]
fn cache_rows_fork_join_and_leave() {
    let dir = fixtures().join("hf").join("tiny-qwen2");
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let none = Hooks::none();
    let (a, b) = (vec![3u32, 4, 5, 6], vec![7u32, 8]);
    let mut cache = KvCache::with_rows(model.config().num_layers, 2);
    model.forward_batch(&[BatchRow { tokens: &a, hooks: &none }, BatchRow { tokens: &b, hooks: &none }], Some(&mut cache), Logits::Last).unwrap();
    // Fork row 0 twice and row 1 once, drop the middle copy, then continue all rows.
    let mut forked = cache.select_rows(&[0, 1, 0]).unwrap();
    assert_eq!(forked.row_lens(), &[4, 2, 4]);
    forked.swap_remove_row(0).unwrap();
    assert_eq!(forked.row_lens(), &[4, 2]);
    let mut joined = KvCache::with_rows(model.config().num_layers, 0);
    joined.extend_rows(&forked).unwrap();
    joined.extend_rows(&cache).unwrap();
    assert_eq!(joined.row_lens(), &[4, 2, 4, 2]);
    let next = [[9u32], [10], [11], [12]];
    let rows: Vec<BatchRow> = next.iter().map(|t| BatchRow { tokens: t, hooks: &none }).collect();
    let got = model.forward_batch(&rows, Some(&mut joined), Logits::Last).unwrap();
    for (i, (prefix, t)) in [(&a, 9u32), (&b, 10), (&a, 11), (&b, 12)].into_iter().enumerate() {
        let mut ids = prefix.clone();
        ids.push(t);
        let want = model.forward(&ids, None, &none, Logits::Last).unwrap();
        assert_close(&format!("row {i}"), &flat(got[i].logits.as_ref().unwrap()), &flat(want.logits.as_ref().unwrap()));
    }
    // Cancelling a row frees it at once.
    let mut g = BatchGenerator::new(&model, 4);
    let opts = GenerateOptions { max_tokens: 50, sampling: Sampling::Greedy, stop_tokens: vec![] };
    let id = g.submit(GenerationRequest { prompt: a.clone(), hooks: Hooks::none(), options: opts.clone() }).unwrap();
    g.step().unwrap();
    assert_eq!(g.active(), 1);
    assert_eq!(g.cancel(id).unwrap().unwrap().finished, Some(FinishReason::Cancelled));
    assert!(g.is_idle());
}

#[test]
fn bad_batches_are_clear_errors() {
    let dir = fixtures().join("hf").join("tiny-llama");
    let model = Model::load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
    let none = Hooks::none();
    let err = |r: lcross_model::Result<Vec<lcross_model::ForwardOutput>>| r.unwrap_err().to_string();
    assert!(err(model.forward_batch(&[], None, Logits::Last)).contains("empty batch"));
    let e = err(model.forward_batch(&[BatchRow { tokens: &[1, 2], hooks: &none }, BatchRow { tokens: &[], hooks: &none }], None, Logits::Last));
    assert!(e.contains("row 1: empty input"), "{e}");
    let mut cache = KvCache::with_rows(model.config().num_layers, 3);
    let e = err(model.forward_batch(&[BatchRow { tokens: &[1], hooks: &none }], Some(&mut cache), Logits::Last));
    assert!(e.contains("3 rows, the batch 1"), "{e}");
    let bad = Hooks::none().with_intervention(0, vector(&model, 1), f64::NAN, Positions::All);
    let e = err(model.forward_batch(&[BatchRow { tokens: &[1], hooks: &none }, BatchRow { tokens: &[1], hooks: &bad }], None, Logits::Last));
    assert!(e.contains("row 1: steering scale") && e.contains("not finite"), "{e}");
    let mut g = BatchGenerator::new(&model, 2);
    let too_long = GenerateOptions { max_tokens: model.config().max_position_embeddings, sampling: Sampling::Greedy, stop_tokens: vec![] };
    let e = g.submit(GenerationRequest { prompt: vec![1, 2], hooks: Hooks::none(), options: too_long }).unwrap_err().to_string();
    assert!(e.contains("longer than the model's context"), "{e}");
    let opts = GenerateOptions { max_tokens: 4, sampling: Sampling::Greedy, stop_tokens: vec![] };
    let e = g.submit(GenerationRequest { prompt: vec![u32::MAX], hooks: Hooks::none(), options: opts.clone() }).unwrap_err().to_string();
    assert!(e.contains("outside the vocabulary"), "{e}");
    let far = Hooks::none().with_intervention(model.config().num_layers, vector(&model, 1), 1.0, Positions::All);
    let e = g.submit(GenerationRequest { prompt: vec![1], hooks: far, options: opts }).unwrap_err().to_string();
    assert!(e.contains("out of range"), "{e}");
    assert!(g.is_idle(), "refused rows are not queued");
}
