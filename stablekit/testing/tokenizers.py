"""Tiny tokenizers in the real repos' formats: byte-level CLIP, unigram T5 and a chat-ready causal-LM BPE."""

from __future__ import annotations

import json
import pathlib

CLIP_MAX_LENGTH = 77  # as the real CLIP tokenizers
T5_MAX_LENGTH = 64  # small, so prompts encode fast; pipelines pad to it
LM_CONTEXT = 256
TEXT_VOCAB_SIZE = 1000  # text encoders must cover every tokenizer id

_LM_SPECIALS = ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>")
# The zephyr chat format of stabilityai/stablelm-2-zephyr-1_6b: "<|user|>\n{text}<|endoftext|>\n<|assistant|>\n".
_ZEPHYR_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] in ('user', 'system', 'assistant') %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)
_LM_CORPUS = (
    "A photo of a cat sitting on a red chair.",
    "The quick brown fox jumps over the lazy dog.",
    "Stable Diffusion turns a text prompt into an image.",
    "Hello! How can I help you today?",
    "Write a short poem about the sea and the sky.",
    "def add(a, b):\n    return a + b\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9, and symbols: #$%&*()[]{}<>/\\|@^_~`'\";:-+=?",
)



def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode characters in CLIP's vocabulary order (printable bytes first)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in bs]
    cs = bs + [256 + n for n in range(len(rest))]
    return [chr(c) for c in cs]


def _clip_vocab() -> dict[str, int]:
    """A byte-level CLIP vocabulary with no merges: every byte, its `</w>` form, start and end (514 ids)."""
    chars = _byte_chars()
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_clip_vocab(), merges=[], model_max_length=CLIP_MAX_LENGTH)


def clip_repo_files(path: pathlib.Path) -> None:
    """Rewrite a saved CLIP tokenizer folder to the real repos' files (vocab.json + merges.txt, no tokenizer.json).

    transformers 5 saves only tokenizer.json; the SD repos ship the older pair, and both must keep loading.
    """
    (path / "tokenizer.json").unlink()
    (path / "vocab.json").write_text(json.dumps(_clip_vocab(), ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def t5_tokenizer():
    """A small unigram T5 tokenizer (pad 0, eos 1, unk 2, "▁" word pieces) that reloads from tokenizer.json."""
    from transformers import T5TokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + c, -3.0) for c in letters]
    pieces += [(c, -4.0) for c in letters + letters.upper() + "0123456789.,!?'\"-:;()"]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def lm_tokenizer():
    """Train a byte-level BPE (~300 ids) in memory and wrap it with the zephyr chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(_LM_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_LM_CORPUS, trainer=trainer)
    eos = _LM_SPECIALS[0]
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=eos,
        eos_token=eos,
        unk_token=eos,
        pad_token=eos,
        model_max_length=LM_CONTEXT,
        chat_template=_ZEPHYR_TEMPLATE,
    )

