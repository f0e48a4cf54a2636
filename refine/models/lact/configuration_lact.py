"""LaCT's configuration (`LaCTConfig`, model_type "lact") and the named sizes `LACT_TINY`, `LACT_760M`.

fla's layout: this file holds the configuration only, `modeling_lact` the layers and the causal LM,
`refine.models.ops.lact_ops` the pure tensor functions (with the naive reference `lact_naive`
beside them). The package (`refine.models.lact`) registers both with the transformers Auto classes.
The field names, the official ones and the rejected settings are listed in the package docstring.
"""

from __future__ import annotations

from transformers import PreTrainedConfig


class LaCTConfig(PreTrainedConfig):
    model_type = "lact"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 2048,
        num_hidden_layers: int = 24,
        num_attn_heads: int = 32,
        num_lact_heads: int = 4,
        inter_multi: float = 1.0,
        window_size: int = 2048,
        lact_chunk_size: int = 2048,
        use_momentum: bool = True,
        use_muon: bool = False,
        ttt_prenorm: bool = False,
        ttt_nope: bool = False,
        qkv_silu: bool = True,
        qkv_bias: bool = False,
        attn_qk_norm: bool = False,
        learnable_ttt_scale: bool = True,
        rope_theta: float = 10000.0,
        hidden_ratio: int | None = 4,
        intermediate_size: int | None = None,
        initializer_range: float = 0.006,
        norm_eps: float = 1e-6,
        lr_dim: int = 1,
        lr_parameterization: str = "mamba",
        ttt_loss_type: str = "dot_product",
        w0_w2_low_rank: int = -1,
        hidden_act: str = "swish",
        no_v_silu: bool = False,
        fw_init_gain: float = 0.5,
        max_position_embeddings: int = 2048,
        tie_word_embeddings: bool = False,
        pad_token_id: int | None = None,
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        **kwargs,
    ):
        checks = [
            (
                hidden_size % num_attn_heads == 0,
                f"hidden_size={hidden_size} % num_attn_heads={num_attn_heads}",
            ),
            (
                hidden_size % num_lact_heads == 0,
                f"hidden_size={hidden_size} % num_lact_heads={num_lact_heads}",
            ),
            (w0_w2_low_rank <= 0, f"w0_w2_low_rank={w0_w2_low_rank} (low-rank initial weights unsupported)"),
            (lr_dim == 1, f"lr_dim={lr_dim} (only 1 supported)"),
            (lr_parameterization == "mamba", f"lr_parameterization={lr_parameterization!r}"),
            (ttt_loss_type == "dot_product", f"ttt_loss_type={ttt_loss_type!r}"),
            (hidden_act == "swish", f"hidden_act={hidden_act!r}"),
            (
                window_size >= 1 and lact_chunk_size >= 1,
                f"window_size={window_size}, chunk={lact_chunk_size}",
            ),
        ]
        for ok, what in checks:
            if not ok:
                raise ValueError(f"LaCTConfig: unsupported setting {what}")
        self.vocab_size, self.hidden_size, self.num_hidden_layers = vocab_size, hidden_size, num_hidden_layers
        self.num_attn_heads, self.num_lact_heads, self.inter_multi = (
            num_attn_heads,
            num_lact_heads,
            inter_multi,
        )
        self.window_size, self.lact_chunk_size = window_size, lact_chunk_size
        self.use_momentum, self.use_muon, self.ttt_prenorm, self.ttt_nope = (
            use_momentum,
            use_muon,
            ttt_prenorm,
            ttt_nope,
        )
        self.qkv_silu, self.qkv_bias, self.attn_qk_norm = qkv_silu, qkv_bias, attn_qk_norm
        self.learnable_ttt_scale, self.rope_theta = learnable_ttt_scale, rope_theta
        self.hidden_ratio, self.intermediate_size = hidden_ratio, intermediate_size
        self.initializer_range, self.norm_eps = initializer_range, norm_eps
        self.lr_dim, self.lr_parameterization, self.ttt_loss_type = lr_dim, lr_parameterization, ttt_loss_type
        self.w0_w2_low_rank, self.hidden_act, self.no_v_silu = w0_w2_low_rank, hidden_act, no_v_silu
        self.fw_init_gain, self.max_position_embeddings = fw_init_gain, max_position_embeddings
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


LACT_TINY = dict(
    vocab_size=256,
    hidden_size=128,
    num_hidden_layers=2,
    num_attn_heads=4,
    num_lact_heads=2,
    window_size=64,
    lact_chunk_size=64,
    use_momentum=True,
    use_muon=True,
    hidden_ratio=4,
)
LACT_760M = (
    dict(  # REFINE.md §3 + the authors' checkpoint name "lact-muon-nope-postnorm-nheads2-chunk2048-760m"
        vocab_size=32000,
        hidden_size=1536,
        num_hidden_layers=24,
        num_attn_heads=24,
        num_lact_heads=2,
        inter_multi=1.0,
        window_size=2048,
        lact_chunk_size=2048,
        use_muon=True,
        ttt_nope=True,
        ttt_prenorm=False,
        use_momentum=True,
        hidden_ratio=4,
        rope_theta=10000.0,
    )
)
