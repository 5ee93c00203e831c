"""A tiny random-weight StableLM in the stablelm-2-zephyr-1_6b layout (model, tokenizer, chat template)."""

from __future__ import annotations

import pathlib

from .components import seeded
from .tokenizers import LM_CONTEXT, lm_tokenizer


def build_lm(path: pathlib.Path) -> None:
    """stablelm-2-zephyr-1_6b layout: StableLmForCausalLM + fast tokenizer with a chat template, 256 context."""
    from transformers import GenerationConfig, StableLmConfig, StableLmForCausalLM

    tokenizer = lm_tokenizer()
    eos = tokenizer.eos_token_id
    config = StableLmConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=LM_CONTEXT,
        partial_rotary_factor=0.25,
        use_qkv_bias=True,
        tie_word_embeddings=False,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = seeded(0, StableLmForCausalLM, config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)

