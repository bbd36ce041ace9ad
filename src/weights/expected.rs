//! Every tensor a config implies, with its shape: the checklist `Checkpoint::validate` runs through.
//! Names and shapes follow transformers' `modeling_jamba.py` (PyTorch `Linear` weights are `[out, in]`).

use crate::config::{Ffn, JambaConfig, Mixer};

/// `(name, shape)` of every tensor the config implies, in layer order.
pub fn expected_tensors(cfg: &JambaConfig) -> Vec<(String, Vec<usize>)> {
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    let mut out = vec![
        ("model.embed_tokens.weight".to_string(), vec![v, h]),
        ("model.final_layernorm.weight".to_string(), vec![h]),
    ];
    if !cfg.tie_word_embeddings {
        out.push(("lm_head.weight".to_string(), vec![v, h]));
    }
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.pre_ff_layernorm.weight"), vec![h]));
        let kind = cfg.layer(i);
        match kind.mixer {
            Mixer::Attention => out.extend(attention_tensors(cfg, &format!("{p}.self_attn"))),
            Mixer::Mamba => out.extend(mamba_tensors(cfg, &format!("{p}.mamba"))),
        }
        match kind.ffn {
            Ffn::Dense => out.extend(mlp_tensors(cfg, &format!("{p}.feed_forward"))),
            Ffn::Moe => {
                out.push((format!("{p}.feed_forward.router.weight"), vec![cfg.num_experts, h]));
                for e in 0..cfg.num_experts {
                    out.extend(mlp_tensors(cfg, &format!("{p}.feed_forward.experts.{e}")));
                }
            }
        }
    }
    out
}

fn attention_tensors(cfg: &JambaConfig, p: &str) -> Vec<(String, Vec<usize>)> {
    let h = cfg.hidden_size;
    let q_dim = cfg.num_attention_heads * cfg.head_dim();
    let kv_dim = cfg.num_key_value_heads * cfg.head_dim();
    vec![
        (format!("{p}.q_proj.weight"), vec![q_dim, h]),
        (format!("{p}.k_proj.weight"), vec![kv_dim, h]),
        (format!("{p}.v_proj.weight"), vec![kv_dim, h]),
        (format!("{p}.o_proj.weight"), vec![h, q_dim]),
    ]
}

fn mamba_tensors(cfg: &JambaConfig, p: &str) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (cfg.hidden_size, cfg.d_inner());
    let (n, k, r) = (cfg.mamba_d_state, cfg.mamba_d_conv, cfg.dt_rank());
    let mut out = vec![
        (format!("{p}.in_proj.weight"), vec![2 * i, h]),
        (format!("{p}.conv1d.weight"), vec![i, 1, k]),
        (format!("{p}.x_proj.weight"), vec![r + 2 * n, i]),
        (format!("{p}.dt_proj.weight"), vec![i, r]),
        (format!("{p}.dt_proj.bias"), vec![i]),
        (format!("{p}.A_log"), vec![i, n]),
        (format!("{p}.D"), vec![i]),
        (format!("{p}.out_proj.weight"), vec![h, i]),
        (format!("{p}.dt_layernorm.weight"), vec![r]),
        (format!("{p}.b_layernorm.weight"), vec![n]),
        (format!("{p}.c_layernorm.weight"), vec![n]),
    ];
    if cfg.mamba_conv_bias {
        out.push((format!("{p}.conv1d.bias"), vec![i]));
    }
    if cfg.mamba_proj_bias {
        out.push((format!("{p}.in_proj.bias"), vec![2 * i]));
        out.push((format!("{p}.out_proj.bias"), vec![h]));
    }
    out
}

fn mlp_tensors(cfg: &JambaConfig, p: &str) -> Vec<(String, Vec<usize>)> {
    let (h, f) = (cfg.hidden_size, cfg.intermediate_size);
    vec![
        (format!("{p}.gate_proj.weight"), vec![f, h]),
        (format!("{p}.up_proj.weight"), vec![f, h]),
        (format!("{p}.down_proj.weight"), vec![h, f]),
    ]
}
