//! The reference model's weights, upcast to f32 once at load, in structs named after the math.
//! Every tensor is fetched with its expected shape, so a wrong checkpoint fails here with the tensor's name.

use crate::config::{Ffn, JambaConfig, Mixer};
use crate::error::Result;
use crate::weights::{Checkpoint, QuantFormat};

/// Every weight of the model. `Linear` weights are PyTorch's `[out, in]`.
pub struct ModelParams {
    pub embed_tokens: Vec<f32>, // [V, H]
    pub final_norm: Vec<f32>,   // [H]
    /// None when tie_word_embeddings: the head is `embed_tokens`.
    pub lm_head: Option<Vec<f32>>, // [V, H]
    pub layers: Vec<LayerParams>,
}

pub struct LayerParams {
    pub input_norm: Vec<f32>,  // [H]
    pub pre_ff_norm: Vec<f32>, // [H]
    pub mixer: MixerParams,
    pub ffn: FfnParams,
}

// One per layer, so the size difference between the variants does not matter.
#[allow(clippy::large_enum_variant)]
pub enum MixerParams {
    Attention(AttentionParams),
    Mamba(MambaParams),
}

pub struct AttentionParams {
    pub q_proj: Vec<f32>, // [n_heads * head_dim, H]
    pub k_proj: Vec<f32>, // [n_kv_heads * head_dim, H]
    pub v_proj: Vec<f32>, // [n_kv_heads * head_dim, H]
    pub o_proj: Vec<f32>, // [H, n_heads * head_dim]
}

pub struct MambaParams {
    pub in_proj: Vec<f32>,               // [2 * d_inner, H]
    pub in_proj_bias: Option<Vec<f32>>,  // [2 * d_inner], only with mamba_proj_bias
    pub conv_weight: Vec<f32>,           // [d_inner, d_conv] (HF [d_inner, 1, d_conv])
    pub conv_bias: Vec<f32>,             // [d_inner], zeros without mamba_conv_bias
    pub x_proj: Vec<f32>,                // [dt_rank + 2 * d_state, d_inner]
    pub dt_norm: Vec<f32>,               // [dt_rank]
    pub b_norm: Vec<f32>,                // [d_state]
    pub c_norm: Vec<f32>,                // [d_state]
    pub dt_proj: Vec<f32>,               // [d_inner, dt_rank]
    pub dt_bias: Vec<f32>,               // [d_inner]
    pub a_log: Vec<f32>,                 // [d_inner, d_state]
    pub d: Vec<f32>,                     // [d_inner]
    pub out_proj: Vec<f32>,              // [H, d_inner]
    pub out_proj_bias: Option<Vec<f32>>, // [H], only with mamba_proj_bias
}

pub enum FfnParams {
    Dense(MlpParams),
    Moe { router: Vec<f32> /* [E, H] */, experts: Vec<MlpParams> },
}

/// A SwiGLU MLP: down(silu(gate x) * up x).
pub struct MlpParams {
    pub gate_proj: Vec<f32>, // [F, H]
    pub up_proj: Vec<f32>,   // [F, H]
    pub down_proj: Vec<f32>, // [H, F]
}

/// Fetches `{prefix}.{name}` as f32, checked against its expected shape; a weight stored quantized
/// (config.json's `quantization`) is dequantized.
struct Loader<'c> {
    checkpoint: &'c Checkpoint,
    format: Option<QuantFormat>,
    prefix: String,
}

impl<'c> Loader<'c> {
    fn at(&self, sub: &str) -> Loader<'c> {
        let prefix = if self.prefix.is_empty() { sub.to_string() } else { format!("{}.{sub}", self.prefix) };
        Loader { checkpoint: self.checkpoint, format: self.format, prefix }
    }

    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let name = format!("{}.{name}", self.prefix);
        if let Some(q) = self.checkpoint.quantized(&name, self.format, shape)? {
            return Ok(q.dequantize());
        }
        Ok(self.checkpoint.tensor_shaped(&name, shape)?.to_f32())
    }

    fn get_if(&self, present: bool, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        present.then(|| self.get(name, shape)).transpose()
    }
}

impl ModelParams {
    pub fn load(cfg: &JambaConfig, checkpoint: &Checkpoint) -> Result<Self> {
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let root = Loader { checkpoint, format: cfg.quantization.map(|q| q.format), prefix: String::new() };
        let model = root.at("model");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| LayerParams::load(cfg, &model.at(&format!("layers.{i}")), i))
            .collect::<Result<_>>()?;
        Ok(ModelParams {
            embed_tokens: model.get("embed_tokens.weight", &[v, h])?,
            final_norm: model.get("final_layernorm.weight", &[h])?,
            lm_head: root.at("lm_head").get_if(!cfg.tie_word_embeddings, "weight", &[v, h])?,
            layers,
        })
    }
}

impl LayerParams {
    fn load(cfg: &JambaConfig, w: &Loader, i: usize) -> Result<Self> {
        let h = cfg.hidden_size;
        let kind = cfg.layer(i);
        let mixer = match kind.mixer {
            Mixer::Attention => MixerParams::Attention(AttentionParams::load(cfg, &w.at("self_attn"))?),
            Mixer::Mamba => MixerParams::Mamba(MambaParams::load(cfg, &w.at("mamba"))?),
        };
        let ffn = match kind.ffn {
            Ffn::Dense => FfnParams::Dense(MlpParams::load(cfg, &w.at("feed_forward"))?),
            Ffn::Moe => FfnParams::Moe {
                router: w.get("feed_forward.router.weight", &[cfg.num_experts, h])?,
                experts: (0..cfg.num_experts)
                    .map(|e| MlpParams::load(cfg, &w.at(&format!("feed_forward.experts.{e}"))))
                    .collect::<Result<_>>()?,
            },
        };
        Ok(LayerParams {
            input_norm: w.get("input_layernorm.weight", &[h])?,
            pre_ff_norm: w.get("pre_ff_layernorm.weight", &[h])?,
            mixer,
            ffn,
        })
    }
}

impl AttentionParams {
    fn load(cfg: &JambaConfig, w: &Loader) -> Result<Self> {
        let h = cfg.hidden_size;
        let q_dim = cfg.num_attention_heads * cfg.head_dim();
        let kv_dim = cfg.num_key_value_heads * cfg.head_dim();
        Ok(AttentionParams {
            q_proj: w.get("q_proj.weight", &[q_dim, h])?,
            k_proj: w.get("k_proj.weight", &[kv_dim, h])?,
            v_proj: w.get("v_proj.weight", &[kv_dim, h])?,
            o_proj: w.get("o_proj.weight", &[h, q_dim])?,
        })
    }
}

impl MambaParams {
    fn load(cfg: &JambaConfig, w: &Loader) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.d_inner());
        let (n, k, r) = (cfg.mamba_d_state, cfg.mamba_d_conv, cfg.dt_rank());
        let conv_bias = w.get_if(cfg.mamba_conv_bias, "conv1d.bias", &[i])?.unwrap_or_else(|| vec![0.0; i]);
        Ok(MambaParams {
            in_proj: w.get("in_proj.weight", &[2 * i, h])?,
            in_proj_bias: w.get_if(cfg.mamba_proj_bias, "in_proj.bias", &[2 * i])?,
            conv_weight: w.get("conv1d.weight", &[i, 1, k])?,
            conv_bias,
            x_proj: w.get("x_proj.weight", &[r + 2 * n, i])?,
            dt_norm: w.get("dt_layernorm.weight", &[r])?,
            b_norm: w.get("b_layernorm.weight", &[n])?,
            c_norm: w.get("c_layernorm.weight", &[n])?,
            dt_proj: w.get("dt_proj.weight", &[i, r])?,
            dt_bias: w.get("dt_proj.bias", &[i])?,
            a_log: w.get("A_log", &[i, n])?,
            d: w.get("D", &[i])?,
            out_proj: w.get("out_proj.weight", &[h, i])?,
            out_proj_bias: w.get_if(cfg.mamba_proj_bias, "out_proj.bias", &[h])?,
        })
    }
}

impl MlpParams {
    fn load(cfg: &JambaConfig, w: &Loader) -> Result<Self> {
        let (h, f) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(MlpParams {
            gate_proj: w.get("gate_proj.weight", &[f, h])?,
            up_proj: w.get("up_proj.weight", &[f, h])?,
            down_proj: w.get("down_proj.weight", &[h, f])?,
        })
    }
}
