//! The attention of a decode step (one new token per row) as one CPU kernel.
//!
//! Written by hand because candle has no fused attention on the CPU: its generic path
//! (batched matmul, scale, mask, softmax, batched matmul) makes one tiny gemm call per
//! (row, K/V head) for the scores and again for the values, one after the other on one
//! core, plus a mask and three intermediate tensors per layer and step. Here every
//! (row, K/V head) is one task on the thread pool: the `group` query heads that share the
//! K/V head read only the row's visible keys straight from the KV cache's buffer.
//! The arithmetic is the generic path's (scaled dot products, max-subtracted softmax,
//! probability-weighted sum of values), summed in another order. Other devices and
//! dtypes keep the generic path.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Attention of one query per row: `q` `(rows, kv_heads, group, head_dim)` (the query
/// heads grouped by the K/V head they read), `k` and `v` `(rows, kv_heads, keys,
/// head_dim)` with any strides but contiguous head vectors (views of the KV cache), and
/// `visible[i]`: the range of key slots row `i` sees. Returns `(rows, kv_heads, group,
/// head_dim)`, or None where the kernel does not apply (not the CPU, not f32), for the
/// caller to take the generic path.
pub(crate) fn attend(q: &Tensor, k: &Tensor, v: &Tensor, visible: &[(usize, usize)], scale: f64) -> candle_core::Result<Option<Tensor>> {
    if !q.device().is_cpu() || q.dtype() != DType::F32 || k.dtype() != DType::F32 || v.dtype() != DType::F32 {
        return Ok(None);
    }
    let op = DecodeAttention { visible: visible.to_vec(), scale: scale as f32 };
    Ok(Some(q.contiguous()?.apply_op3_no_bwd(k, v, &op)?))
}

struct DecodeAttention {
    visible: Vec<(usize, usize)>,
    scale: f32,
}

/// Where one `(rows, kv_heads, keys, head_dim)` operand's head vectors are.
struct Strided<'a> {
    data: &'a [f32],
    start: usize,
    row: usize,
    head: usize,
    key: usize,
    head_dim: usize,
}

impl<'a> Strided<'a> {
    fn new(storage: &'a CpuStorage, layout: &Layout, name: &str) -> candle_core::Result<Self> {
        let CpuStorage::F32(data) = storage else { candle_core::bail!("decode attention: {name} is not f32") };
        let (_, _, _, head_dim) = layout.shape().dims4()?;
        let s = layout.stride();
        if s[3] != 1 && head_dim > 1 {
            candle_core::bail!("decode attention: the head vectors of {name} are not contiguous");
        }
        Ok(Self { data, start: layout.start_offset(), row: s[0], head: s[1], key: s[2], head_dim })
    }
    #[inline(always)]
    fn vector(&self, row: usize, head: usize, key: usize) -> &'a [f32] {
        let at = self.start + row * self.row + head * self.head + key * self.key;
        &self.data[at..at + self.head_dim]
    }
}

/// Dot product with eight partial sums (vectorizes without reassociation flags).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Everything one (row, K/V head) task reads.
struct Tasks<'a> {
    q: &'a [f32],
    k: Strided<'a>,
    v: Strided<'a>,
    visible: &'a [(usize, usize)],
    scale: f32,
    kv_heads: usize,
    group: usize,
    head_dim: usize,
}

impl Tasks<'_> {
    /// Task `task` (row `task / kv_heads`, K/V head `task % kv_heads`) into `out`, its
    /// `group` query heads' outputs: with AVX2 and FMA where the CPU has them (the
    /// same loops compiled for 8-wide registers; the sums keep their order, so both
    /// builds give the same bits), else for the baseline of the target.
    fn run(&self, task: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features the function is compiled for.
            return unsafe { self.run_avx2(task, out) };
        }
        self.run_portable(task, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn run_avx2(&self, task: usize, out: &mut [f32]) {
        self.run_portable(task, out)
    }

    #[inline(always)]
    fn run_portable(&self, task: usize, out: &mut [f32]) {
        let (row, head) = (task / self.kv_heads, task % self.kv_heads);
        let (lo, hi) = self.visible[row];
        let head_dim = self.head_dim;
        let mut weights = vec![0f32; hi - lo];
        for (g, out) in out.chunks_exact_mut(head_dim).enumerate() {
            let query = &self.q[(task * self.group + g) * head_dim..][..head_dim];
            let mut max = f32::NEG_INFINITY;
            for (w, key) in weights.iter_mut().zip(lo..hi) {
                *w = dot(query, self.k.vector(row, head, key)) * self.scale;
                max = max.max(*w);
            }
            let mut sum = 0f32;
            for w in weights.iter_mut() {
                *w = (*w - max).exp();
                sum += *w;
            }
            // Key after key, so the out-of-order core overlaps the keys' independent
            // work (blocking four keys or 32 lanes at a time measured slower).
            for (w, key) in weights.iter().zip(lo..hi) {
                let p = w / sum;
                for (o, x) in out.iter_mut().zip(self.v.vector(row, head, key)) {
                    *o += p * x;
                }
            }
        }
    }
}

impl CustomOp3 for DecodeAttention {
    fn name(&self) -> &'static str {
        "decode-attention"
    }

    fn cpu_fwd(&self, qs: &CpuStorage, ql: &Layout, ks: &CpuStorage, kl: &Layout, vs: &CpuStorage, vl: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, kv_heads, group, head_dim) = ql.shape().dims4()?;
        let (k_rows, k_heads, keys, k_dim) = kl.shape().dims4()?;
        if (k_rows, k_heads, k_dim) != (rows, kv_heads, head_dim) || kl.shape() != vl.shape() || self.visible.len() != rows {
            candle_core::bail!("decode attention: q {:?}, k {:?}, v {:?}, {} visible ranges", ql.shape(), kl.shape(), vl.shape(), self.visible.len());
        }
        if let Some(&(lo, hi)) = self.visible.iter().find(|&&(lo, hi)| lo >= hi || hi > keys) {
            candle_core::bail!("decode attention: visible keys {lo}..{hi} of {keys}");
        }
        let CpuStorage::F32(q) = qs else { candle_core::bail!("decode attention: q is not f32") };
        let q = match ql.contiguous_offsets() {
            Some((a, b)) => &q[a..b],
            None => candle_core::bail!("decode attention: q is not contiguous"),
        };
        let (k, v) = (Strided::new(ks, kl, "k")?, Strided::new(vs, vl, "v")?);
        let mut out = vec![0f32; rows * kv_heads * group * head_dim];
        let width = group * head_dim;
        if width == 0 {
            return Ok((CpuStorage::F32(out), ql.shape().clone()));
        }
        let tasks = Tasks { q, k, v, visible: &self.visible, scale: self.scale, kv_heads, group, head_dim };
        out.par_chunks_mut(width).enumerate().for_each(|(task, out)| tasks.run(task, out));
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, D};

    fn pattern(n: usize, seed: f32) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.731 + seed).sin() * 1.7).collect()
    }

    /// The generic path: scores by matmul, additive mask, softmax, matmul.
    fn generic(q: &Tensor, k: &Tensor, v: &Tensor, visible: &[(usize, usize)], scale: f64) -> Tensor {
        let (rows, _, group, _) = q.dims4().unwrap();
        let keys = k.dim(2).unwrap();
        let mask: Vec<f32> = visible
            .iter()
            .flat_map(|&(lo, hi)| (0..group).flat_map(move |_| (0..keys).map(move |s| if (lo..hi).contains(&s) { 0.0 } else { f32::NEG_INFINITY })))
            .collect();
        let mask = Tensor::from_vec(mask, (rows, 1, group, keys), &Device::Cpu).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap().broadcast_add(&mask).unwrap();
        candle_nn::ops::softmax(&scores, D::Minus1).unwrap().matmul(v).unwrap()
    }

    #[test]
    fn equals_the_generic_path_on_strided_cache_views_with_per_row_ranges() {
        let (rows, kv_heads, group, head_dim, capacity, keys) = (3, 2, 3, 20, 16, 11);
        let dev = Device::Cpu;
        let q = Tensor::from_vec(pattern(rows * kv_heads * group * head_dim, 0.3), (rows, kv_heads, group, head_dim), &dev).unwrap();
        // Views of a larger buffer, as the KV cache hands them out.
        let buf = |seed| Tensor::from_vec(pattern(rows * kv_heads * capacity * head_dim, seed), (rows, kv_heads, capacity, head_dim), &dev).unwrap();
        let (k, v) = (buf(1.1).narrow(2, 0, keys).unwrap(), buf(2.9).narrow(2, 0, keys).unwrap());
        // A full row, a shorter row, a sliding window.
        let visible = [(0, keys), (0, 6), (4, 9)];
        let got = attend(&q, &k, &v, &visible, 0.125).unwrap().expect("f32 on the CPU");
        let want = generic(&q, &k.contiguous().unwrap(), &v.contiguous().unwrap(), &visible, 0.125);
        let diff = (&got - &want).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        let scale = want.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(diff <= 1e-5 * scale.max(1.0), "max difference {diff}");
        // Keys outside a row's range must not matter.
        let k2 = k.contiguous().unwrap();
        let poisoned =
            k2.slice_assign(&[1..2, 0..kv_heads, 6..keys, 0..head_dim], &Tensor::full(1e4f32, (1, kv_heads, keys - 6, head_dim), &dev).unwrap()).unwrap();
        let again = attend(&q, &poisoned, &v, &visible, 0.125).unwrap().unwrap();
        assert_eq!(
            again.get(1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            got.get(1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_build_of_the_loops_gives_the_portable_builds_bits() {
        if !(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")) {
            eprintln!("SKIPPED: this CPU has no AVX2 + FMA");
            return;
        }
        // head_dim 68: eight-wide chunks plus a tail.
        let (rows, kv_heads, group, head_dim, keys) = (2, 2, 3, 68, 37);
        let q = pattern(rows * kv_heads * group * head_dim, 0.3);
        let (kd, vd) = (pattern(rows * kv_heads * keys * head_dim, 1.1), pattern(rows * kv_heads * keys * head_dim, 2.9));
        let strided = |data| Strided { data, start: 0, row: kv_heads * keys * head_dim, head: keys * head_dim, key: head_dim, head_dim };
        let visible = [(0, keys), (5, 30)];
        let tasks = Tasks { q: &q, k: strided(&kd), v: strided(&vd), visible: &visible, scale: 0.125, kv_heads, group, head_dim };
        for task in 0..rows * kv_heads {
            let (mut wide, mut portable) = (vec![0f32; group * head_dim], vec![0f32; group * head_dim]);
            // SAFETY: checked above that the CPU has AVX2 and FMA.
            unsafe { tasks.run_avx2(task, &mut wide) };
            tasks.run_portable(task, &mut portable);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&wide), bits(&portable), "task {task}");
            assert!(wide.iter().any(|&x| x != 0.0));
        }
    }

    #[test]
    fn bad_ranges_and_other_dtypes_are_refused_or_passed_on() {
        let dev = Device::Cpu;
        let q = Tensor::zeros((1, 1, 2, 4), DType::F32, &dev).unwrap();
        let k = Tensor::zeros((1, 1, 3, 4), DType::F32, &dev).unwrap();
        assert!(attend(&q, &k, &k, &[(0, 4)], 1.0).is_err(), "past the keys");
        assert!(attend(&q, &k, &k, &[(2, 2)], 1.0).is_err(), "empty");
        assert!(attend(&q, &k, &k, &[(0, 3), (0, 3)], 1.0).is_err(), "ranges for two rows");
        let half = q.to_dtype(DType::F16).unwrap();
        assert!(attend(&half, &k.to_dtype(DType::F16).unwrap(), &k.to_dtype(DType::F16).unwrap(), &[(0, 3)], 1.0).unwrap().is_none());
    }
}
