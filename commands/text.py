"""`stablekit text` and `stablekit chat`: StableLM completion and chat, streamed to stdout as it is generated."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Annotated

import typer

from .options import (
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    ModelOpt,
    OffloadOpt,
    PresetOpt,
    QuietOpt,
    SeedOpt,
    VramOpt,
    device_flags,
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
    help="Fewest tokens in an answer: the end-of-text token is held back until then.  \\[default: 0]")]
TemperatureOpt = Annotated[float | None, typer.Option(
    "--temperature", "-t", rich_help_panel=GENERATION_PANEL,
    help="Sampling temperature; 0 = greedy (no randomness).  \\[default: the model's]")]
TopPOpt = Annotated[float | None, typer.Option(
    "--top-p", rich_help_panel=GENERATION_PANEL, help="Nucleus sampling mass.  \\[default: the model's]")]
TopKOpt = Annotated[int | None, typer.Option(
    "--top-k", rich_help_panel=GENERATION_PANEL, help="Sample among the k likeliest tokens; 0 = off.  \\[default: 50]")]
RepetitionOpt = Annotated[float | None, typer.Option(
    "--repetition-penalty", rich_help_panel=GENERATION_PANEL, help="Above 1 discourages repeats.  \\[default: 1.0]")]
StopOpt = Annotated[list[str] | None, typer.Option(
    "--stop", rich_help_panel=GENERATION_PANEL,
    help="End the answer where this text appears (left out of the output). Repeatable.")]
TrustOpt = Annotated[bool, typer.Option(
    "--trust-remote-code", help="Allow a model folder's own Python code to run (some hub models need it).")]
HistoryOpt = Annotated[str | None, typer.Option(
    "--history", metavar="FILE", help="Chat history JSON: resumed when it exists, saved after every answer.")]
TextJsonOpt = Annotated[bool, typer.Option(
    "--json", help="No streaming: one JSON object per answer (text, finish reason, token counts, timing).")]


def text(
    ctx: typer.Context,
    prompt: Annotated[str | None, typer.Argument(
        help="What to complete or ask. '-' (or nothing, with stdin piped) reads it from stdin.")] = None,
    chat_mode: Annotated[bool, typer.Option(
        "--chat", help="Start a conversation instead (as `stablekit chat`; PROMPT is the first message).")] = False,
    system: SystemOpt = None,
    raw: Annotated[bool, typer.Option(
        "--raw", rich_help_panel=GENERATION_PANEL,
        help="Plain completion, even with a chat model (no chat template).")] = False,
    max_tokens: MaxTokensOpt = None,
    min_tokens: MinTokensOpt = None,
    temperature: TemperatureOpt = None,
    top_p: TopPOpt = None,
    top_k: TopKOpt = None,
    repetition_penalty: RepetitionOpt = None,
    stop: StopOpt = None,
    seed: SeedOpt = None,
    history: HistoryOpt = None,
    model: ModelOpt = None,
    preset: PresetOpt = None,
    trust_remote_code: TrustOpt = False,
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    json_output: TextJsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Generate text with a StableLM model, streamed to stdout; stats go to stderr."""
    from stablekit.errors import UsageError

    flags = {"system": system, "raw": raw or None, "max_new_tokens": max_tokens, "min_new_tokens": min_tokens,
             "temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty,
             "stop": stop or None, "seed": seed, **device_flags(device, dtype, offload, vram)}
    if chat_mode:
        _chat(ctx, None if prompt == "-" else prompt, flags, model, preset, history, trust_remote_code,
              json_output, dry_run, quiet)
        return
    if history:
        raise UsageError("--history is for conversations", hint="add --chat, or use `stablekit chat`")
    if prompt is None or prompt == "-":
        if prompt is None and sys.stdin.isatty():
            raise UsageError("no prompt", hint="give one as an argument, or pipe it: echo 'Hello' | stablekit text -")
        prompt = sys.stdin.read().rstrip("\r\n")
    _text(ctx, prompt, flags, model, preset, trust_remote_code, json_output, dry_run, quiet)


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
    device: DeviceOpt = None,
    dtype: DtypeOpt = None,
    offload: OffloadOpt = None,
    vram: VramOpt = None,
    json_output: TextJsonOpt = False,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Chat with a StableLM chat model, loaded once; Ctrl-C stops an answer, Ctrl-D ends."""
    flags = {"system": system, "max_new_tokens": max_tokens, "min_new_tokens": min_tokens,
             "temperature": temperature, "top_p": top_p, "top_k": top_k, "repetition_penalty": repetition_penalty,
             "stop": stop or None, "seed": seed, **device_flags(device, dtype, offload, vram)}
    _chat(ctx, prompt, flags, model, preset, history, trust_remote_code, json_output, dry_run, quiet)


def _resolve(prompt: str, flags: dict, model: str | None, preset: str | None, fallback_model: str | None = None):
    from stablekit.planning import resolve_request

    return resolve_request("text", prompt=prompt, model=model, preset=preset, flags=flags,
                           fallback_model=fallback_model)


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def _text(ctx, prompt, flags, model, preset, trust_remote_code, json_output, dry_run, quiet) -> None:
    from stablekit import planning
    from stablekit.engines import text as engine

    console = ctx.obj
    console.quiet = console.quiet or quiet
    spec, request = _resolve(prompt, flags, model, preset)
    engine.validate(request, spec)
    prepared = planning.prepare(spec, engine.workload(request, spec), planning.overrides_of(request))
    if dry_run:
        console.show_plan(planning.describe(prepared, request), json_output)
        return
    console.show_plan_summary(prepared.plan)
    completion = engine.generate(prepared, request, console, on_text=None if json_output else _write,
                                 trust_remote_code=trust_remote_code)
    if json_output:
        console.result({"model": spec.id, **completion.to_dict()})
    else:
        _write("\n")
        console.note(completion.summary())
    if completion.finish_reason == "interrupted":
        raise typer.Exit(130)


def _chat(ctx, prompt, flags, model, preset, history, trust_remote_code, json_output, dry_run, quiet) -> None:
    from pathlib import Path

    from stablekit import planning
    from stablekit.engines import text as engine

    console = ctx.obj
    console.quiet = console.quiet or quiet
    history_path = Path(history).expanduser() if history else None
    saved = engine.read_history(history_path) if history_path else None
    spec, request = _resolve("", flags, model, preset, saved.model if saved else None)
    engine.validate(request, spec, chat=True)
    prepared = planning.prepare(spec, engine.workload(request, spec, chat=True), planning.overrides_of(request))
    if dry_run:
        console.show_plan(planning.describe(prepared, request), json_output)
        return
    console.show_plan_summary(prepared.plan)
    interactive = sys.stdin.isatty()
    if saved and saved.messages:
        console.info(f"resuming {len(saved.messages)} messages from {history_path}"
                     + (f" (started with {saved.model})" if saved.model and saved.model != spec.id else ""))

    def answered(completion, turn: int) -> None:
        if json_output:
            console.result({"model": spec.id, "turn": turn, **completion.to_dict()})
        else:
            _write("\n")
            console.note(completion.summary())

    if interactive:
        console.info(f"Chatting with {spec.id}: Ctrl-C stops an answer, Ctrl-D ends the session.")
    engine.chat(prepared, request, _user_messages(console, prompt, interactive), console, history=saved,
                history_path=history_path, on_text=None if json_output else _write, on_answer=answered,
                on_error=(lambda err: console.error(err.message, err.hint)) if interactive else None,
                trust_remote_code=trust_remote_code)


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
