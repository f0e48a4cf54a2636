"""LaCT (Large Chunk Test-Time Training) language model: config, layer, HF causal LM, with a recurrent form.

Split as fla splits a model (fla/models/<name>/): `configuration_lact` (LaCTConfig and the named
sizes LACT_TINY / LACT_760M), `modeling_lact` (the layers, LaCTForCausalLM, lact_state_at); the
pure tensor functions are `refine.models.ops.lact_ops`, with the naive reference twin of the
fast-weight op in `refine.models.ops.lact_naive`. This package re-exports every public name (so
`from refine.models.lact import ...` reads as before) and registers the config and the model with
the transformers Auto classes on import, as fla's model packages do. Checkpoints name
model_type "lact" and the class LaCTForCausalLM, neither of which moved.

Each block: x + o_proj(SWA(x') + scale * RMSNorm_head(f_W(q))) then a SwiGLU MLP, x' = RMSNorm(x). One qkv
projection feeds both branches: sliding-window attention (window W, RoPE) and the fast-weight branch, whose
q/k are rescaled per channel, passed through silu and L2-normalised per fast-weight head (then RoPE unless
ttt_nope), v through silu unless no_v_silu. Fast weights W0, W1, W2 start from learnable parameters and are updated per
chunk of `lact_chunk_size` tokens with per-token softplus learning rates, optional momentum and Muon
(refine/models/ops/lact_ops.py holds the pure functions, lact_naive.py their reference twin).

Recurrent state: `fla.models.utils.Cache`; layer i keeps everything in `cache.layers[i].state
["recurrent_state"]`, a dict of tensors with the batch first: "w0", "w1", "w2" fast weights [B, Hf, ., .]
("m0".."m2" momentum, "a0".."a2" pre-norm accumulators when used); the pending partial chunk "k", "v"
[B, C, Hf, Df], "lr" [B, C, Hf, 3] ("gate" [B, C, Hf] with momentum), zero past the fill level; the
window cache "win_k", "win_v" [B, W-1, Ha, Dh] with "win_pos" [B, W-1] (-1 = empty); "pos" [B] (real
tokens seen). The fill level is pos % C. Rows may sit at different positions; the cache's shared
`_seen_tokens` is never read. `attention_mask` ([B, T] or [B, past + T]; its last T columns are used)
marks padding: padded tokens write nothing, are not attended and do not count as positions.

Official names (a1600012888/LaCT lact_llm, config `LaCTSWIGLUConfig`, model_type "lact_swiglu"): config
fields hidden_size, num_hidden_layers, num_attn_heads, num_lact_heads, inter_multi, qkv_bias, attn_qk_norm,
lact_chunk_size, use_muon, lr_dim, qkv_silu, no_v_silu, lr_parameterization, learnable_ttt_scale,
use_momentum, ttt_loss_type, ttt_prenorm, ttt_nope, w0_w2_low_rank, window_size, rope_theta,
max_position_embeddings, hidden_ratio, intermediate_size, hidden_act, initializer_range, norm_eps,
tie_word_embeddings, vocab_size, fw_init_gain, fuse_norm, last_layer_fuse_norm, fuse_swiglu,
fuse_cross_entropy, use_fused_kernel, fp32_states. Parameters (same names here): model.embeddings.weight;
model.layers.{i}.attn_norm.weight, .attn.qkv.weight, .attn.q_norm/.k_norm.weight (attn_qk_norm),
.attn.o_proj.weight, .attn.w0 / .w1 / .w2 [Hf, out, in], .attn.lr_proj.weight/.bias, .attn.qk_scale and
.attn.qk_offset [hidden, 2], .attn.ttt_scale_proj.weight/.bias, .attn.ttt_norm.weight,
.attn.momentum_proj.0.weight/.bias, .mlp_norm.weight, .mlp.gate_proj/.up_proj/.down_proj.weight;
model.norm.weight; lm_head.weight.

Deviations from the official code, with reasons:
- model_type "lact" (this project's registry name); official checkpoints say "lact_swiglu" and need mapping.
- Rejected settings (ValueError): w0_w2_low_rank > 0 (low-rank initial weights; the 760M checkpoint
  "lact-muon-nope-postnorm-nheads2-chunk2048-760m" shows no sign of it), lr_dim != 1,
  lr_parameterization != "mamba", ttt_loss_type != "dot_product", hidden_act != "swish".
- fuse_*, use_fused_kernel, fp32_states and max_position_embeddings are kept for config compatibility
  only: kernel/precision switches. no_v_silu is implemented as the official HEAD (1f84d47,
  layer_lact_swiglu.py) does: with qkv_silu, q and k go through silu and v does not; without qkv_silu
  none does. (The authors' REFINE copy, verl/verl/models/lact, predates the option and always silus v.)
- Plain torch everywhere (SDPA with a banded mask instead of flash-attn, torch RMSNorm): CPU and exactness.
- RoPE positions count real tokens per row (the official code offsets by the cache length and the mask sum).
- Everything in lact_ops.py's docstring (fp32 Newton-Schulz, padding, last-chunk update).
"""

from transformers import AutoConfig, AutoModelForCausalLM

from refine.models.lact.configuration_lact import LACT_760M, LACT_TINY, LaCTConfig
from refine.models.lact.modeling_lact import (
    BASE_LR,
    FAST_WEIGHT_KEYS,
    LaCTBlock,
    LaCTForCausalLM,
    LaCTLayer,
    LaCTMLP,
    LaCTModel,
    LaCTPreTrainedModel,
    lact_state_at,
)

AutoConfig.register(LaCTConfig.model_type, LaCTConfig, exist_ok=True)
AutoModelForCausalLM.register(LaCTConfig, LaCTForCausalLM, exist_ok=True)

__all__ = [
    "BASE_LR",
    "FAST_WEIGHT_KEYS",
    "LACT_760M",
    "LACT_TINY",
    "LaCTBlock",
    "LaCTConfig",
    "LaCTForCausalLM",
    "LaCTLayer",
    "LaCTMLP",
    "LaCTModel",
    "LaCTPreTrainedModel",
    "lact_state_at",
]
