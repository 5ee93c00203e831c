"""Tokens/s of `stablekit text` next to a plain transformers generate() script, same folder and settings, in one run.

    python benchmarks/text.py [--models tiny,1.6b] [--runs N] [--threads N] [--device cpu] [--baseline FILE]
                              [--save FILE]

Models: `tiny` is tiny-lm (the catalog's random-weight StableLM chat model); `1.6b` is a StableLM-2-1.6B-shaped
model (hidden 2048, 24 layers, 32 heads, intermediate 5632, vocab 100352) with random weights, built once into a
temporary folder (or --folder, kept) with a byte-level tokenizer of the same vocabulary size.

Each run starts fresh processes, alternating their order: the plain script (AutoTokenizer/AutoModelForCausalLM
from the folder, torch.manual_seed, one generate() call), `stablekit text` streaming to a pipe (tokens/s from
its stats line) and `stablekit text --json`. All sample the same number of tokens (--min-tokens = --max-tokens)
with the same seed, temperature, top-p and top-k, so they must produce the same text: the script checks that.
Tokens/s counts the generate() call (prefill included), not imports or loading, which are shown apart as
the processes' median wall time. The figure compared is each variant's best run (the one least slowed by
whatever else the machine was doing: timeit's rule), with the median beside it; exit 1 when stablekit's best
is below --min-ratio (0.95) of plain's best, or the texts differ.

Threads: every process gets the same OMP_NUM_THREADS. By default tiny runs on 1 thread (a model this small
only waits on OpenMP's thread synchronisation, which makes its figures swing 5x on a busy machine) and 1.6b
on torch's default; --threads N sets it for both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SEED, TEMPERATURE, TOP_P, TOP_K = 1, 0.7, 0.95, 50
PROMPT = "The quick brown fox jumps over the lazy dog. Once upon a time"
DEFAULT_TOKENS = {"tiny": 192, "1.6b": 16}
DEFAULT_RUNS = {"tiny": 5, "1.6b": 3}
STABLELM_2_1_6B = {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 32,
                   "num_key_value_heads": 32, "intermediate_size": 5632, "vocab_size": 100352,
                   "max_position_embeddings": 4096, "partial_rotary_factor": 0.25, "use_qkv_bias": True,
                   "layer_norm_eps": 1e-5, "rope_theta": 10000, "tie_word_embeddings": False}

# The baseline: what a user would write with transformers alone.
PLAIN = r'''
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

args = json.loads(sys.argv[1])
tokenizer = AutoTokenizer.from_pretrained(args["folder"], local_files_only=True)
model = AutoModelForCausalLM.from_pretrained(args["folder"], local_files_only=True,
                                             dtype=getattr(torch, args["dtype"])).to(args["device"]).eval()
if tokenizer.chat_template:
    text = tokenizer.apply_chat_template([{"role": "user", "content": args["prompt"]}], tokenize=False,
                                         add_generation_prompt=True)
    inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt").to(args["device"])
else:
    inputs = tokenizer(args["prompt"], return_tensors="pt").to(args["device"])
torch.manual_seed(args["seed"])
start = time.perf_counter()
output = model.generate(**inputs, max_new_tokens=args["tokens"], min_new_tokens=args["tokens"], do_sample=True,
                        temperature=args["temperature"], top_p=args["top_p"], top_k=args["top_k"],
                        repetition_penalty=1.0, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
seconds = time.perf_counter() - start
new = output[0, inputs["input_ids"].shape[1]:]
text = tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
print(json.dumps({"tokens": len(new), "seconds": seconds, "text": text}))
'''


def tiny_folder() -> Path:
    from stablekit import hub
    from stablekit.registry import load_registry

    return hub.ensure_local(load_registry().get("tiny-lm"))


def _synthetic_token(i: int) -> str:
    letters = "abcdefghijklmnopqrstuvwxyz"
    word = ""
    while True:
        word = letters[i % 26] + word
        i = i // 26 - 1
        if i < 0:
            return "\u0120" + word  # byte-level "Ġ" = a leading space


def build_1_6b(folder: Path) -> Path:
    """A StableLM-2-1.6B-shaped model with random weights (bf16 on disk) and a tokenizer of its vocabulary size."""
    if (folder / "model.safetensors.index.json").is_file() or (folder / "model.safetensors").is_file():
        return folder
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, StableLmConfig, StableLmForCausalLM

    transformers.utils.logging.disable_progress_bar()

    size = STABLELM_2_1_6B["vocab_size"]
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {char: i for i, char in enumerate(sorted(alphabet))}
    i = 0
    while len(vocab) < size - 1:
        vocab.setdefault(_synthetic_token(i), len(vocab))
        i += 1
    eos = "<|endoftext|>"
    vocab[eos] = size - 1
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=eos, bos_token=eos, unk_token=eos,
                                        pad_token=eos, model_max_length=STABLELM_2_1_6B["max_position_embeddings"])
    tokenizer.add_special_tokens({"eos_token": eos})
    config = StableLmConfig(**STABLELM_2_1_6B, bos_token_id=size - 1, eos_token_id=size - 1, pad_token_id=size - 1)
    torch.manual_seed(0)
    start = time.perf_counter()
    model = StableLmForCausalLM._from_config(config, dtype=torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e9
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    print(f"built a {params:.2f} B-parameter StableLM-2 architecture in {folder} ({time.perf_counter() - start:.0f} s)",
          file=sys.stderr)
    return folder


def run_plain(folder: Path, tokens: int, device: str, dtype: str) -> dict:
    args = {"folder": str(folder), "prompt": PROMPT, "tokens": tokens, "seed": SEED, "temperature": TEMPERATURE,
            "top_p": TOP_P, "top_k": TOP_K, "device": device, "dtype": dtype}
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PLAIN, json.dumps(args)], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"plain script failed:\n{result.stderr}")
    data = json.loads(result.stdout.splitlines()[-1])
    return {"tokens_per_second": data["tokens"] / data["seconds"], "tokens": data["tokens"], "text": data["text"],
            "wall": wall}


def stablekit_argv(model: str, tokens: int, device: str, dtype: str) -> list[str]:
    return [sys.executable, "-m", "stablekit", "text", PROMPT, "--model", model, "--seed", str(SEED),
            "--max-tokens", str(tokens), "--min-tokens", str(tokens), "--temperature", str(TEMPERATURE),
            "--top-p", str(TOP_P), "--top-k", str(TOP_K), "--device", device, "--dtype", dtype]


def run_stablekit(model: str, tokens: int, device: str, dtype: str, as_json: bool) -> dict:
    argv = stablekit_argv(model, tokens, device, dtype) + (["--json"] if as_json else [])
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"stablekit failed:\n{result.stderr}")
    if as_json:
        data = json.loads(result.stdout)
        return {"tokens_per_second": data["completion_tokens"] / data["seconds"], "tokens": data["completion_tokens"],
                "text": data["text"], "wall": wall}
    found = re.search(r"^(\d+) tokens in ([\d.]+) s", result.stderr, re.M)
    if not found:
        raise SystemExit(f"no stats line from stablekit:\n{result.stderr}")
    tokens, seconds = int(found.group(1)), float(found.group(2))  # seconds to the millisecond
    return {"tokens_per_second": tokens / seconds, "tokens": tokens, "text": result.stdout[:-1], "wall": wall}


def measure(name: str, model: str, folder: Path, tokens: int, runs: int, device: str, dtype: str) -> dict:
    kinds = {"plain": lambda: run_plain(folder, tokens, device, dtype),
             "stablekit": lambda: run_stablekit(model, tokens, device, dtype, as_json=False),
             "stablekit --json": lambda: run_stablekit(model, tokens, device, dtype, as_json=True)}
    samples: dict[str, list[dict]] = {kind: [] for kind in kinds}
    order = list(kinds)
    for run in range(runs):
        for kind in order if run % 2 == 0 else order[::-1]:
            samples[kind].append(kinds[kind]())
            print(f"  {name} run {run + 1}/{runs} {kind}: {samples[kind][-1]['tokens_per_second']:.2f} tokens/s",
                  file=sys.stderr)
    texts = {s["text"] for kind in kinds for s in samples[kind]}
    counts = {s["tokens"] for kind in kinds for s in samples[kind]}
    return {"tokens": tokens, "same_text": len(texts) == 1 and counts == {tokens},
            **{kind: {"tokens_per_second": max(s["tokens_per_second"] for s in samples[kind]),
                      "median_tokens_per_second": statistics.median(s["tokens_per_second"] for s in samples[kind]),
                      "wall": statistics.median(s["wall"] for s in samples[kind])} for kind in kinds}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,1.6b", help="comma-separated: tiny, 1.6b")
    parser.add_argument("--runs", type=int, help="fresh processes per variant  [default: tiny 5, 1.6b 3]")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS for every process  [default: tiny 1, 1.6b "
                                                    "torch's default]")
    parser.add_argument("--tokens", type=int, help="tokens generated per run  [default: tiny 192, 1.6b 16]")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--folder", help="where to build (or find) the 1.6B model; kept  [default: a temp folder]")
    parser.add_argument("--min-ratio", type=float, default=0.95)
    parser.add_argument("--baseline", help="JSON from an earlier --save, to compare against")
    parser.add_argument("--save", help="write this run's figures as JSON")
    args = parser.parse_args()
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    unknown = set(names) - set(DEFAULT_TOKENS)
    if unknown:
        parser.error(f"unknown model(s): {', '.join(sorted(unknown))}")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="stablekit-bench-") as tmp:
        for name in names:
            tokens = args.tokens or DEFAULT_TOKENS[name]
            if name == "tiny":
                folder, model = tiny_folder(), "tiny-lm"
            else:
                folder = build_1_6b(Path(args.folder) if args.folder else Path(tmp) / "stablelm-2-1_6b-random")
                model = str(folder)
            threads = args.threads or (1 if name == "tiny" else None)
            if threads:
                os.environ["OMP_NUM_THREADS"] = str(threads)
            else:
                os.environ.pop("OMP_NUM_THREADS", None)
            runs = args.runs or DEFAULT_RUNS[name]
            results[name] = measure(name, model, folder, tokens, runs, args.device, args.dtype)
            results[name].update(threads=threads, runs=runs)
    baseline = json.load(open(args.baseline)) if args.baseline else {}
    print(f"device {args.device}, {args.dtype}, {os.cpu_count()} CPUs; tokens/s of the best run (median)")
    print(f"{'model':<7}{'runs':>5}{'threads':>8}{'tokens':>7}{'variant':>18}{'tokens/s':>10}{'(median)':>10}{'ratio':>8}"
          f"{'wall s':>8}{'baseline':>10}{'change':>8}")
    failed = []
    for name, result in results.items():
        plain = result["plain"]["tokens_per_second"]
        for kind in ("plain", "stablekit", "stablekit --json"):
            rate = result[kind]["tokens_per_second"]
            ratio = rate / plain
            base = baseline.get(name, {}).get(kind, {}).get("tokens_per_second")
            change = f"{(rate / base - 1) * 100:+.0f}%" if base else ""
            median = f"({result[kind]['median_tokens_per_second']:.2f})"
            print(f"{name:<7}{result['runs']:>5}{result['threads'] or 'default':>8}{result['tokens']:>7}"
                  f"{kind:>18}{rate:>10.2f}{median:>10}{ratio:>8.3f}{result[kind]['wall']:>8.1f}"
                  f"{base or float('nan'):>10.2f}{change:>8}")
            if kind != "plain" and ratio < args.min_ratio:
                failed.append(f"{name} {kind} at {ratio:.1%} of plain")
        if not result["same_text"]:
            failed.append(f"{name}: the variants did not produce the same text")
    if args.save:
        with open(args.save, "w") as handle:
            json.dump(results, handle, indent=2)
    if failed:
        print(f"below {args.min_ratio:.0%} of plain or inconsistent: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
