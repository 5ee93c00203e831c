"""Conversations with a text model: the saved history, fitting messages into the context, the answer loop."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..console import Progress
from ..errors import InputError, StablekitError, UsageError
from ..jobs import draw_seed
from ..outputs import write_atomic
from ..params import TextRequest
from ..planning import Plan, plan_device
from .text import Completion, ContextError, TextModel, sampling, validate, with_quantize, workload

HISTORY_FORMAT = "stablekit-chat"
HISTORY_VERSION = 1
ROLES = ("system", "user", "assistant")


def plan(job, hardware=None) -> Plan:
    """A conversation's plan: the KV cache sized for the whole context."""
    from ..devices import probe

    validate(job.request, job.spec, chat=True)
    return with_quantize(plan_device(job, workload(job.request, job.spec, chat=True), hardware or probe()))


def fit_messages(messages: list[dict[str, str]], count: Callable[[list[dict[str, str]]], int],
                 budget: int) -> tuple[list[dict[str, str]], int]:
    """Leave out the oldest exchanges until count(messages) <= budget; returns (kept, messages left out).

    System messages and the newest message always stay; an exchange is a user message with the assistant
    answers after it. Stops leaving out when only those remain (the caller checks what is left).
    """
    kept = list(messages)
    dropped = 0
    while count(kept) > budget:
        turns = [i for i, m in enumerate(kept[:-1]) if m["role"] != "system"]
        if not turns:
            break
        start = turns[0]
        end = start + 1
        while end < len(kept) - 1 and kept[end]["role"] == "assistant":
            end += 1
        if kept[start]["role"] == "assistant":  # a history that begins with an answer
            end = start + 1
        dropped += end - start
        del kept[start:end]
    return kept, dropped


@dataclass
class History:
    """A conversation as it is saved: OpenAI-style messages, the model and the seed of the session."""

    messages: list[dict[str, str]]
    model: str | None = None
    seed: int | None = None

    @property
    def answers(self) -> int:
        return sum(1 for m in self.messages if m["role"] == "assistant")

    def to_dict(self) -> dict[str, Any]:
        return {"format": HISTORY_FORMAT, "version": HISTORY_VERSION, "model": self.model, "seed": self.seed,
                "messages": self.messages, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "stablekit_version": __version__}


def read_history(path: Path) -> History | None:
    """The conversation saved in `path` (None when the file does not exist yet)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read chat history {path}: {err}") from None
    except ValueError as err:
        raise InputError(f"{path} is not a chat history: not valid JSON ({err})") from None
    if isinstance(data, list):  # a bare list of messages, as other tools write them
        data = {"messages": data}
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not all(
            isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str) for m in messages):
        raise InputError(f"{path} is not a chat history: expected {{\"messages\": [{{\"role\": ..., "
                         "\"content\": ...}, ...]}",
                         hint="roles are system, user and assistant; or give a new file name to start one")
    model, seed = data.get("model"), data.get("seed")
    return History(messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                   model=model if isinstance(model, str) else None,
                   seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None)


def write_history(path: Path, history: History) -> Path:
    """Replace the file atomically: a crash leaves the previous conversation, never half of one."""
    text = json.dumps(history.to_dict(), indent=2, ensure_ascii=False) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), overwrite=True)


def chat(plan: Plan, *args, **kwargs) -> History:
    """A conversation (see _chat), with the libraries' notices off like any other run."""
    from ..quiet import quiet_libraries

    with quiet_libraries():
        return _chat(plan, *args, **kwargs)


def _chat(plan: Plan, request: TextRequest, turns: Iterable[str], progress: Progress = Progress(), *,
         history: History | None = None, history_path: Path | None = None,
         on_text: Callable[[str], None] | None = None,
         on_answer: Callable[[Completion, int], None] = lambda completion, turn: None,
         on_error: Callable[[StablekitError], None] | None = None,
         ) -> History:
    """A conversation with the model loaded once: one answer per user message from `turns`.

    Answer n of the conversation (counting those in a resumed history) is sampled with seed + n, so a
    resumed conversation continues as an unbroken one would. When the conversation outgrows the context,
    the oldest exchanges are left out of what the model sees (the history keeps them) and progress says so.
    A message that cannot fit even alone goes to `on_error` (or raises when there is none).
    """
    history = History(messages=list(history.messages), model=history.model, seed=history.seed) if history \
        else History(messages=[])
    if request.seed is None:
        request = replace(request, seed=history.seed)
    if request.seed is None and sampling(request):
        request = replace(request, seed=draw_seed(progress.note))
    history.model, history.seed = plan.spec.id, request.seed
    if request.system is not None:
        history.messages = [{"role": "system", "content": request.system}] + [
            m for m in history.messages if m["role"] != "system"]
    lm = TextModel(plan, progress=progress)
    if not lm.chat_template:
        raise UsageError(f"{plan.spec.id} has no chat template, so it cannot chat",
                         hint="use `stablekit text` for plain completion, or a chat model")
    lm.load()  # once, before the first question
    for message in turns:
        messages = history.messages + [{"role": "user", "content": message}]
        budget = (lm.context_length or 0) - request.max_new_tokens
        try:
            if lm.context_length:
                sent, left_out = fit_messages(messages, lambda ms: len(lm.encode(ms)), budget)
            else:
                sent, left_out = messages, 0
            if left_out:
                progress.note(f"context full: the oldest {left_out} messages are left out of what the model sees")
            ids = lm.encode(sent)
            lm.check_fits(len(ids))
        except ContextError as err:
            if on_error is None:
                raise
            on_error(err)
            continue
        turn = history.answers
        seed = None if request.seed is None else (request.seed + turn) % 2**32
        completion = lm.complete(ids, request, seed=seed, on_text=on_text, left_out=left_out)
        history.messages = messages + [{"role": "assistant", "content": completion.text}]
        if history_path is not None:
            write_history(history_path, history)
        on_answer(completion, turn)
    return history
