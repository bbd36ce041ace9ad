//! `JambaConfig`: the model's hyperparameters, read from a Hugging Face `config.json`, and the layer schedule
//! (which layers are attention or Mamba, which FFNs are dense or mixture-of-experts) derived from it.
//!
//! Field names are transformers' (`configuration_jamba.py`). Required fields (the sizes and the schedule) are an
//! [`Error::Config`] naming the field when missing; flags that transformers defaults take the same defaults here;
//! unknown fields are ignored. Nothing about any one model's sizes is a constant in code.

use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::weights::quant::{QuantFormat, Quantization, Scope};

/// The token mixer of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mixer {
    Attention,
    Mamba,
}

/// The feed-forward block of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ffn {
    /// One SwiGLU MLP: `feed_forward.{gate,up,down}_proj`.
    Dense,
    /// A router and `num_experts` SwiGLU experts: `feed_forward.router`, `feed_forward.experts.{e}.*`.
    Moe,
}

/// What layer `i` is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerKind {
    pub mixer: Mixer,
    pub ffn: Ffn,
}

/// Jamba's hyperparameters, with transformers' field names.
#[derive(Clone, Debug, PartialEq)]
pub struct JambaConfig {
    pub vocab_size: usize,
    /// H, the model width.
    pub hidden_size: usize,
    /// Width of the dense MLP and of each expert.
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    /// Layer i is attention iff i % attn_layer_period == attn_layer_offset, else Mamba.
    pub attn_layer_period: usize,
    pub attn_layer_offset: usize,
    /// Layer i has an MoE FFN iff i % expert_layer_period == expert_layer_offset (and num_experts > 1).
    pub expert_layer_period: usize,
    pub expert_layer_offset: usize,
    /// E (`num_experts`, alias `num_local_experts`).
    pub num_experts: usize,
    /// top-k of the router.
    pub num_experts_per_tok: usize,
    /// N, the SSM state size per channel.
    pub mamba_d_state: usize,
    /// K, the causal conv1d width.
    pub mamba_d_conv: usize,
    /// d_inner = mamba_expand * hidden_size.
    pub mamba_expand: usize,
    /// R, the rank of the delta projection; "auto" in config.json resolves to ceil(H / 16).
    pub mamba_dt_rank: usize,
    pub mamba_conv_bias: bool,
    pub mamba_proj_bias: bool,
    pub rms_norm_eps: f32,
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub bos_token_id: Option<u32>,
    /// A number or a list in config.json; any of them ends generation.
    pub eos_token_id: Vec<u32>,
    pub pad_token_id: Option<u32>,
    /// The checkpoint's dtype as saved (`dtype`, or `torch_dtype` from older transformers), e.g. "bfloat16".
    pub dtype: Option<String>,
    /// The `quantization` section that `jamba-wgpu quantize` writes: the checkpoint holds `X.qweight` and
    /// `X.scales` for the weights it covers (see [`crate::weights::quant`]).
    pub quantization: Option<Quantization>,
}

impl JambaConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_str(&text)
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json_str(json: &str) -> Result<Self> {
        let value: Value =
            serde_json::from_str(json).map_err(|e| config_error("config.json", format!("not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(config_error("config.json", "expected a JSON object"));
        };
        let f = Fields(&map);
        let hidden_size = f.usize("hidden_size")?;
        let cfg = JambaConfig {
            vocab_size: f.usize("vocab_size")?,
            hidden_size,
            intermediate_size: f.usize("intermediate_size")?,
            num_hidden_layers: f.usize("num_hidden_layers")?,
            num_attention_heads: f.usize("num_attention_heads")?,
            num_key_value_heads: f.usize("num_key_value_heads")?,
            attn_layer_period: f.usize("attn_layer_period")?,
            attn_layer_offset: f.usize("attn_layer_offset")?,
            expert_layer_period: f.usize("expert_layer_period")?,
            expert_layer_offset: f.usize("expert_layer_offset")?,
            num_experts: match f.opt_usize("num_experts")? {
                Some(e) => e,
                None => f.usize("num_local_experts").map_err(|_| {
                    config_error("num_experts", "missing (neither `num_experts` nor `num_local_experts` is set)")
                })?,
            },
            num_experts_per_tok: f.usize("num_experts_per_tok")?,
            mamba_d_state: f.usize("mamba_d_state")?,
            mamba_d_conv: f.usize("mamba_d_conv")?,
            mamba_expand: f.usize("mamba_expand")?,
            mamba_dt_rank: f.dt_rank(hidden_size)?,
            // transformers' defaults for the flags below.
            mamba_conv_bias: f.opt_bool("mamba_conv_bias")?.unwrap_or(true),
            mamba_proj_bias: f.opt_bool("mamba_proj_bias")?.unwrap_or(false),
            rms_norm_eps: f.opt_f32("rms_norm_eps")?.unwrap_or(1e-6),
            tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
            max_position_embeddings: f.opt_usize("max_position_embeddings")?.unwrap_or(262_144),
            hidden_act: f.opt_string("hidden_act")?.unwrap_or_else(|| "silu".to_string()),
            bos_token_id: f.opt_token_ids("bos_token_id")?.and_then(|ids| ids.first().copied()),
            eos_token_id: f.opt_token_ids("eos_token_id")?.unwrap_or_default(),
            pad_token_id: f.opt_token_ids("pad_token_id")?.and_then(|ids| ids.first().copied()),
            dtype: match f.opt_string("dtype")? {
                Some(d) => Some(d),
                None => f.opt_string("torch_dtype")?,
            },
            quantization: quantization_section(&map)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that the values describe a model we can run; the error names the first field at fault.
    pub fn validate(&self) -> Result<()> {
        let nonzero = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("attn_layer_period", self.attn_layer_period),
            ("expert_layer_period", self.expert_layer_period),
            ("num_experts", self.num_experts),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("mamba_d_state", self.mamba_d_state),
            ("mamba_d_conv", self.mamba_d_conv),
            ("mamba_expand", self.mamba_expand),
            ("mamba_dt_rank", self.mamba_dt_rank),
        ];
        for (field, value) in nonzero {
            if value == 0 {
                return Err(config_error(field, "must be greater than 0"));
            }
        }
        let schedule = [
            ("attn_layer_offset", self.attn_layer_offset, "attn_layer_period", self.attn_layer_period),
            ("expert_layer_offset", self.expert_layer_offset, "expert_layer_period", self.expert_layer_period),
        ];
        for (field, offset, period_name, period) in schedule {
            if offset >= period {
                return Err(config_error(field, format!("{offset} must be less than {period_name} ({period})")));
            }
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 {
            return Err(config_error(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads ({})",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return Err(config_error(
                "num_attention_heads",
                format!("{} does not divide hidden_size ({})", self.num_attention_heads, self.hidden_size),
            ));
        }
        if self.num_experts_per_tok > self.num_experts {
            return Err(config_error(
                "num_experts_per_tok",
                format!("{} is more than num_experts ({})", self.num_experts_per_tok, self.num_experts),
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps > 0.0) {
            return Err(config_error("rms_norm_eps", format!("{} must be a positive number", self.rms_norm_eps)));
        }
        if self.hidden_act != "silu" {
            return Err(config_error("hidden_act", format!("`{}` is not supported (only `silu`)", self.hidden_act)));
        }
        let special = [("bos_token_id", self.bos_token_id), ("pad_token_id", self.pad_token_id)];
        let eos = self.eos_token_id.iter().map(|&id| ("eos_token_id", Some(id)));
        for (field, id) in special.into_iter().chain(eos) {
            if let Some(id) = id.filter(|&id| id as usize >= self.vocab_size) {
                return Err(config_error(field, format!("{id} is not below vocab_size ({})", self.vocab_size)));
            }
        }
        Ok(())
    }

    /// Width of one attention head: H / num_attention_heads.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// I, the Mamba inner width: mamba_expand * H.
    pub fn d_inner(&self) -> usize {
        self.mamba_expand * self.hidden_size
    }

    /// R, the rank of the delta projection (already resolved from "auto").
    pub fn dt_rank(&self) -> usize {
        self.mamba_dt_rank
    }

    /// The mixer and FFN of layer `i` (transformers: `layers_block_type`, `layers_num_experts`).
    pub fn layer(&self, i: usize) -> LayerKind {
        let mixer = if i % self.attn_layer_period == self.attn_layer_offset { Mixer::Attention } else { Mixer::Mamba };
        // transformers builds a dense MLP wherever the layer's expert count is 1, MoE slots included.
        let moe_slot = i % self.expert_layer_period == self.expert_layer_offset;
        let ffn = if moe_slot && self.num_experts > 1 { Ffn::Moe } else { Ffn::Dense };
        LayerKind { mixer, ffn }
    }

    /// The kinds of all layers, in order.
    pub fn layers(&self) -> Vec<LayerKind> {
        (0..self.num_hidden_layers).map(|i| self.layer(i)).collect()
    }
}

/// The keys of the `quantization` section.
const QUANTIZATION_KEYS: [&str; 5] = ["format", "group_size", "min", "scope", "quantized_by"];

/// Reads the `quantization` section. Anything we would misread is an error: unknown keys or formats, q4 without
/// a supported group size, q8 with q4's fields, and Hugging Face's `quantization_config` (GPTQ, AWQ, bitsandbytes...).
fn quantization_section(map: &Map<String, Value>) -> Result<Option<Quantization>> {
    if let Some(hf) = map.get("quantization_config").filter(|v| !v.is_null()) {
        let method = hf.get("quant_method").and_then(Value::as_str).unwrap_or("unknown");
        return Err(config_error(
            "quantization_config",
            format!("Hugging Face quantization (quant_method `{method}`) is not supported; quantize the unquantized checkpoint with `jamba-wgpu quantize`"),
        ));
    }
    let Some(section) = map.get("quantization").filter(|v| !v.is_null()) else { return Ok(None) };
    let Value::Object(section) = section else {
        return Err(config_error("quantization", format!("expected an object, found {section}")));
    };
    if let Some(key) = section.keys().find(|k| !QUANTIZATION_KEYS.contains(&k.as_str())) {
        return Err(config_error(&format!("quantization.{key}"), format!("unknown key (expected {QUANTIZATION_KEYS:?})")));
    }
    let f = Fields(section);
    let name = f.opt_string("format")?.ok_or_else(|| config_error("quantization.format", "missing (required)"))?;
    let group = f.opt_usize("group_size")?;
    let min = f.opt_bool("min")?;
    let field = |key: &str, e: Error| match e {
        Error::Input(message) => config_error(&format!("quantization.{key}"), message),
        other => other,
    };
    let format = match name.as_str() {
        "q8" if group.is_some() || min.is_some() => {
            return Err(config_error("quantization", "q8 has one scale per row: `group_size` and `min` do not apply"));
        }
        "q8" => QuantFormat::Q8,
        "q4" => {
            let group = group.ok_or_else(|| config_error("quantization.group_size", "missing (required for q4)"))?;
            QuantFormat::parse("q4", group, min.unwrap_or(false)).map_err(|e| field("group_size", e))?
        }
        other => return Err(config_error("quantization.format", format!("unknown format `{other}` (expected q8 or q4)"))),
    };
    let scope = match f.opt_string("scope")?.as_deref() {
        None | Some("ffn") => Scope::Ffn,
        Some("all-linear") => Scope::AllLinear,
        Some(other) => {
            return Err(config_error("quantization.scope", format!("unknown scope `{other}` (expected ffn or all-linear)")));
        }
    };
    Ok(Some(Quantization { format, scope }))
}

/// The `quantization` section for config.json, as [`JambaConfig`]'s parser reads it back.
pub fn quantization_json(q: &Quantization) -> Value {
    let mut section = serde_json::json!({ "format": q.format.name(), "scope": q.scope.name(), "quantized_by": "jamba-wgpu" });
    if let QuantFormat::Q4 { group, min } = q.format {
        section["group_size"] = group.size().into();
        section["min"] = min.into();
    }
    section
}

fn config_error(field: &str, message: impl Into<String>) -> Error {
    Error::Config { field: field.to_string(), message: message.into() }
}

/// Typed access to the fields of config.json; every error names the field.
struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// The value of `field`, with JSON `null` read as absent (transformers writes null for unset ids).
    fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field).filter(|v| !v.is_null())
    }

    fn usize(&self, field: &str) -> Result<usize> {
        self.opt_usize(field)?.ok_or_else(|| config_error(field, "missing (required)"))
    }

    fn opt_usize(&self, field: &str) -> Result<Option<usize>> {
        self.get(field).map(|v| as_usize(field, v)).transpose()
    }

    fn opt_bool(&self, field: &str) -> Result<Option<bool>> {
        self.get(field)
            .map(|v| v.as_bool().ok_or_else(|| config_error(field, format!("expected true or false, found {v}"))))
            .transpose()
    }

    fn opt_f32(&self, field: &str) -> Result<Option<f32>> {
        self.get(field)
            .map(|v| {
                v.as_f64().map(|x| x as f32).ok_or_else(|| config_error(field, format!("expected a number, found {v}")))
            })
            .transpose()
    }

    fn opt_string(&self, field: &str) -> Result<Option<String>> {
        self.get(field)
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| config_error(field, format!("expected a string, found {v}")))
            })
            .transpose()
    }

    /// A token id or a list of them.
    fn opt_token_ids(&self, field: &str) -> Result<Option<Vec<u32>>> {
        let Some(v) = self.get(field) else { return Ok(None) };
        let items = match v {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        let ids = items
            .into_iter()
            .map(|v| {
                as_usize(field, v)
                    .and_then(|id| u32::try_from(id).map_err(|_| config_error(field, format!("{id} is too large"))))
            })
            .collect::<Result<_>>()?;
        Ok(Some(ids))
    }

    /// `mamba_dt_rank`: a positive number, or "auto" (absent too) meaning ceil(hidden_size / 16).
    fn dt_rank(&self, hidden_size: usize) -> Result<usize> {
        match self.get("mamba_dt_rank") {
            None => Ok(hidden_size.div_ceil(16)),
            Some(Value::String(s)) if s == "auto" => Ok(hidden_size.div_ceil(16)),
            Some(v) => as_usize("mamba_dt_rank", v),
        }
    }
}

fn as_usize(field: &str, v: &Value) -> Result<usize> {
    v.as_u64()
        .and_then(|n| usize::try_from(n).ok())
        .ok_or_else(|| config_error(field, format!("expected a non-negative integer, found {v}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = include_str!("../tests/fixtures/tiny/config.json");

    #[test]
    fn derived_sizes_and_schedule() -> Result<()> {
        let cfg = JambaConfig::from_json_str(TINY)?;
        assert_eq!((cfg.head_dim(), cfg.d_inner(), cfg.dt_rank()), (16, 128, 8));
        let attention: Vec<usize> = (0..8).filter(|&i| cfg.layer(i).mixer == Mixer::Attention).collect();
        let moe: Vec<usize> = (0..8).filter(|&i| cfg.layer(i).ffn == Ffn::Moe).collect();
        assert_eq!((attention, moe), (vec![2, 6], vec![1, 3, 5, 7]));
        Ok(())
    }

    #[test]
    fn dt_rank_auto_and_eos_list() -> Result<()> {
        let mut v: Value = serde_json::from_str(TINY).map_err(|e| config_error("test", e.to_string()))?;
        v["mamba_dt_rank"] = "auto".into();
        v["hidden_size"] = 72.into();
        v["num_attention_heads"] = 4.into();
        v["eos_token_id"] = serde_json::json!([2, 7]);
        let cfg = JambaConfig::from_json_str(&v.to_string())?;
        assert_eq!(cfg.dt_rank(), 5); // ceil(72 / 16)
        assert_eq!(cfg.eos_token_id, vec![2, 7]);
        Ok(())
    }
}
