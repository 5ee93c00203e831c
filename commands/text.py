"""`stablekit text` and `stablekit chat`: StableLM completion and chat, streamed to stdout as it is generated."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from enum import Enum
from typing import Annotated

import typer

from .options import (
    ComputeCapabilityOpt,
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    LockedOpt,
    ModelOpt,
    NoServerOpt,
    OffloadOpt,
    PresetOpt,
    QuietOpt,
    VramOpt,
    capability,
    default,
    device_flags,
    seed_option,
    value,
)

TEXT_EPILOG = """Examples:

  stablekit text "Write a haiku about the sea"

  stablekit text "Once upon a time" --model tiny-lm --seed 1      (offline smoke run)

  git diff | stablekit text - --system "Review this patch" --max-tokens 400

  stablekit text "List three colours: 1." --stop "4." --temperature 0 --json

  stablekit text "Hello" --model stablelm-2-12b-chat --dry-run      (show the device plan)
"""

CHAT_EPILOG = """Examples:

  stablekit chat                              (Ctrl-C stops an answer, Ctrl-D ends the session)

  stablekit chat --history trip.json          (saved after every answer; run it again to resume)

  printf 'Hi!\\nAnd again?\\n' | stablekit chat --model tiny-lm --seed 1      (one turn per line)
"""

GENERATION_PANEL = "Generation"

SystemOpt = Annotated[str | None, typer.Option(
    "--system", rich_help_panel=GENERATION_PANEL, help="System prompt (chat models).")]
MaxTokensOpt = Annotated[int | None, typer.Option(
    "--max-tokens", rich_help_panel=GENERATION_PANEL,
    help="Most tokens in an answer (cut to what the context leaves).  \\[default: the model's]")]
MinTokensOpt = Annotated[int | None, typer.Option(
    "--min-tokens", rich_help_panel=GENERATION_PANEL,
    help="Fewest tokens in an answer: the end-of-text token is held back until then.  "
         + default("text", "min_new_tokens"))]
TemperatureOpt = Annotated[float | None, typer.Option(
    "--temperature", "-t", rich_help_panel=GENERATION_PANEL,
    help="Sampling temperature; 0 = greedy (no randomness).  \\[default: the model's]")]
TopPOpt = Annotated[float | None, typer.Option(
    "--top-p", rich_help_panel=GENERATION_PANEL, help="Nucleus sampling mass.  \\[default: the model's]")]
TopKOpt = Annotated[int | None, typer.Option(
    "--top-k", rich_help_panel=GENERATION_PANEL,
    help="Sample among the k likeliest tokens; 0 = off.  " + default("text", "top_k"))]
RepetitionOpt = Annotated[float | None, typer.Option(
    "--repetition-penalty", rich_help_panel=GENERATION_PANEL,
    help="Above 1 discourages repeats.  " + default("text", "repetition_penalty"))]
StopOpt = Annotated[list[str] | None, typer.Option(
    "--stop", rich_help_panel=GENERATION_PANEL,
    help="End the answer where this text appears (left out of the output). Repeatable.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", metavar="", help="Allow a model folder's own Python code to run (some hub models need it).")]


class Quantize(str, Enum):
    int8 = "int8"


QuantizeOpt = Annotated[Quantize | None, typer.Option(
    "--quantize", rich_help_panel="Device",
    help="int8: int8 weights in the linear layers (CPU only; faster, a quarter of the weight memory; the text can "
         "differ slightly from float32's).")]
HistoryOpt = Annotated[str | None, typer.Option(
    "--history", metavar="FILE", help="Chat history JSON: resumed when it exists, saved after every answer.")]
TextJsonOpt = Annotated[bool, typer.Option(
    "--json", metavar="", help="No streaming: one JSON object per answer (text, finish reason, token counts, timing).")]


def text(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(
        help="What to complete or ask. '-' (or nothing, with stdin piped) reads it from stdin.")] = None,
    chat_mode: Annotated[bool, typer.Option(
        "--chat", metavar="",
        help="Start a conversation instead (as `stablekit chat`; PROMPT is the first message).")] = False,
    system: SystemOpt = None,
    raw: Annotated[bool, typer.Option(
        "--raw", rich_help_panel=GENERATION_PANEL,
        metavar="", help="Plain completion, even with a chat model (no chat template).")] = False,
    max_tokens: MaxTokensOpt = None,
    min_tokens: MinTokensOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    repetition_penalty: RepetitionOpt = None,
    stop: StopOpt = None,
    seed: seed_option("Sampling seed (nothing is drawn at --temperature 0).") = None,
    history: HistoryOpt = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    trust_remote_code: TrustOpt = False,
    quantize: QuantizeOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    compute_capability: ComputeCapabilityOpt = None,
    json_output: TextJsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_server: NoServerOpt = False,
    locked: LockedOpt = False,
) -> None:
    """Generate text with a StableLM model, streamed to stdout; stats go to stderr."""
    from stablekit.errors import UsageError
    from stablekit.lockfile import locking

    flags = {"system": system, "raw": raw or None, "max_new_tokens": max_tokens, "min_new_tokens": min_tokens,
             "temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty,
             "stop": stop or None, "seed": seed, "quantize": value(quantize),
             **device_flags(device, dtype, offload, vram)}
    if chat_mode:
        with locking(locked):
            _chat(ctx, None if prompt == "-" else prompt, flags, model, preset, history, trust_remote_code,
                  json_output, dry_run)
        return
    if history:
        raise UsageError("--history is for conversations", hint="add --chat, or use `stablekit chat`")
    if prompt is None or prompt == "-":
        if prompt is None and sys.stdin.isatty():
            raise UsageError("no prompt", hint="give one as an argument, or pipe it: echo 'Hello' | stablekit text -")
        prompt = sys.stdin.read().rstrip("\r\n")
    with locking(locked):  # a server cannot honour this run's lock: run here
        _text(ctx, prompt, flags, model, preset, trust_remote_code, json_output, dry_run, no_server or locked,
              compute_capability=compute_capability)


def chat(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(
        help="The first message; the rest are read from the terminal, or one per line from piped stdin.")] = None,
    system: SystemOpt = None,
    max_tokens: MaxTokensOpt = None,
    min_tokens: MinTokensOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    repetition_penalty: RepetitionOpt = None,
    stop: StopOpt = None,
    seed: Annotated[int | None, typer.Option(
        "--seed", "-s", min=0, max=2**32 - 1,
        help="Random seed; answer n of the conversation uses seed+n. Drawn (and saved) when omitted.")] = None,
    history: HistoryOpt = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    trust_remote_code: TrustOpt = False,
    quantize: QuantizeOpt = None,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    json_output: TextJsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    locked: LockedOpt = False,
) -> None:
    """Chat with a StableLM chat model, loaded once; Ctrl-C stops an answer, Ctrl-D ends."""
    from stablekit.lockfile import locking
    flags = {"system": system, "max_new_tokens": max_tokens, "min_new_tokens": min_tokens,
             "temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty,
             "stop": stop or None, "seed": seed, "quantize": value(quantize),
             **device_flags(device, dtype, offload, vram)}
    with locking(locked):
        _chat(ctx, prompt, flags, model, preset, history, trust_remote_code, json_output, dry_run)


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _text(ctx, prompt, flags, model, preset, trust_remote_code, json_output, dry_run, no_server=False,
          compute_capability=None) -> None:
    from stablekit import client
    from stablekit.jobs import job_from

    console = ctx.obj
    values = {**flags, "prompt": prompt, "model": model, "trust_remote_code": trust_remote_code or None}
    job = job_from("text", values, preset=preset)
    if not dry_run and client.run([job], console, on_result=console.result, sink="text", on_text=_write,
                                  text_json=json_output, no_server=no_server) is not None:
        return  # the server ran it (an interrupted answer raised KeyboardInterrupt: exit 130)
    from stablekit import runner
    from stablekit.sink import TextStreamSink

    if dry_run:
        for data in runner.dry_run(job, compute_capability=capability(compute_capability, dry_run)):
            console.show_plan(data, json_output)
        return
    sink = TextStreamSink(_write, as_json=json_output, note=console.note, on_result=console.result)
    runner.run([job], sink, console)
    if sink.completions and sink.completions[-1].finish_reason == "interrupted":
        raise typer.Exit(130)


def _chat(ctx, prompt, flags, model, preset, history, trust_remote_code, json_output, dry_run) -> None:
    from pathlib import Path

    from stablekit import runner
    from stablekit.engines import chat as engine
    from stablekit.jobs import job_from

    console = ctx.obj
    history_path = Path(history).expanduser() if history else None
    saved = engine.read_history(history_path) if history_path else None
    values = {**flags, "model": model, "trust_remote_code": trust_remote_code or None}
    job = job_from("text", values, preset=preset, fallback_model=saved.model if saved else None)
    plan = engine.plan(job, None)
    if dry_run:
        console.show_plan(runner.describe(plan), json_output)
        return
    console.note(runner.summary(plan))
    interactive = sys.stdin.isatty()
    if saved and saved.messages:
        console.info(f"resuming {len(saved.messages)} messages from {history_path}"
                     + (f" (started with {saved.model})" if saved.model and saved.model != job.spec.id else ""))

    def answered(completion, turn: int) -> None:
        if json_output:
            console.result({"path": None, "sidecar": None, "kind": "text", "model": job.spec.id,
                            "seed": completion.seed, "index": turn, "turn": turn, "prompt": None,
                            **completion.to_dict()})
        else:
            _write("\n")
            console.note(completion.summary())

    if interactive:
        console.info(f"Chatting with {job.spec.id}: Ctrl-C stops an answer, Ctrl-D ends the session.")
    engine.chat(plan, job.request, _user_messages(console, prompt, interactive), console, history=saved,
                history_path=history_path, on_text=None if json_output else _write, on_answer=answered,
                on_error=(lambda err: console.error(err.message, err.hint)) if interactive else None)


def _user_messages(console, first: str | None, interactive: bool) -> Iterator[str]:
    """The user's side of the conversation: `first`, then lines typed at a prompt or piped in (blank lines skipped)."""
    if first and first.strip():
        yield first
    prompt_on_stdout = interactive and sys.stdout.isatty()
    if prompt_on_stdout:
        import readline  # noqa: F401  (line editing and recall for input())
    while True:
        try:
            if prompt_on_stdout:
                line = input(">>> ")
            elif interactive:  # stdout is redirected: the prompt goes where the user is looking
                sys.stderr.write(">>> ")
                sys.stderr.flush()
                line = input()
            else:
                line = sys.stdin.readline()
                if not line:
                    return
        except EOFError:
            sys.stderr.write("\n")
            return
        except KeyboardInterrupt:
            sys.stderr.write("\n")
            console.note("(Ctrl-D ends the session)")
            continue
        line = line.rstrip("\r\n")
        if line.strip():
            yield line
