"""LLaMA (Touvron et al. 2023) as a Transformers model: `import modeling_llama` registers it with the Auto classes."""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from .configuration_llama_paper import PAPER_PARAMETERS, PRESETS, LlamaPaperConfig
from .modeling_llama_paper import (
    LlamaPaperForCausalLM,
    LlamaPaperForSequenceClassification,
    LlamaPaperModel,
    LlamaPaperPreTrainedModel,
)
from .tokenization_llama_paper import LlamaPaperTokenizer
from .tokenization_llama_paper_fast import LlamaPaperTokenizerFast

AutoConfig.register(LlamaPaperConfig.model_type, LlamaPaperConfig, exist_ok=True)
AutoModel.register(LlamaPaperConfig, LlamaPaperModel, exist_ok=True)
AutoModelForCausalLM.register(LlamaPaperConfig, LlamaPaperForCausalLM, exist_ok=True)
AutoModelForSequenceClassification.register(LlamaPaperConfig, LlamaPaperForSequenceClassification, exist_ok=True)
AutoTokenizer.register(
    LlamaPaperConfig, slow_tokenizer_class=LlamaPaperTokenizer, fast_tokenizer_class=LlamaPaperTokenizerFast,
    exist_ok=True,
)

# `save_pretrained` then writes `auto_map` and copies our source files, so saved folders load with
# `trust_remote_code=True` where this package is not installed.
LlamaPaperConfig.register_for_auto_class()
LlamaPaperModel.register_for_auto_class("AutoModel")
LlamaPaperForCausalLM.register_for_auto_class("AutoModelForCausalLM")
LlamaPaperForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
LlamaPaperTokenizer.register_for_auto_class("AutoTokenizer")
LlamaPaperTokenizerFast.register_for_auto_class("AutoTokenizer")

__all__ = [
    "LlamaPaperConfig",
    "LlamaPaperModel",
    "LlamaPaperPreTrainedModel",
    "LlamaPaperForCausalLM",
    "LlamaPaperForSequenceClassification",
    "LlamaPaperTokenizer",
    "LlamaPaperTokenizerFast",
    "PRESETS",
    "PAPER_PARAMETERS",
]
