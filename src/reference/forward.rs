//! The whole Jamba forward on the CPU, in f32: the executable specification the GPU model is held to.
//!
//! Each step cites the line of JAMBA.md ("The network", "Attention layer", "Mamba layer", "FFN") it computes.
//! The recurrent state (conv and SSM state of Mamba layers, K and V of attention layers) lives in an explicit
//! [`State`] that carries across calls, so one-shot prefill, chunked prefill and token-by-token decode agree.

use super::attention::attention;
use super::conv1d::causal_conv1d_silu;
use super::moe::route;
use super::ops::{add_assign, argmax, embed, matmul, rms_norm, silu_mul};
use super::params::{AttentionParams, FfnParams, MambaParams, MixerParams, MlpParams, ModelParams};
use super::ssm::selective_scan;
use crate::config::{JambaConfig, Mixer};
use crate::error::{Error, Result};
use crate::weights::Checkpoint;

/// The CPU reference model: a config and its weights in f32.
pub struct ReferenceModel {
    cfg: JambaConfig,
    params: ModelParams,
}

/// What a sequence has seen so far. Memory: attention layers grow with the context, Mamba layers do not.
#[derive(Clone, Debug)]
pub struct State {
    /// Tokens consumed so far: the position of the next token.
    pub position: usize,
    pub layers: Vec<LayerState>,
}

#[derive(Clone, Debug)]
pub enum LayerState {
    Attention(KvCache),
    Mamba(MambaState),
}

#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub k: Vec<f32>, // [position, n_kv_heads * head_dim]
    pub v: Vec<f32>, // [position, n_kv_heads * head_dim]
}

#[derive(Clone, Debug)]
pub struct MambaState {
    pub conv: Vec<f32>, // [d_conv - 1, d_inner], the last pre-conv inputs, oldest first
    pub ssm: Vec<f32>,  // [d_inner, d_state]
}

/// A forward pass with its intermediate values, laid out like transformers' outputs (batch dimension dropped).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub logits: Vec<f32>, // [T, V]
    /// `output_hidden_states`: `[0]` the embeddings, `[i]` the output of layer i-1 for i < NL, `[NL]` the output of
    /// the last layer after final_layernorm. NL + 1 entries of [T, H].
    pub hidden_states: Vec<Vec<f32>>,
    /// The raw output of every decoder layer: NL entries of [T, H].
    pub layer_outputs: Vec<Vec<f32>>,
    /// Router logits before softmax, MoE layers in order: entries of [T, E].
    pub router_logits: Vec<Vec<f32>>,
}

/// The result of greedy decoding.
#[derive(Clone, Debug, Default)]
pub struct Generation {
    /// The new ids (the stop id included when one ended generation).
    pub ids: Vec<u32>,
    /// The logits each new id was chosen from: [ids.len(), V].
    pub step_logits: Vec<f32>,
}

impl ReferenceModel {
    /// Loads (and upcasts to f32) every weight the config implies; errors name the tensor at fault.
    pub fn new(cfg: &JambaConfig, checkpoint: &Checkpoint) -> Result<Self> {
        cfg.validate()?;
        Ok(ReferenceModel { cfg: cfg.clone(), params: ModelParams::load(cfg, checkpoint)? })
    }

    pub fn config(&self) -> &JambaConfig {
        &self.cfg
    }

    pub fn params(&self) -> &ModelParams {
        &self.params
    }

    /// The state of an empty sequence: zero conv and SSM states, empty KV caches.
    pub fn new_state(&self) -> State {
        let (i, n, k) = (self.cfg.d_inner(), self.cfg.mamba_d_state, self.cfg.mamba_d_conv);
        let layers = self
            .cfg
            .layers()
            .iter()
            .map(|kind| match kind.mixer {
                Mixer::Attention => LayerState::Attention(KvCache::default()),
                Mixer::Mamba => LayerState::Mamba(MambaState { conv: vec![0.0; (k - 1) * i], ssm: vec![0.0; i * n] }),
            })
            .collect();
        State { position: 0, layers }
    }

    /// Feeds `ids` after what `state` has seen; returns the logits of every new position: [T, V].
    pub fn forward(&self, state: &mut State, ids: &[u32]) -> Result<Vec<f32>> {
        self.run(state, ids, None)
    }

    /// Like [`forward`](Self::forward), also returning hidden states, layer outputs and router logits.
    pub fn forward_traced(&self, state: &mut State, ids: &[u32]) -> Result<Trace> {
        let mut trace = Trace::default();
        trace.logits = self.run(state, ids, Some(&mut trace))?;
        Ok(trace)
    }

    /// Prefills `prompt`, then picks the argmax token and feeds it back, `max_new` times or until a `stop` id.
    pub fn greedy(&self, state: &mut State, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Generation> {
        let v = self.cfg.vocab_size;
        let mut generation = Generation::default();
        let mut logits = self.forward(state, prompt)?; // [T, V]
        while generation.ids.len() < max_new {
            let last = &logits[logits.len() - v..]; // [V]
            let next = argmax(last, v)[0];
            generation.step_logits.extend_from_slice(last);
            generation.ids.push(next);
            if stop.contains(&next) || generation.ids.len() == max_new {
                break;
            }
            logits = self.forward(state, &[next])?;
        }
        Ok(generation)
    }

    /// JAMBA.md, "The network".
    fn run(&self, state: &mut State, ids: &[u32], trace: Option<&mut Trace>) -> Result<Vec<f32>> {
        self.check_input(state, ids)?;
        let (cfg, p) = (&self.cfg, &self.params);
        let (t, h, eps) = (ids.len(), cfg.hidden_size, cfg.rms_norm_eps);

        // x = embed_tokens[ids]
        let mut x = embed(&p.embed_tokens, h, ids); // [T, H]
        let embeddings = trace.is_some().then(|| x.clone());
        let mut layer_outputs = Vec::new();
        let mut router_logits = Vec::new();

        for (layer, layer_state) in p.layers.iter().zip(&mut state.layers) {
            // x = x + mixer_i(rms_norm(x, input_layernorm_i))
            let normed = rms_norm(&x, &layer.input_norm, eps); // [T, H]
            let mixed = match (&layer.mixer, layer_state) {
                (MixerParams::Attention(w), LayerState::Attention(cache)) => self.attention_mixer(w, cache, &normed, t),
                (MixerParams::Mamba(w), LayerState::Mamba(s)) => self.mamba_mixer(w, s, &normed, t),
                _ => return Err(Error::Input("the state's layer kinds do not match the model".to_string())),
            }; // [T, H]
            add_assign(&mut x, &mixed);

            // x = x + ffn_i(rms_norm(x, pre_ff_layernorm_i))
            let normed = rms_norm(&x, &layer.pre_ff_norm, eps); // [T, H]
            let ffn_out = match &layer.ffn {
                FfnParams::Dense(mlp) => mlp_forward(mlp, &normed, t, h, cfg.intermediate_size),
                FfnParams::Moe { router, experts } => {
                    let logits = matmul(&normed, router, t, cfg.num_experts, h); // [T, E]
                    let out = self.moe_ffn(experts, &normed, &logits, t);
                    router_logits.push(logits);
                    out
                }
            }; // [T, H]
            add_assign(&mut x, &ffn_out);
            if trace.is_some() {
                layer_outputs.push(x.clone());
            }
        }

        // logits = rms_norm(x, final_layernorm) @ lm_head.T
        let x_final = rms_norm(&x, &p.final_norm, eps); // [T, H]
        let lm_head = p.lm_head.as_ref().unwrap_or(&p.embed_tokens); // [V, H]
        let logits = matmul(&x_final, lm_head, t, cfg.vocab_size, h); // [T, V]
        state.position += t;

        if let Some(trace) = trace {
            trace.hidden_states.extend(embeddings);
            trace.hidden_states.extend(layer_outputs.iter().take(cfg.num_hidden_layers - 1).cloned());
            trace.hidden_states.push(x_final);
            trace.layer_outputs = layer_outputs;
            trace.router_logits = router_logits;
        }
        Ok(logits)
    }

    /// JAMBA.md, "Attention layer": causal GQA over the cache, no positional encoding.
    fn attention_mixer(&self, w: &AttentionParams, cache: &mut KvCache, x: &[f32], t: usize) -> Vec<f32> {
        let cfg = &self.cfg;
        let (h, head_dim) = (cfg.hidden_size, cfg.head_dim());
        let (n_heads, n_kv_heads) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let (q_dim, kv_dim) = (n_heads * head_dim, n_kv_heads * head_dim);
        // q = x Wq^T, k = x Wk^T, v = x Wv^T; k and v join the cache
        let q = matmul(x, &w.q_proj, t, q_dim, h); // [T, n_heads * head_dim]
        cache.k.extend(matmul(x, &w.k_proj, t, kv_dim, h)); // [kv_len, n_kv_heads * head_dim]
        cache.v.extend(matmul(x, &w.v_proj, t, kv_dim, h)); // [kv_len, n_kv_heads * head_dim]
        let kv_len = cache.k.len() / kv_dim;
        // causal softmax(q k^T / sqrt(head_dim)) v
        let o = attention(&q, &cache.k, &cache.v, t, kv_len, n_heads, n_kv_heads, head_dim); // [T, q_dim]
        // then o_proj
        matmul(&o, &w.o_proj, t, h, q_dim) // [T, H]
    }

    /// JAMBA.md, "Mamba layer".
    fn mamba_mixer(&self, w: &MambaParams, s: &mut MambaState, x: &[f32], t: usize) -> Vec<f32> {
        let cfg = &self.cfg;
        let (h, i, eps) = (cfg.hidden_size, cfg.d_inner(), cfg.rms_norm_eps);
        let (n, k, r) = (cfg.mamba_d_state, cfg.mamba_d_conv, cfg.dt_rank());

        // [xs | z] = x in_proj^T
        let mut xz = matmul(x, &w.in_proj, t, 2 * i, h); // [T, 2I]
        add_row_bias(&mut xz, w.in_proj_bias.as_deref());
        let [xs, z] = split_columns(&xz, [i, i]); // [T, I] each
        // xs = silu(causal_depthwise_conv1d(xs))
        let xs = causal_conv1d_silu(&xs, &mut s.conv, &w.conv_weight, &w.conv_bias, t, i, k); // [T, I]
        // [dt | B | C] = xs x_proj^T
        let dbc = matmul(&xs, &w.x_proj, t, r + 2 * n, i); // [T, R + 2N]
        let [dt, b, c] = split_columns(&dbc, [r, n, n]); // [T, R], [T, N], [T, N]
        // dt = rms_norm(dt, dt_layernorm); B = rms_norm(B, b_layernorm); C = rms_norm(C, c_layernorm)
        let dt = rms_norm(&dt, &w.dt_norm, eps);
        let b = rms_norm(&b, &w.b_norm, eps);
        let c = rms_norm(&c, &w.c_norm, eps);
        // delta = softplus(dt dt_proj.weight^T + dt_proj.bias): the matmul here, bias and softplus in the scan
        let dt = matmul(&dt, &w.dt_proj, t, i, r); // [T, I]
        // h = exp(delta A) h + delta B xs;  y = h C + D xs;  y * silu(z)
        let y = selective_scan(&xs, &dt, &w.dt_bias, &w.a_log, &b, &c, &w.d, &z, &mut s.ssm, t, i, n); // [T, I]
        // out = (y * silu(z)) out_proj^T
        let mut out = matmul(&y, &w.out_proj, t, h, i); // [T, H]
        add_row_bias(&mut out, w.out_proj_bias.as_deref());
        out
    }

    /// JAMBA.md, "FFN", MoE: out = sum over the top-k experts e of p[e] * expert_e(x), p not renormalised.
    fn moe_ffn(&self, experts: &[MlpParams], x: &[f32], router_logits: &[f32], t: usize) -> Vec<f32> {
        let (h, f) = (self.cfg.hidden_size, self.cfg.intermediate_size);
        let top_k = self.cfg.num_experts_per_tok;
        let (chosen, weights) = route(router_logits, self.cfg.num_experts, top_k); // [T, k], [T, k]
        let mut out = vec![0.0f32; t * h]; // [T, H]
        for (e, expert) in experts.iter().enumerate() {
            // The tokens routed to expert e, with their routing weights.
            let routed: Vec<(usize, f32)> = (0..t * top_k)
                .filter(|&slot| chosen[slot] as usize == e)
                .map(|slot| (slot / top_k, weights[slot]))
                .collect();
            if routed.is_empty() {
                continue;
            }
            let xs: Vec<f32> = routed.iter().flat_map(|&(tok, _)| &x[tok * h..(tok + 1) * h]).copied().collect();
            let ys = mlp_forward(expert, &xs, routed.len(), h, f); // [routed, H]
            for (&(tok, p), y) in routed.iter().zip(ys.chunks_exact(h)) {
                out[tok * h..(tok + 1) * h].iter_mut().zip(y).for_each(|(o, y)| *o += p * y);
            }
        }
        out
    }

    fn check_input(&self, state: &State, ids: &[u32]) -> Result<()> {
        if ids.is_empty() {
            return Err(Error::Input("no token ids: at least one is needed".to_string()));
        }
        let vocab = self.cfg.vocab_size;
        if let Some((at, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
            return Err(Error::Input(format!("token id {id} (at index {at}) is not below vocab_size {vocab}")));
        }
        let kinds_match = self.cfg.layers().iter().zip(&state.layers).all(|(kind, layer)| {
            matches!(
                (kind.mixer, layer),
                (Mixer::Attention, LayerState::Attention(_)) | (Mixer::Mamba, LayerState::Mamba(_))
            )
        });
        // Checked before anything runs, so a foreign state is never left half-updated.
        if state.layers.len() != self.cfg.num_hidden_layers || !kinds_match {
            return Err(Error::Input(format!(
                "the state has {} layers, the model {}: it belongs to another model",
                state.layers.len(),
                self.cfg.num_hidden_layers
            )));
        }
        Ok(())
    }
}

/// JAMBA.md, "FFN", dense: down(silu(gate(x)) * up(x)). x: [T, H] -> [T, H].
fn mlp_forward(w: &MlpParams, x: &[f32], t: usize, h: usize, f: usize) -> Vec<f32> {
    let gate = matmul(x, &w.gate_proj, t, f, h); // [T, F]
    let up = matmul(x, &w.up_proj, t, f, h); // [T, F]
    matmul(&silu_mul(&gate, &up), &w.down_proj, t, h, f) // [T, H]
}

/// x[row] += bias for every row, when there is a bias.
fn add_row_bias(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        x.chunks_exact_mut(bias.len()).for_each(|row| add_assign(row, bias));
    }
}

/// Splits the columns of a row-major [T, sum(widths)] matrix into one [T, width] matrix per width.
fn split_columns<const P: usize>(x: &[f32], widths: [usize; P]) -> [Vec<f32>; P] {
    let total: usize = widths.iter().sum();
    let rows = x.len() / total;
    let mut offset = 0;
    widths.map(|width| {
        let part = x.chunks_exact(total).flat_map(|row| &row[offset..offset + width]).copied();
        let part: Vec<f32> = part.collect();
        debug_assert_eq!(part.len(), rows * width);
        offset += width;
        part
    })
}
