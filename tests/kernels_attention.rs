//! Tier 2: attention with a KV cache on whatever adapter is present, against `reference::attention::attention`:
//! prefill chunks of several lengths (first chunk and chunks after a past), split-k decode over caches of several
//! lengths, a prompt prefilled in chunks and then decoded through one replayed plan, GQA and MQA, head sizes that are
//! not multiples of anything (24), and bad shapes as typed errors.
//!
//! q, k and v are uniform in [-1, 1) and always pass through one fused [T, q_dim + 2 kv_dim] qkv tensor, appended to
//! the cache from column slices as the model does. Outputs are convex mixtures of v rows (|out| < 1); the tolerance
//! is 1e-5 absolute (f32 sums in another order than the reference's; the largest seen is printed per case).

mod common;

use common::{assert_close, gpu, max_abs_diff, Rng};
use jamba_wgpu::gpu::{Context, DType, Graph, Prefill, Tensor, Tuning};
use jamba_wgpu::kernels::attention::{self, AttentionShape, DecodeScratch};
use jamba_wgpu::kernels::Cols;
use jamba_wgpu::{reference, Error};

const ATOL: f32 = 1e-5;

fn shape(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> AttentionShape {
    AttentionShape { n_heads, n_kv_heads, head_dim }
}

/// A sequence's fused projections on the host and one attention layer's caches on the device.
struct Sequence {
    shape: AttentionShape,
    /// [tokens, q_dim + 2 kv_dim]: q | k | v per token.
    qkv: Vec<f32>,
    k_cache: Tensor,
    v_cache: Tensor,
}

impl Sequence {
    fn new(ctx: &Context, shape: AttentionShape, tokens: usize, max_len: usize, seed: u64) -> Sequence {
        let qkv = Rng::new(seed).vec(tokens * Self::width(shape), 1.0);
        let k_cache = ctx.zeros("k_cache", &[max_len, shape.kv_dim()], DType::F32).unwrap();
        let v_cache = ctx.zeros("v_cache", &[max_len, shape.kv_dim()], DType::F32).unwrap();
        Sequence { shape, qkv, k_cache, v_cache }
    }

    fn width(shape: AttentionShape) -> usize {
        shape.q_dim() + 2 * shape.kv_dim()
    }

    /// Columns `offset..offset + width` of tokens `rows`.
    fn columns(&self, rows: std::ops::Range<usize>, offset: usize, width: usize) -> Vec<f32> {
        let w = Self::width(self.shape);
        rows.flat_map(|r| self.qkv[r * w + offset..][..width].to_vec()).collect()
    }

    /// Tokens `rows` uploaded as one fused qkv tensor.
    fn upload(&self, ctx: &Context, rows: std::ops::Range<usize>) -> Tensor {
        let data = self.columns(rows.clone(), 0, Self::width(self.shape));
        ctx.upload_f32("qkv", &[rows.len(), Self::width(self.shape)], &data).unwrap()
    }

    /// Column slices q, k, v of a fused qkv tensor.
    fn split<'a>(&self, qkv: &'a Tensor) -> [Cols<'a>; 3] {
        let (q_dim, kv_dim) = (self.shape.q_dim(), self.shape.kv_dim());
        [
            Cols::slice(qkv, 0, q_dim).unwrap(),
            Cols::slice(qkv, q_dim, kv_dim).unwrap(),
            Cols::slice(qkv, q_dim + kv_dim, kv_dim).unwrap(),
        ]
    }

    /// The reference output of tokens `rows` (all of the cache before them in the past).
    fn reference(&self, rows: std::ops::Range<usize>) -> Vec<f32> {
        let s = self.shape;
        let (q_dim, kv_dim) = (s.q_dim(), s.kv_dim());
        let q = self.columns(rows.clone(), 0, q_dim);
        let k = self.columns(0..rows.end, q_dim, kv_dim);
        let v = self.columns(0..rows.end, q_dim + kv_dim, kv_dim);
        reference::attention::attention(&q, &k, &v, rows.len(), rows.end, s.n_heads, s.n_kv_heads, s.head_dim)
    }

    /// Appends tokens `rows` to the cache and runs prefill over them; returns the output.
    fn prefill(&self, ctx: &Context, rows: std::ops::Range<usize>) -> Vec<f32> {
        self.prefill_with(ctx, rows, ctx.tuning())
    }

    /// `prefill` with the kernel choices of `tuning`: the CPU kernel or the tiled one (`Tuning::prefill`), the
    /// tiled kernel's loops over a head's values unrolled or not (`Tuning::head_loops_unrolled`).
    fn prefill_with(&self, ctx: &Context, rows: std::ops::Range<usize>, tuning: Tuning) -> Vec<f32> {
        let qkv = self.upload(ctx, rows.clone());
        let [q, k, v] = self.split(&qkv);
        let out = ctx.zeros("out", &[rows.len(), self.shape.q_dim()], DType::F32).unwrap();
        let mut g = Graph::new(ctx);
        g.tuning = tuning;
        attention::append_kv(&mut g, k, v, &self.k_cache, &self.v_cache, rows.start).unwrap();
        attention::prefill(&mut g, q, &self.k_cache, &self.v_cache, rows.end, self.shape, &out).unwrap();
        g.run().unwrap();
        ctx.read_f32(&out).unwrap()
    }
}

/// Checks `got` against `want` and returns the largest difference, for the report.
fn check(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_close(what, got, want, ATOL, 0.0);
    max_abs_diff(got, want).unwrap()
}

#[test]
fn attention_prefill_matches_reference() {
    let Some(ctx) = gpu() else { return };
    // (shape, past tokens already in the cache, T)
    let mut cases: Vec<(AttentionShape, usize, usize)> =
        [1, 2, 63, 64, 65, 300].iter().map(|&t| (shape(4, 2, 16), 0, t)).collect();
    cases.extend([
        (shape(4, 2, 16), 37, 65),  // a later chunk sees the whole cache
        (shape(4, 4, 8), 7, 65),    // plain multi-head
        (shape(8, 1, 24), 3, 63),   // MQA, a head size that is no power of two
        (shape(3, 1, 64), 0, 65),   // MQA, odd head count
        (shape(6, 2, 32), 20, 65),  // the default model's heads: three to a subgroup on CPU adapters
        (shape(4, 2, 128), 10, 64), // Jamba's head size
        (shape(2, 2, 256), 5, 17),  // the largest head size
    ]);
    for (i, &(s, past, t)) in cases.iter().enumerate() {
        let seq = Sequence::new(ctx, s, past + t, past + t + 3, 100 + i as u64);
        if past > 0 {
            seq.prefill(ctx, 0..past);
        }
        let want = seq.reference(past..past + t);
        let tiled = Tuning { prefill: Prefill::Tiled, ..ctx.tuning() };
        let got = seq.prefill_with(ctx, past..past + t, Tuning { head_loops_unrolled: true, ..tiled });
        let diff = check(&format!("prefill {s:?} past {past} T {t}"), &got, &want);
        eprintln!("prefill {s:?} past {past} T {t}: max |diff| {diff:e}");
        // The head loops' bound read from the parameters sums in the same order: the same bits.
        let bound = seq.prefill_with(ctx, past..past + t, Tuning { head_loops_unrolled: false, ..tiled });
        let same = got.iter().zip(&bound).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "prefill {s:?} past {past} T {t}: head loops unrolled and not differ");
        // The CPU adapters' kernel, where this adapter has the 8-wide subgroups it needs (heads of up to 64).
        if ctx.supports(Prefill::Blocked) {
            let lanes = seq.prefill_with(ctx, past..past + t, Tuning { prefill: Prefill::Blocked, ..ctx.tuning() });
            let diff = check(&format!("prefill by lanes {s:?} past {past} T {t}"), &lanes, &want);
            eprintln!("prefill by lanes {s:?} past {past} T {t}: max |diff| {diff:e}");
        }
    }
}

/// The decode split kernels this adapter runs, by name: a workgroup per split, an invocation per split, and where
/// the adapter has 8-wide subgroups a subgroup per split, its lanes keys (a Blocked tuning's).
fn decode_kinds(ctx: &Context) -> Vec<(&'static str, Tuning)> {
    let base = Tuning { prefill: Prefill::Tiled, ..ctx.tuning() };
    let mut kinds = vec![
        ("workgroups", Tuning { decode_attention_lanes: false, ..base }),
        ("invocations", Tuning { decode_attention_lanes: true, ..base }),
    ];
    if ctx.supports(Prefill::Blocked) {
        kinds.push(("keys in lanes", Tuning { decode_attention_lanes: true, prefill: Prefill::Blocked, ..base }));
    }
    kinds
}

#[test]
fn attention_decode_matches_reference() {
    let Some(ctx) = gpu() else { return };
    // (shape, kv_len, cache rows): the cache length fixes the split count (1 split per 256 rows, at most 64).
    let mut cases: Vec<(AttentionShape, usize, usize)> =
        [1, 2, 65, 300, 1000].iter().map(|&kv| (shape(4, 2, 16), kv, 1000)).collect();
    cases.extend([
        (shape(4, 2, 16), 3, 20_000),    // 64 splits, all but one empty
        (shape(4, 2, 16), 1000, 20_000), // 64 splits of 64 keys, 16 in use
        (shape(8, 1, 24), 300, 300),     // MQA, head size 24, 2 splits
        (shape(6, 2, 32), 200, 4096),    // the default model's heads, three to a subgroup in lanes
        (shape(4, 1, 128), 65, 512),     // MQA, Jamba's head size
        (shape(2, 2, 64), 257, 257),
        (shape(2, 1, 256), 130, 130),
    ]);
    for (i, &(s, kv_len, max_len)) in cases.iter().enumerate() {
        let seq = Sequence::new(ctx, s, kv_len, max_len, 200 + i as u64);
        if kv_len > 1 {
            seq.prefill(ctx, 0..kv_len - 1);
        }
        let qkv = seq.upload(ctx, kv_len - 1..kv_len);
        let [q, k, v] = seq.split(&qkv);
        let scratch = DecodeScratch::new(ctx, s, max_len).unwrap();
        for (kind, tuning) in decode_kinds(ctx) {
            let out = ctx.zeros("out", &[1, s.q_dim()], DType::F32).unwrap();
            let mut g = Graph::new(ctx);
            g.tuning = tuning;
            attention::append_kv(&mut g, k, v, &seq.k_cache, &seq.v_cache, kv_len - 1).unwrap();
            attention::decode(&mut g, q, &seq.k_cache, &seq.v_cache, kv_len, s, &scratch, &out).unwrap();
            g.run().unwrap();
            let got = ctx.read_f32(&out).unwrap();
            let splits = scratch.n_splits();
            let what = format!("decode {s:?} kv_len {kv_len} of {max_len} ({splits} splits, by {kind})");
            let diff = check(&what, &got, &seq.reference(kv_len - 1..kv_len));
            eprintln!("{what}: max |diff| {diff:e}");
        }
    }
}

/// Decodes tokens `steps` of `seq` through one plan (append at pos, attend over pos + 1 rows), replayed with new
/// parameters per token as the model does, with each decode split kernel; checks each token against the
/// reference and returns the largest diff.
fn decode_steps(ctx: &Context, seq: &Sequence, steps: std::ops::Range<usize>, max_len: usize) -> f32 {
    let each = decode_kinds(ctx).into_iter().map(|kind| decode_steps_with(ctx, seq, steps.clone(), max_len, kind));
    each.fold(0.0, f32::max)
}

fn decode_steps_with(
    ctx: &Context,
    seq: &Sequence,
    steps: std::ops::Range<usize>,
    max_len: usize,
    (kind, tuning): (&str, Tuning),
) -> f32 {
    let s = seq.shape;
    let qkv = ctx.zeros("qkv step", &[1, Sequence::width(s)], DType::F32).unwrap();
    let [q, k, v] = seq.split(&qkv);
    let scratch = DecodeScratch::new(ctx, s, max_len).unwrap();
    let out = ctx.zeros("out", &[1, s.q_dim()], DType::F32).unwrap();
    let mut g = Graph::new(ctx);
    g.tuning = tuning;
    let append = attention::append_kv(&mut g, k, v, &seq.k_cache, &seq.v_cache, steps.start).unwrap();
    let decode = attention::decode(&mut g, q, &seq.k_cache, &seq.v_cache, steps.start + 1, s, &scratch, &out).unwrap();
    let mut plan = g.build().unwrap();
    let mut worst = 0.0f32;
    for pos in steps {
        ctx.write(&qkv, bytemuck::cast_slice(&seq.columns(pos..pos + 1, 0, Sequence::width(s)))).unwrap();
        attention::set_append_pos(&mut plan, append, pos);
        decode.set_kv_len(&mut plan, pos + 1).unwrap();
        plan.run(ctx).unwrap();
        let got = ctx.read_f32(&out).unwrap();
        worst = worst.max(check(&format!("decode step at {pos} {s:?}, by {kind}"), &got, &seq.reference(pos..pos + 1)));
    }
    worst
}

#[test]
fn attention_chunked_prefill_then_decode_equals_one_shot() {
    let Some(ctx) = gpu() else { return };
    let s = shape(4, 2, 16);
    let (chunks, steps) = ([0..65, 65..66, 66..130], 130..135);
    let seq = Sequence::new(ctx, s, steps.end, 200, 300);
    let one_shot = seq.reference(0..steps.end);
    let mut worst = 0.0f32;
    for rows in chunks {
        let got = seq.prefill(ctx, rows.clone());
        let want = &one_shot[rows.start * s.q_dim()..rows.end * s.q_dim()];
        worst = worst.max(check(&format!("chunk {rows:?}"), &got, want));
    }
    worst = worst.max(decode_steps(ctx, &seq, steps, 200));
    eprintln!("chunked prefill 65 + 1 + 64 + 5 decode steps {s:?}: max |diff| {worst:e}");
}

#[test]
fn attention_decode_plan_replays_with_growing_kv_len() {
    let Some(ctx) = gpu() else { return };
    // 600 rows: 3 splits; keys per split grows from 64 to 128 at kv_len 193, inside the steps.
    for (i, s) in [shape(4, 2, 16), shape(6, 1, 24)].into_iter().enumerate() {
        let seq = Sequence::new(ctx, s, 197, 600, 400 + i as u64);
        seq.prefill(ctx, 0..188);
        let worst = decode_steps(ctx, &seq, 188..197, 600);
        eprintln!("decode plan replayed over kv_len 189..=197 {s:?}: max |diff| {worst:e}");
    }
}

#[test]
fn attention_bad_shapes_are_typed_errors() {
    let Some(ctx) = gpu() else { return };
    let s = shape(4, 2, 16);
    let seq = Sequence::new(ctx, s, 8, 8, 500);
    let qkv = seq.upload(ctx, 0..4);
    let [q, k, v] = seq.split(&qkv);
    let out = ctx.zeros("out", &[4, s.q_dim()], DType::F32).unwrap();
    let scratch = DecodeScratch::new(ctx, s, 8).unwrap();
    let mut g = Graph::new(ctx);
    let shape_error = |r: Result<(), Error>, needle: &str| {
        let e = r.expect_err(needle);
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains(needle), "{e}");
    };

    shape_error(shape(6, 4, 16).validate(), "4 kv heads do not divide 6 heads");
    shape_error(shape(4, 0, 16).validate(), "do not divide");
    shape_error(shape(4, 2, 0).validate(), "head_dim 0");
    shape_error(shape(4, 2, 300).validate(), "head_dim 300");
    shape_error(DecodeScratch::new(ctx, shape(3, 2, 8), 8).map(drop), "do not divide");
    // The cache holds 8 rows: 4 new rows at 5 overflow it, and the message names the cache.
    shape_error(
        attention::append_kv(&mut g, k, v, &seq.k_cache, &seq.v_cache, 5).map(drop),
        "cache `k_cache` of 8 rows",
    );
    shape_error(
        attention::append_kv(&mut g, q, v, &seq.k_cache, &seq.v_cache, 0).map(drop),
        "k_new `qkv` has 64 columns",
    );
    shape_error(
        attention::prefill(&mut g, q, &seq.k_cache, &seq.v_cache, 3, s, &out).map(drop),
        "4 queries over kv_len 3",
    );
    shape_error(attention::prefill(&mut g, q, &seq.k_cache, &seq.v_cache, 9, s, &out).map(drop), "cache rows 8");
    shape_error(
        attention::prefill(&mut g, k, &seq.k_cache, &seq.v_cache, 4, s, &out).map(drop),
        "q `qkv` has 32 columns",
    );
    shape_error(
        attention::prefill(&mut g, q, &seq.k_cache, &seq.v_cache, 4, shape(4, 1, 32), &out).map(drop),
        "q `qkv` has 64 columns, expected 128",
    );
    shape_error(
        attention::prefill(&mut g, q, &seq.v_cache, &seq.k_cache, 4, shape(4, 4, 16), &out).map(drop),
        "expected kv_dim 64",
    );
    let short = ctx.zeros("short", &[2, s.q_dim()], DType::F32).unwrap();
    shape_error(
        attention::prefill(&mut g, q, &seq.k_cache, &seq.v_cache, 4, s, &short).map(drop),
        "out `short` is [2, 64]",
    );
    shape_error(
        attention::decode(&mut g, q, &seq.k_cache, &seq.v_cache, 4, s, &scratch, &out).map(drop),
        "decode takes one token",
    );
    let q1 = q.rows(1).unwrap();
    shape_error(attention::decode(&mut g, q1, &seq.k_cache, &seq.v_cache, 9, s, &scratch, &out).map(drop), "kv_len 9");
    shape_error(attention::decode(&mut g, q1, &seq.k_cache, &seq.v_cache, 0, s, &scratch, &out).map(drop), "kv_len 0");
    let other = DecodeScratch::new(ctx, shape(4, 4, 16), 8).unwrap();
    shape_error(
        attention::decode(&mut g, q1, &seq.k_cache, &seq.v_cache, 4, s, &other, &out).map(drop),
        "scratch was made for",
    );

    let ops = attention::decode(&mut g, q1, &seq.k_cache, &seq.v_cache, 4, s, &scratch, &out).unwrap();
    let mut plan = g.build().unwrap();
    shape_error(ops.set_kv_len(&mut plan, 9), "kv_len 9 is not in 1..=8");
    shape_error(ops.set_kv_len(&mut plan, 0), "kv_len 0");
    ops.set_kv_len(&mut plan, 8).unwrap();
}

#[test]
fn attention_append_replayed_past_the_cache_end_writes_nothing() {
    let Some(ctx) = gpu() else { return };
    let s = shape(2, 1, 8);
    let seq = Sequence::new(ctx, s, 2, 4, 600);
    let qkv = seq.upload(ctx, 0..2);
    let [_, k, v] = seq.split(&qkv);
    let mut g = Graph::new(ctx);
    let append = attention::append_kv(&mut g, k, v, &seq.k_cache, &seq.v_cache, 0).unwrap();
    let mut plan = g.build().unwrap();
    // Rows 3 and 4 of a 4-row cache: row 3 is written, row 4 is dropped; then a position past u32.
    attention::set_append_pos(&mut plan, append, 3);
    plan.run(ctx).unwrap();
    attention::set_append_pos(&mut plan, append, usize::MAX);
    plan.run(ctx).unwrap();
    let mut want = vec![0.0; 3 * s.kv_dim()];
    want.extend(seq.columns(0..1, s.q_dim(), s.kv_dim()));
    assert_eq!(ctx.read_f32(&seq.k_cache).unwrap(), want);
}

/// A batch's decode step: sequence r's token appended at its own position of its own cache ([B, max_len, kv_dim])
/// and attended over it, the positions read from a u32 [B] buffer, the plan replayed unchanged for 3 steps. Rows past
/// each sequence's length hold large values that would dominate any softmax that read them.
#[test]
fn attention_batch_decode_matches_reference_per_row() {
    let Some(ctx) = gpu() else { return };
    // (shape, each sequence's tokens before the steps, cache rows): 1 key, a cache's last row, several splits.
    let cases: [(AttentionShape, &[usize], usize); 4] = [
        (shape(4, 2, 16), &[1, 70, 300], 320),
        (shape(4, 2, 16), &[1, 1500, 3], 2000), // 8 splits, most of them empty for two of the rows
        (shape(6, 1, 24), &[5, 1, 64, 257], 260),
        (shape(2, 2, 128), &[33, 0, 9, 12, 1, 2, 100, 7, 64], 128),
    ];
    for (n, &(s, lens, max_len)) in cases.iter().enumerate() {
        let steps = 3;
        let b = lens.len();
        let seqs: Vec<Sequence> =
            lens.iter().enumerate().map(|(r, &len)| Sequence::new(ctx, s, len + steps, 1, 700 + (10 * n + r) as u64)).collect();
        let kv_dim = s.kv_dim();
        let (mut k_host, mut v_host) = (vec![1e3f32; b * max_len * kv_dim], vec![1e3f32; b * max_len * kv_dim]);
        for (r, (seq, &len)) in seqs.iter().zip(lens).enumerate() {
            k_host[r * max_len * kv_dim..][..len * kv_dim].copy_from_slice(&seq.columns(0..len, s.q_dim(), kv_dim));
            v_host[r * max_len * kv_dim..][..len * kv_dim].copy_from_slice(&seq.columns(0..len, s.q_dim() + kv_dim, kv_dim));
        }
        let k_cache = ctx.upload_f32("batch k_cache", &[b, max_len, kv_dim], &k_host).unwrap();
        let v_cache = ctx.upload_f32("batch v_cache", &[b, max_len, kv_dim], &v_host).unwrap();
        let positions = ctx.zeros("positions", &[b], DType::U32).unwrap();
        let width = Sequence::width(s);
        let qkv = ctx.zeros("qkv step", &[b, width], DType::F32).unwrap();
        let [q, k, v] = seqs[0].split(&qkv);
        let scratch = DecodeScratch::batched(ctx, s, max_len, b).unwrap();
        let out = ctx.zeros("out", &[b, s.q_dim()], DType::F32).unwrap();
        let mut worst = 0.0f32;
        // Each split kernel's plan replays the same steps (the second rewrites the rows the first appended).
        for (kind, tuning) in decode_kinds(ctx) {
            let mut g = Graph::new(ctx);
            g.tuning = tuning;
            attention::append_kv_batch(&mut g, k, v, &k_cache, &v_cache, &positions).unwrap();
            attention::decode_batch(&mut g, q, &k_cache, &v_cache, &positions, s, &scratch, &out).unwrap();
            let plan = g.build().unwrap();
            for step in 0..steps {
                let pos: Vec<u32> = lens.iter().map(|&len| (len + step) as u32).collect();
                let rows: Vec<f32> =
                    seqs.iter().zip(&pos).flat_map(|(seq, &p)| seq.columns(p as usize..p as usize + 1, 0, width)).collect();
                ctx.write(&qkv, bytemuck::cast_slice(&rows)).unwrap();
                ctx.write(&positions, bytemuck::cast_slice(&pos)).unwrap();
                plan.run(ctx).unwrap();
                let got = ctx.read_f32(&out).unwrap();
                for (r, (seq, &p)) in seqs.iter().zip(&pos).enumerate() {
                    let what = format!("batch decode {s:?} row {r} at position {p} of {max_len}, step {step}, by {kind}");
                    let row = &got[r * s.q_dim()..][..s.q_dim()];
                    worst = worst.max(check(&what, row, &seq.reference(p as usize..p as usize + 1)));
                }
            }
        }
        eprintln!("batch decode {s:?} lengths {lens:?} + {steps} steps ({} splits): max |diff| {worst:e}", scratch.n_splits());
    }
}

#[test]
fn attention_batch_bad_shapes_are_typed_errors() {
    let Some(ctx) = gpu() else { return };
    let s = shape(4, 2, 16);
    let (b, max_len) = (3, 8);
    let z = |shape: &[usize]| ctx.zeros("t", shape, DType::F32).unwrap();
    let (k_cache, v_cache, out) = (z(&[b, max_len, s.kv_dim()]), z(&[b, max_len, s.kv_dim()]), z(&[b, s.q_dim()]));
    let qkv = z(&[b, Sequence::width(s)]);
    let seq = Sequence::new(ctx, s, 1, 1, 800);
    let [q, k, v] = seq.split(&qkv);
    let positions = ctx.zeros("positions", &[b], DType::U32).unwrap();
    let scratch = DecodeScratch::batched(ctx, s, max_len, b).unwrap();
    let mut g = Graph::new(ctx);
    attention::append_kv_batch(&mut g, k, v, &k_cache, &v_cache, &positions).unwrap();
    attention::decode_batch(&mut g, q, &k_cache, &v_cache, &positions, s, &scratch, &out).unwrap();
    let shape_error = |r: Result<(), Error>, needle: &str| {
        let e = r.expect_err(needle);
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains(needle), "{e}");
    };
    let (short_positions, float_positions) = (ctx.zeros("p2", &[b - 1], DType::U32).unwrap(), z(&[b]));
    let flat = z(&[b * max_len, s.kv_dim()]);
    shape_error(attention::append_kv_batch(&mut g, k, v, &flat, &flat, &positions).map(drop), "expected [B, max_len, 32]");
    shape_error(attention::append_kv_batch(&mut g, k.rows(2).unwrap(), v, &k_cache, &v_cache, &positions).map(drop), "3 sequences");
    shape_error(attention::append_kv_batch(&mut g, k, v, &k_cache, &v_cache, &short_positions).map(drop), "expected [3]");
    shape_error(attention::decode_batch(&mut g, q, &k_cache, &v_cache, &float_positions, s, &scratch, &out), "F32");
    let small = DecodeScratch::batched(ctx, s, max_len, b - 1).unwrap();
    shape_error(attention::decode_batch(&mut g, q, &k_cache, &v_cache, &positions, s, &small, &out), "made for 2 rows");
    shape_error(attention::decode_batch(&mut g, q, &k_cache, &v_cache, &positions, s, &scratch, &z(&[b - 1, s.q_dim()])), "expected [>= 3");
}
