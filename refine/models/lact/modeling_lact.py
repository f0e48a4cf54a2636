"""LaCT's layers and causal LM: `LaCTLayer` (sliding-window attention + SwiGLU fast weights),
`LaCTMLP`, `LaCTBlock`, `LaCTModel`, `LaCTForCausalLM`, and `lact_state_at` (the state at any
position from a recorded forward).

The architecture, the recurrent state's layout and every deviation from the official code are in
the package docstring (`refine.models.lact`); the configuration is `configuration_lact`, the pure
tensor functions `refine.models.ops.lact_ops`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from fla.models.utils import Cache, FLAGenerationMixin
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import CausalLMOutputWithPast

from refine.models.lact.configuration_lact import LaCTConfig
from refine.models.ops.lact_ops import (
    SegmentPlan,
    align_tokens,
    apply_rope,
    block_causal_fast_weights,
    keep_last_keys,
    l2_normalize,
    plan_segment,
    sliding_window_attention,
    swiglu_apply,
    take_pending,
)

FAST_WEIGHT_KEYS = ("w0", "w1", "w2", "m0", "m1", "m2", "a0", "a1", "a2")  # weights, momentum, accumulators
BASE_LR = 0.001  # softplus(0 + inv_softplus(BASE_LR)) = BASE_LR: the learning rate at initialisation


class LaCTLayer(nn.Module):
    """Sliding-window attention + SwiGLU fast-weight branch, summed before o_proj. [B, T, hidden] -> same."""

    def __init__(self, config: LaCTConfig):
        super().__init__()
        d = config.hidden_size
        self.num_heads, self.head_dim = config.num_attn_heads, d // config.num_attn_heads
        self.num_fw_heads, self.fw_head_dim = config.num_lact_heads, d // config.num_lact_heads
        d_h = int(self.fw_head_dim * config.inter_multi)
        self.config = config
        self.qkv = nn.Linear(d, 3 * d, bias=config.qkv_bias)
        if config.attn_qk_norm:
            self.q_norm = nn.RMSNorm(d, eps=1e-5)
            self.k_norm = nn.RMSNorm(d, eps=1e-5)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.w0 = nn.Parameter(
            torch.randn(self.num_fw_heads, d_h, self.fw_head_dim) / math.sqrt(self.fw_head_dim)
        )
        self.w1 = nn.Parameter(torch.randn(self.num_fw_heads, self.fw_head_dim, d_h) / math.sqrt(d_h))
        self.w2 = nn.Parameter(
            torch.randn(self.num_fw_heads, d_h, self.fw_head_dim) / math.sqrt(self.fw_head_dim)
        )
        self.lr_proj = nn.Linear(d, 3 * self.num_fw_heads)
        self.base_lr_inv = BASE_LR + math.log(-math.expm1(-BASE_LR))
        self.qk_scale = nn.Parameter(torch.ones(d, 2))
        self.qk_offset = nn.Parameter(torch.zeros(d, 2))
        if config.learnable_ttt_scale:
            self.ttt_scale_proj = nn.Linear(d, self.num_fw_heads)
        self.ttt_norm = nn.RMSNorm(self.fw_head_dim, eps=1e-5)
        if config.use_momentum:
            self.momentum_proj = nn.Sequential(nn.Linear(d, self.num_fw_heads), nn.Sigmoid())
        # False: an ablation (refine.eval.ablation.fast_weights_frozen): the fast weights are never written,
        # so every token reads the weights of the state it started from (the learnable initial ones for a
        # forward from the start) and the branch holds no memory of the sequence. Not saved in checkpoints.
        self.update_fast_weights = True

    def initial_state(self, batch: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state before any token: learnable fast weights, empty buffers, position 0."""
        cfg, hf, df = self.config, self.num_fw_heads, self.fw_head_dim
        # a copy of each parameter, not a view: states and state records outlive the forward, and
        # FSDP2 frees the gathered parameters after it
        state = {name: getattr(self, name).clone()[None].expand(batch, -1, -1, -1) for name in ("w0", "w1", "w2")}
        if cfg.ttt_prenorm:
            state.update({f"a{i}": state[f"w{i}"] for i in range(3)})
        if cfg.use_momentum:
            state.update({f"m{i}": torch.zeros_like(state[f"w{i}"]) for i in range(3)})
            state["gate"] = like.new_zeros(batch, cfg.lact_chunk_size, hf)
        zeros = like.new_zeros
        state.update(k=zeros(batch, cfg.lact_chunk_size, hf, df), v=zeros(batch, cfg.lact_chunk_size, hf, df))
        state["lr"] = zeros(batch, cfg.lact_chunk_size, hf, 3)
        state["win_k"] = zeros(batch, cfg.window_size - 1, self.num_heads, self.head_dim)
        state["win_v"] = torch.zeros_like(state["win_k"])
        state["win_pos"] = torch.full((batch, cfg.window_size - 1), -1, dtype=torch.long, device=like.device)
        state["pos"] = torch.zeros(batch, dtype=torch.long, device=like.device)
        return state

    def forward(self, x: torch.Tensor, plan: SegmentPlan, state: dict[str, torch.Tensor], tape=None):
        """x: [B, T, hidden]; state: this layer's recurrent state before the segment. Returns the output
        [B, T, hidden] and the state after the segment. `tape` (a list), if given, receives what
        `lact_state_at` needs to rebuild the state at any position of the segment."""
        cfg, (batch, length, _) = self.config, x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if cfg.attn_qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        fast_q = q * self.qk_scale[:, 0] + self.qk_offset[:, 0]
        fast_k = k * self.qk_scale[:, 1] + self.qk_offset[:, 1]
        fast_v = v
        if cfg.qkv_silu:  # a1600012888/LaCT 1f84d47 layer_lact_swiglu.py: no_v_silu leaves v linear
            fast_q, fast_k = F.silu(fast_q), F.silu(fast_k)
            fast_v = fast_v if cfg.no_v_silu else F.silu(fast_v)
        as_fw = (batch, length, self.num_fw_heads, self.fw_head_dim)
        as_attn = (batch, length, self.num_heads, self.head_dim)
        fast_q, fast_k = l2_normalize(fast_q.view(as_fw)), l2_normalize(fast_k.view(as_fw))
        if not cfg.ttt_nope:  # RoPE over attention-head groups of the concatenated fast-weight heads
            fast_q = apply_rope(fast_q.reshape(as_attn), plan.positions, cfg.rope_theta).view(as_fw)
            fast_k = apply_rope(fast_k.reshape(as_attn), plan.positions, cfg.rope_theta).view(as_fw)
        q = apply_rope(q.view(as_attn), plan.positions, cfg.rope_theta)
        k = apply_rope(k.view(as_attn), plan.positions, cfg.rope_theta)
        v = v.view(as_attn)

        key_pos = torch.cat([state["win_pos"], torch.where(plan.valid, plan.positions, -1)], dim=1)
        keys, values = torch.cat([state["win_k"], k], dim=1), torch.cat([state["win_v"], v], dim=1)
        attn = sliding_window_attention(q, keys, values, plan.positions, key_pos, plan.valid, cfg.window_size)
        win_k, win_v, win_pos = keep_last_keys(keys, values, key_pos, cfg.window_size - 1)

        lr = F.softplus(self.lr_proj(x).float() + self.base_lr_inv).to(x.dtype).view(batch, length, -1, 3)
        new_tokens = {"k": fast_k, "v": fast_v.view(as_fw), "lr": lr}
        if cfg.use_momentum:
            new_tokens["gate"] = self.momentum_proj(x)  # [B, T, Hf]
        aligned = {name: align_tokens(plan, state[name], value) for name, value in new_tokens.items()}
        init_norms = tuple(w.norm(dim=-1, keepdim=True) for w in (self.w0, self.w1, self.w2))
        history = None
        if tape is not None:
            history = []
            tape.append(
                {"weights": history, "aligned": aligned, "keys": keys, "values": values, "key_pos": key_pos}
            )
        fw_before = {name: value for name, value in state.items() if name in FAST_WEIGHT_KEYS}
        if self.update_fast_weights:
            fw_out, fw = block_causal_fast_weights(
                plan, fw_before, fast_q, aligned, init_norms, cfg.lact_chunk_size, cfg.use_muon, cfg.ttt_prenorm,
                history,
            )  # fmt: skip
        else:  # no write: every token reads the weights before the segment (zero output at padding)
            if history is not None:
                history.extend([fw_before] * (len(plan.update_rows) + 1))
            fw = fw_before
            fw_out = swiglu_apply(fw_before, fast_q) * plan.valid[..., None, None]  # [B, T, Hf, Df]
        fw_out = self.ttt_norm(fw_out)
        if cfg.learnable_ttt_scale:
            fw_out = fw_out * F.silu(self.ttt_scale_proj(x))[..., None]
        out = self.o_proj(attn.reshape(batch, length, -1) + fw_out.reshape(batch, length, -1))

        new_state = dict(fw, win_k=win_k, win_v=win_v, win_pos=win_pos, pos=plan.end_positions)
        new_state.update({name: take_pending(plan, a, cfg.lact_chunk_size) for name, a in aligned.items()})
        return out, new_state


class LaCTMLP(nn.Module):
    """SwiGLU MLP with fla's GatedMLP sizing: intermediate = 2/3 * ratio * hidden rounded up to 256."""

    def __init__(self, config: LaCTConfig):
        super().__init__()
        size = config.intermediate_size
        if size is None:
            size = int(config.hidden_size * config.hidden_ratio * 2 / 3)
            size = 256 * ((size + 255) // 256)
        self.gate_proj = nn.Linear(config.hidden_size, size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, size, bias=False)
        self.down_proj = nn.Linear(size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LaCTBlock(nn.Module):
    def __init__(self, config: LaCTConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.attn = LaCTLayer(config)
        self.mlp_norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.mlp = LaCTMLP(config)

    def forward(self, x: torch.Tensor, plan: SegmentPlan, state: dict[str, torch.Tensor] | None, tape=None):
        if state is None:  # built here, inside the block, where FSDP2 has gathered its parameters
            state = self.attn.initial_state(x.shape[0], x)
        mixed, state = self.attn(self.attn_norm(x), plan, state, tape)
        x = x + mixed
        return x + self.mlp(self.mlp_norm(x)), state


class LaCTPreTrainedModel(PreTrainedModel):
    config_class = LaCTConfig
    base_model_prefix = "model"
    _no_split_modules = ["LaCTBlock"]
    _is_stateful = True

    def _init_weights(self, module: nn.Module):
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.RMSNorm):
            init.ones_(module.weight)
        if isinstance(module, LaCTLayer):
            init.ones_(module.qk_scale)
            init.zeros_(module.qk_offset)
            init.normal_(module.w0, mean=0.0, std=1.0 / math.sqrt(module.fw_head_dim))
            init.normal_(module.w2, mean=0.0, std=1.0 / math.sqrt(module.fw_head_dim))
            init.normal_(module.w1, mean=0.0, std=1.0 / math.sqrt(module.w1.shape[-1]))


class LaCTModel(LaCTPreTrainedModel):
    def __init__(self, config: LaCTConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList([LaCTBlock(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings

    def set_input_embeddings(self, value):
        self.embeddings = value

    def forward(
        self,
        input_ids,
        attention_mask=None,
        past_key_values=None,
        use_cache=False,
        output_hidden_states=False,
        state_tape=None,
    ):
        """Returns (final hidden [B, T, hidden] after the norm, cache or None, hidden states or None).

        `state_tape` (a list): each layer appends what `lact_state_at` needs; only for a forward from
        the start of unpadded rows (no cache, no attention mask)."""
        if state_tape is not None and (past_key_values is not None or attention_mask is not None):
            raise ValueError("state_tape needs a forward from the start without attention_mask")
        x = self.embeddings(input_ids)
        batch, length = input_ids.shape
        valid = torch.ones_like(input_ids, dtype=torch.bool)
        if attention_mask is not None:
            valid = attention_mask[:, -length:].bool()
        states = [None] * len(self.layers)
        if past_key_values is not None and not isinstance(past_key_values, Cache):
            raise TypeError(f"past_key_values must be fla's Cache, got {type(past_key_values).__name__}")
        if past_key_values is not None:
            states = [
                past_key_values.layers[i].state["recurrent_state"]
                if i < len(past_key_values.layers)
                else None
                for i in range(len(self.layers))
            ]
        pos = states[0]["pos"] if states[0] is not None else torch.zeros(batch, dtype=torch.long, device=x.device)
        need_state = use_cache or past_key_values is not None or state_tape is not None
        plan = plan_segment(valid, pos, self.config.lact_chunk_size, need_state)
        hidden = ()
        for i, block in enumerate(self.layers):
            hidden += (x,)
            x, states[i] = block(x, plan, states[i], state_tape)
        x = self.norm(x)
        if not need_state:
            return x, None, hidden + (x,) if output_hidden_states else None
        cache = past_key_values if past_key_values is not None else Cache()
        for i, state in enumerate(states):
            while len(cache.layers) <= i:
                cache.layers.append(cache.layer_class_to_replicate())
            layer = cache.layers[i]
            layer.state = {
                "recurrent_state": state,
                "attn_state": None,
                "conv_state": None,
                "ffn_state": None,
            }
            layer._seen_tokens += length  # HF bookkeeping only; never read here
            layer.is_initialized, layer.device = True, x.device
        return x, cache, hidden + (x,) if output_hidden_states else None


class LaCTForCausalLM(
    LaCTPreTrainedModel, FLAGenerationMixin
):  # FLAGenerationMixin: a GenerationMixin using fla's Cache
    _tied_weights_keys = {"lm_head.weight": "model.embeddings.weight"}

    def __init__(self, config: LaCTConfig):
        super().__init__(config)
        self.model = LaCTModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embeddings

    def set_input_embeddings(self, value):
        self.model.embeddings = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        state_tape: list | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """input_ids: [B, T]. hidden_states (when asked): the input of every block, then the LM-head input.
        `state_tape`: see `LaCTModel.forward` and `lact_state_at`. `logits_to_keep` (HF's meaning):
        logits of the last n positions only, 0 = all (with `labels`, all are computed).
        Extra generation keywords (cache_position, ...) are accepted and unused."""
        hidden, cache, all_hidden = self.model(
            input_ids, attention_mask, past_key_values, bool(use_cache), output_hidden_states, state_tape
        )
        keep = logits_to_keep if labels is None and logits_to_keep else hidden.shape[1]
        logits = self.lm_head(hidden[:, -keep:])
        loss = None
        if labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        out = CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=cache, hidden_states=all_hidden
        )
        return out if return_dict else out.to_tuple()


def lact_state_at(
    entry: dict, rows: torch.Tensor, positions: torch.Tensor, chunk_size: int, window_size: int
) -> dict[str, torch.Tensor]:
    """One layer's recurrent state after the first positions[r] tokens of row rows[r], rebuilt from the
    `state_tape` entry of a forward from the start (still in its graph): the fast weights after the
    complete chunks, the pending tokens of the open chunk, the last window_size - 1 keys and the position.
    rows, positions: LongTensor [R]. Returns the state dict with R rows (the layout of `initial_state`)."""
    chunk, fill = positions // chunk_size, positions % chunk_size  # [R]
    state = {
        name: torch.stack([w[name] for w in entry["weights"]], dim=1)[rows, chunk]
        for name in entry["weights"][0]
    }
    size = window_size - 1  # the keys of the window cache; the tape's keys start with `size` empty slots
    index = positions[:, None] + torch.arange(size, device=positions.device)  # [R, W-1]
    state.update(
        win_k=entry["keys"][rows[:, None], index],
        win_v=entry["values"][rows[:, None], index],
        win_pos=entry["key_pos"][rows[:, None], index],
        pos=positions.clone(),
    )
    offsets = torch.arange(chunk_size, device=positions.device)
    slots = chunk[:, None] * chunk_size + offsets  # [R, C]
    filled = offsets < fill[:, None]  # [R, C]
    for name, aligned in entry["aligned"].items():
        taken = aligned[rows[:, None], slots]
        state[name] = taken * filled.view(*filled.shape, *([1] * (taken.dim() - 2))).to(taken.dtype)
    return state
