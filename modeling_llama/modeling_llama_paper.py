"""The LLaMA model (Touvron et al. 2023, §2.2) as a Transformers `PreTrainedModel`.

Pre-normalisation with RMSNorm (float32 inside), SwiGLU feed-forward, rotary embeddings, optional grouped-query
attention, no biases, untied output head. Parameter names equal those of transformers' `LlamaForCausalLM`, so one
`state_dict` loads into either, and both compute the same function.

Parallelism, checkpointing policies and compilation are applied from outside (training/); this file only declares
the tensor/pipeline-parallel plans, as transformers' Llama does. It is copied next to saved checkpoints for
`trust_remote_code=True`, so it imports transformers and its own siblings (relatively) only.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.generation import GenerationMixin
from transformers.masking_utils import create_causal_mask
from transformers.modeling_layers import GenericForSequenceClassification, GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
    SequenceClassifierOutputWithPast,
)
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .configuration_llama_paper import LlamaPaperConfig
from .hub_push import KeepCardPushMixin
from .rotary import LlamaPaperRotary, apply_rotary, rope_inv_freq


class LlamaPaperRMSNorm(nn.Module):
    """x / rms(x) * g, computed in float32 and cast back before the gain (as Meta and transformers do)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.float()
        hidden_states = hidden_states * torch.rsqrt(hidden_states.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


class LlamaPaperMLP(nn.Module):
    """SwiGLU (Shazeer 2020): down(silu(gate x) * up x); Meta's w1 = gate, w3 = up, w2 = down."""

    def __init__(self, config: LlamaPaperConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, KV, T, hd) -> (B, KV * n_rep, T, hd): each key/value head serves n_rep query heads (GQA)."""
    if n_rep == 1:
        return x
    b, kv, t, hd = x.shape
    return x[:, :, None].expand(b, kv, n_rep, t, hd).reshape(b, kv * n_rep, t, hd)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference attention with explicit weights; returns (B, T, H, hd) and the (B, H, T, S) weights."""
    key, value = repeat_kv(key, module.num_key_value_groups), repeat_kv(value, module.num_key_value_groups)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask  # additive float mask (finite minimum, so masked rows stay finite)
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


# Attention implementations that apply causal masking themselves when given no mask (module.is_causal).
IS_CAUSAL_ATTENTION = frozenset({"sdpa", "flash_attention_2", "flash_attention_3"})


class LlamaPaperAttention(nn.Module):
    """Causal multi-head (or grouped-query) self-attention with rotary q/k and no biases."""

    def __init__(self, config: LlamaPaperConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx  # read by the cache and the attention integrations
        self.head_dim = config.head_dim
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = True
        d, kv = config.hidden_size, config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(d, config.num_attention_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, d, bias=False)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)  # (B, KV, T, hd)
        v = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        q, k = apply_rotary(q, k, *position_embeddings)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, weights = attention(self, q, k, v, attention_mask, dropout=0.0, scaling=self.scaling, **kwargs)
        return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


class LlamaPaperDecoderLayer(GradientCheckpointingLayer):
    """x + attn(norm(x)), then + mlp(norm(x)): the paper's pre-normalisation."""

    def __init__(self, config: LlamaPaperConfig, layer_idx: int):
        super().__init__()
        self.self_attn = LlamaPaperAttention(config, layer_idx)
        self.mlp = LlamaPaperMLP(config)
        self.input_layernorm = LlamaPaperRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaPaperRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        cache: Cache | None = None,
        use_cache: bool | None = False,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        attn_out, _ = self.self_attn(
            self.input_layernorm(hidden_states), position_embeddings, attention_mask, cache=cache, **kwargs
        )
        hidden_states = hidden_states + attn_out
        return hidden_states + self.mlp(self.post_attention_layernorm(hidden_states))


class LlamaPaperPreTrainedModel(KeepCardPushMixin, PreTrainedModel):
    """Shared settings of every LLaMA head: config class, init, supported attention kernels; pushes keep the card."""

    config_class = LlamaPaperConfig
    config: LlamaPaperConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaPaperDecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": LlamaPaperDecoderLayer, "attentions": LlamaPaperAttention}

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Linear/Embedding ~ N(0, initializer_range) and RMSNorm gains = 1 come from the generic init; the rotary
        # buffer is not a parameter and must be recomputed here, or `from_pretrained` leaves garbage in it.
        super()._init_weights(module)
        if isinstance(module, LlamaPaperRotary):
            init.copy_(module.inv_freq, rope_inv_freq(module.head_dim, module.theta, module.inv_freq.device))


class LlamaPaperModel(LlamaPaperPreTrainedModel):
    """The decoder stack: embeddings, layers, final RMSNorm; returns hidden states (B, T, d)."""

    def __init__(self, config: LlamaPaperConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(LlamaPaperDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaPaperRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaPaperRotary(config.head_dim, config.rope_theta)
        self.gradient_checkpointing = False
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        """Run the stack; `cache` (alias `past_key_values`, the pre-5.24 name) holds keys/values between calls."""
        cache = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of `input_ids` (B, T) or `inputs_embeds` (B, T, hidden_size).")
        if input_ids is not None and input_ids.dim() != 2:
            raise ValueError(
                f"`input_ids` must have shape (batch, seq_len); got {tuple(input_ids.shape)}. "
                "Add a batch dimension with `input_ids[None]`."
            )
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        plain_causal = attention_mask is None and position_ids is None  # no padding, no packed-document positions
        if position_ids is None:
            # generate() passes position ids from the attention mask (left padding); here we count from the cache.
            past = cache.get_seq_length() if cache is not None else 0
            position_ids = (torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past).unsqueeze(0)
            plain_causal = plain_causal and isinstance(past, int) and past == 0  # (a StaticCache's is a tensor)
        if plain_causal and self.config._attn_implementation in IS_CAUSAL_ATTENTION:
            # The kernel's own causal masking (is_causal=True). create_causal_mask would return None here too, except
            # under torch.compile on torch < 2.14, where it builds a (B, 1, T, T) mask: SDPA's kernels then visit all
            # T x T blocks instead of skipping the masked half (attention is ~24% of a compiled 1B step on a GPU).
            mask = None
        else:
            mask = create_causal_mask(
                config=self.config,
                inputs_embeds=inputs_embeds,
                attention_mask=attention_mask,
                cache=cache,
                position_ids=position_ids,
            )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                position_embeddings,
                attention_mask=mask,
                cache=cache,
                use_cache=use_cache,
                position_ids=position_ids,
                **kwargs,
            )
        return BaseModelOutputWithPast(last_hidden_state=self.norm(hidden_states), cache=cache)


class LlamaPaperForCausalLM(LlamaPaperPreTrainedModel, GenerationMixin):
    """LLaMA with its (untied by default) output projection; `labels` gives the next-token loss."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: LlamaPaperConfig):
        super().__init__(config)
        self.model = LlamaPaperModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        """Logits (B, T', V) for the last `logits_to_keep` positions (all when 0); loss from unshifted `labels`."""
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache if cache is not None else past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        # Only the positions asked for go through the head: generation needs one row, not T x V logits.
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))
        loss = None
        if labels is not None:
            # Shifts internally, ignores -100, and divides by `num_items_in_batch` under gradient accumulation.
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class LlamaPaperForSequenceClassification(GenericForSequenceClassification, LlamaPaperPreTrainedModel):
    """A linear score on the last real token: the last one the attention mask keeps (left or right padding, any pad
    id), else (no mask) the last one that is not `pad_token_id`, as transformers' generic head does."""

    def __init__(self, config: LlamaPaperConfig):
        # The generic head builds its body through AutoModel, which remote code cannot resolve; build ours directly.
        LlamaPaperPreTrainedModel.__init__(self, config)
        self.num_labels = config.num_labels
        self.model = LlamaPaperModel(config)
        self.score = nn.Linear(config.hidden_size, self.num_labels, bias=False)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> SequenceClassifierOutputWithPast:
        """Scores (batch, num_labels) and, with `labels`, the loss; the mask decides which token is scored.

        Matching `pad_token_id` (the generic rule) misreads rows whose last real token *is* the pad id, e.g. a
        pad token borrowed from `<unk>` or `</s>`, as LLaMA has none.
        """
        if attention_mask is None or attention_mask.dim() != 2:
            return super().forward(input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        outputs = self.model(input_ids, attention_mask=attention_mask, **kwargs)
        logits = self.score(outputs.last_hidden_state)  # (batch, seq, num_labels)
        positions = torch.arange(attention_mask.shape[-1], device=logits.device)
        last = (positions * attention_mask.to(logits.device, torch.long)).argmax(-1)
        pooled = logits[torch.arange(logits.shape[0], device=logits.device), last]
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, pooled_logits=pooled, config=self.config)
        return SequenceClassifierOutputWithPast(
            loss=loss,
            logits=pooled,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = [
    "LlamaPaperPreTrainedModel",
    "LlamaPaperModel",
    "LlamaPaperForCausalLM",
    "LlamaPaperForSequenceClassification",
]
