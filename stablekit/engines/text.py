"""Text completion and chat with the StableLM family through transformers, streamed as it is generated."""

from __future__ import annotations

import json
import math
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__, hub
from ..console import Progress
from ..devices import Workload, torch_dtype, transformers_load_kwargs
from ..errors import InputError, StablekitError, UsageError
from ..outputs import write_atomic
from ..params import TextRequest
from ..planning import Prepared
from ..registry import ModelSpec

HISTORY_FORMAT = "stablekit-chat"
HISTORY_VERSION = 1
ROLES = ("system", "user", "assistant")
_CHARS_PER_TOKEN = 3  # a cautious guess at the prompt's length before the tokenizer is loaded
_DECODE = {"skip_special_tokens": True, "clean_up_tokenization_spaces": False}  # streamed == decoded at once
_STOP_MARGIN_TOKENS = 8  # tokens decoded beyond a stop string's length when looking for it
_STREAM_INTERVAL_S = 0.02  # the reader wakes at most 50 times a second: invisible to a reader, cheap for the GIL


# --- requests -------------------------------------------------------------------------------------


def context_length(spec: ModelSpec, folder: Path | None = None) -> int | None:
    """The model's context in tokens: the catalog's figure, or the folder's config for a model not in it."""
    if spec.origin in ("local", "hub") and folder is not None:
        try:
            value = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
        except (OSError, ValueError):
            value = None
        if isinstance(value, int) and value > 0:
            return value
    value = spec.limits.get("context_length")
    return int(value) if value else None


def workload(request: TextRequest, spec: ModelSpec, *, chat: bool = False) -> Workload:
    """Tokens the KV cache will hold: the whole context for a chat, an estimate of prompt + answer otherwise."""
    context = context_length(spec)
    if chat:
        return Workload(tokens=context or request.max_new_tokens)
    guess = math.ceil(len(request.prompt + (request.system or "")) / _CHARS_PER_TOKEN) + request.max_new_tokens
    return Workload(tokens=min(guess, context) if context else guess)


def validate(request: TextRequest, spec: ModelSpec, *, chat: bool = False) -> None:
    """Reject what generate() would choke on, before anything is loaded."""
    if "text" not in spec.tasks and "chat" not in spec.tasks:
        raise UsageError(f"{spec.id} does not generate text (it does: {', '.join(spec.tasks)})")
    catalogued = spec.origin in ("built-in", "user")
    if catalogued and (chat or request.system) and "chat" not in spec.tasks:
        what = "chat" if chat else "take --system"
        raise UsageError(f"{spec.id} is a base model: it cannot {what} (no chat template)",
                         hint="use `stablekit text` for plain completion, or a chat model such as "
                              "stablelm-2-zephyr-1.6b")
    if chat and request.raw:
        raise UsageError("--raw and chat do not mix: a chat needs the model's chat template")
    if not chat and not request.prompt.strip():
        raise UsageError("the prompt is empty")
    if request.max_new_tokens < 1:
        raise UsageError(f"--max-tokens {request.max_new_tokens}: must be at least 1")
    if not 0 <= request.min_new_tokens <= request.max_new_tokens:
        raise UsageError(f"--min-tokens {request.min_new_tokens}: must be between 0 and --max-tokens "
                         f"({request.max_new_tokens})")
    context = context_length(spec)
    if context and request.max_new_tokens >= context:
        raise UsageError(f"--max-tokens {request.max_new_tokens}: {spec.id} reads at most {context} tokens, "
                         "prompt and answer together", hint=f"use --max-tokens {context // 2} or less")
    if request.temperature < 0:
        raise UsageError(f"--temperature {request.temperature}: must not be negative (0 = greedy)")
    if not 0 < request.top_p <= 1:
        raise UsageError(f"--top-p {request.top_p}: must be in (0, 1]")
    if request.top_k < 0:
        raise UsageError(f"--top-k {request.top_k}: must not be negative (0 = off)")
    if request.repetition_penalty <= 0:
        raise UsageError(f"--repetition-penalty {request.repetition_penalty}: must be positive (1 = off)")
    if any(stop == "" for stop in request.stop):
        raise UsageError("--stop '': a stop string must not be empty")


def sampling(request: TextRequest) -> bool:
    return request.temperature > 0


def with_seed(request: TextRequest) -> TextRequest:
    """A request whose seed is fixed (the user's, or one drawn now); greedy decoding needs none."""
    if request.seed is not None or not sampling(request):
        return request
    return replace(request, seed=secrets.randbelow(2**32))


def generate_kwargs(request: TextRequest, max_new_tokens: int) -> dict[str, Any]:
    """The generate() arguments of a request; temperature 0 means greedy."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "repetition_penalty": request.repetition_penalty}
    if request.min_new_tokens:
        kwargs["min_new_tokens"] = min(request.min_new_tokens, max_new_tokens)
    if sampling(request):
        kwargs.update(do_sample=True, temperature=request.temperature, top_p=request.top_p, top_k=request.top_k)
    else:  # the defaults, so a model's sampling generation_config raises no "flags ignored" notice
        kwargs.update(do_sample=False, temperature=1.0, top_p=1.0, top_k=50)
    return kwargs


# --- stop strings (pure) --------------------------------------------------------------------------


def cut_at_stop(text: str, stops: Iterable[str]) -> tuple[str, str | None]:
    """The text before the first stop string to be completed (earliest end, then earliest start), and which."""
    best: tuple[int, int, str] | None = None
    for stop in stops:
        start = text.find(stop) if stop else -1
        if start != -1:
            key = (start + len(stop), start, stop)
            best = key if best is None or key < best else best
    return (text, None) if best is None else (text[:best[1]], best[2])


def _partial_stop_length(text: str, stops: Iterable[str]) -> int:
    """Length of the longest end of `text` that could be the beginning of a stop string."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class StopFilter:
    """Passes streamed text through, holding back what may begin a stop string and ending at the first one.

    Joining what feed() and flush() return gives exactly cut_at_stop(whole text)[0].
    """

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = [stop for stop in stops if stop]
        self.matched: str | None = None
        self._held = ""

    def feed(self, chunk: str) -> str:
        if self.matched is not None:
            return ""
        text = self._held + chunk
        before, stop = cut_at_stop(text, self.stops)
        if stop is not None:
            self.matched, self._held = stop, ""
            return before
        keep = _partial_stop_length(text, self.stops)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def flush(self) -> str:
        """What was held back: the stream ended without completing a stop string."""
        held, self._held = self._held, ""
        return held


class IncrementalDecoder:
    """Text deltas of a growing token sequence, decoding only its last few tokens each time.

    A delta is released when the text decoded so far ends in a whole character (not U+FFFD, the mark of a
    character split across tokens), so joining every add() and the final flush() gives decode(all ids). The
    window starts a little before the new tokens, as text-generation-inference does, for decoders whose
    output depends on the token before.
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def add(self, ids: list[int]) -> str:
        self.ids.extend(ids)
        before = self.decode(self.ids[self._prefix:self._read])
        text = self.decode(self.ids[self._prefix:])
        if len(text) > len(before) and not text.endswith("\ufffd"):
            self._prefix, self._read = self._read, len(self.ids)
            return text[len(before):]
        return ""

    def flush(self) -> str:
        before = self.decode(self.ids[self._prefix:self._read])
        text = self.decode(self.ids[self._prefix:])
        self._prefix = self._read = len(self.ids)
        return text[len(before):]


def _token_queue_class():
    """A generate() streamer that only queues token ids: decoding and printing happen in the reading thread."""
    from transformers.generation.streamers import BaseStreamer

    class TokenQueue(BaseStreamer):
        def __init__(self) -> None:
            self.queue: queue.SimpleQueue = queue.SimpleQueue()
            self._prompt = True

        def put(self, value) -> None:
            if self._prompt:  # generate() hands over the prompt first
                self._prompt = False
                return
            self.queue.put(value.reshape(-1).tolist())

        def end(self) -> None:
            self.queue.put(None)

        def drain(self, on_ids: Callable[[list[int]], None]) -> None:
            """Hand over token ids until the end, in batches: a fast model is not slowed by a wake-up per token."""
            while True:
                batch: list[int] = []
                item = self.queue.get()
                while item is not None:
                    batch.extend(item)
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    on_ids(batch)
                if item is None:
                    return
                time.sleep(_STREAM_INTERVAL_S)

    return TokenQueue


# --- conversations (pure) -------------------------------------------------------------------------


class ContextError(UsageError):
    """The prompt (or the newest message) alone does not fit the model's context."""


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


# --- generation -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # stop (end of text or a stop string) | length | interrupted
    stop_sequence: str | None
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    seed: int | None
    left_out: int = 0  # messages of the conversation the model did not see (context full)

    @property
    def tokens_per_second(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 4)
        data["tokens_per_second"] = round(self.tokens_per_second, 2)
        return data

    def summary(self) -> str:
        reason = self.finish_reason + (f" at {self.stop_sequence!r}" if self.stop_sequence else "")
        return (f"{self.completion_tokens} tokens in {self.seconds:.3f} s ({self.tokens_per_second:.1f} tokens/s); "
                f"prompt {self.prompt_tokens} tokens; finished: {reason}")


def _quiet_transformers() -> None:
    """transformers' own notices and progress bars stay out of a CLI's stderr (diffusers is not imported)."""
    import logging
    import warnings

    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("accelerate").setLevel(logging.ERROR)
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(transformers|accelerate)\..*")


def _load_error(spec: ModelSpec, folder: Path, err: Exception) -> StablekitError:
    first = (str(err).splitlines() or [type(err).__name__])[0]
    if "trust_remote_code" in str(err):
        return StablekitError(f"{spec.id}: loading it runs Python code that ships with the model",
                              hint=f"pass --trust-remote-code if you trust the code in {folder} (it runs on "
                                   "your machine with your permissions)")
    return StablekitError(f"{spec.id}: cannot load the model from {folder}: {first}",
                          hint=f"if a download was interrupted, run 'stablekit models pull {spec.id}'")


class TextModel:
    """A tokenizer at once and the weights on first use, so prompts are checked before the slow part."""

    def __init__(self, prepared: Prepared, *, trust_remote_code: bool = False, progress: Progress = Progress(),
                 raw: bool = False) -> None:
        _quiet_transformers()
        from transformers import AutoTokenizer

        self.spec, self.plan, self.progress = prepared.spec, prepared.plan, progress
        self.trust_remote_code = trust_remote_code
        self.folder = hub.ensure_local(self.spec)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True,
                                                           trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise _load_error(self.spec, self.folder, err) from err
        has_template = bool(getattr(self.tokenizer, "chat_template", None))
        chat_model = "chat" in self.spec.tasks or self.spec.origin in ("local", "hub")
        self.chat_template = has_template and chat_model and not raw
        self.context_length = context_length(self.spec, self.folder)
        self._model = None

    def load(self):
        """The model's weights, loaded now if they are not yet."""
        return self.model

    @property
    def model(self):
        if self._model is None:
            self._model = self._load_model()
        return self._model

    def _load_model(self):
        from transformers import AutoModelForCausalLM

        plan = self.plan
        self.progress.stage(f"Loading {self.spec.id} ({plan.dtype} on {plan.device}, offload {plan.offload})")
        try:
            model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True, dtype=torch_dtype(plan),
                                                         trust_remote_code=self.trust_remote_code,
                                                         **transformers_load_kwargs(plan))
        except (OSError, ValueError) as err:
            raise _load_error(self.spec, self.folder, err) from err
        if plan.offload == "none":  # accelerate's device_map has placed an offloaded model already
            model.to(plan.device)
        return model.eval()

    def encode(self, prompt: str | list[dict[str, str]]) -> list[int]:
        """Token ids of a plain prompt, or of messages laid out by the chat template (ready for the answer)."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])
        text = self.tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def messages(self, request: TextRequest) -> str | list[dict[str, str]]:
        """What `text` sends: the chat template around the prompt for chat models, else the prompt itself."""
        if not self.chat_template:
            if request.system:
                raise UsageError(f"--system needs a chat template, and {self.spec.id} is used for plain completion",
                                 hint="drop --system (or --raw)")
            return request.prompt
        return ([{"role": "system", "content": request.system}] if request.system else []) + [
            {"role": "user", "content": request.prompt}]

    def check_fits(self, prompt_tokens: int) -> None:
        """A clear error, before any weights are loaded, for a prompt that leaves no room for an answer."""
        context = self.context_length
        if context is not None and prompt_tokens >= context:
            raise ContextError(f"the prompt is {prompt_tokens} tokens and {self.spec.id} reads at most {context}",
                               hint="shorten the prompt, or use a model with a longer context")

    def answer_room(self, prompt_tokens: int, request: TextRequest) -> int:
        """max_new_tokens, cut (and said so) to what the context leaves after the prompt."""
        self.check_fits(prompt_tokens)
        context = self.context_length
        if context is None or prompt_tokens + request.max_new_tokens <= context:
            return request.max_new_tokens
        room = context - prompt_tokens
        self.progress.note(f"answer limited to {room} tokens: the prompt takes {prompt_tokens} of the "
                           f"{context}-token context")
        return room

    def complete(self, ids: list[int], request: TextRequest, *, seed: int | None,
                 on_text: Callable[[str], None] | None = None, left_out: int = 0) -> Completion:
        """Generate after `ids`; with `on_text`, stream the text as it comes. Ctrl-C ends the answer early."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        model, tokenizer = self.model, self.tokenizer
        max_new = self.answer_room(len(ids), request)
        TokenQueue = _token_queue_class()
        cancel = threading.Event()
        stops = [s for s in request.stop if s]
        window = max((len(s) for s in stops), default=0) + _STOP_MARGIN_TOKENS

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        class StopStrings(StoppingCriteria):
            """True once a stop string appears in the generated text (decoded like the final text)."""

            def __call__(self, input_ids, scores, **kwargs):
                tails = input_ids[:, len(ids):][:, -window:].tolist()
                done = [any(s in tokenizer.decode(tail, **_DECODE) for s in stops) for tail in tails]
                return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

        criteria = StoppingCriteriaList([Cancelled()] + ([StopStrings()] if stops else []))
        device = model.device
        inputs = torch.tensor([ids], dtype=torch.long, device=device)
        config = model.generation_config
        pad = config.pad_token_id if config.pad_token_id is not None else tokenizer.pad_token_id
        if pad is None:
            pad = tokenizer.eos_token_id
        streamer = TokenQueue() if on_text else None
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                start = time.perf_counter()
                output = model.generate(inputs, attention_mask=torch.ones_like(inputs), pad_token_id=pad,
                                        stopping_criteria=criteria, streamer=streamer,
                                        **generate_kwargs(request, max_new))
                result["seconds"] = time.perf_counter() - start
                result["ids"] = output[0, len(ids):].tolist()
            except BaseException as err:  # handed to the caller's thread below
                result["error"] = err
                if streamer is not None:
                    streamer.end()

        decoder = IncrementalDecoder(lambda part: tokenizer.decode(part, **_DECODE))
        shown = StopFilter(stops)
        pieces: list[str] = []

        def show(text: str) -> None:
            piece = shown.feed(text)
            if piece:
                pieces.append(piece)
                on_text(piece)

        if seed is not None:
            torch.manual_seed(seed)  # every device's generator: the same seed gives the same text
        worker = threading.Thread(target=work, name="stablekit-generate", daemon=True)
        worker.start()
        try:
            if streamer is not None:
                streamer.drain(lambda new: show(decoder.add(new)))
            while worker.is_alive():
                worker.join(0.1)
        except KeyboardInterrupt:
            cancel.set()  # generation stops after the token it is on; what came so far is kept
            if streamer is not None:
                streamer.drain(lambda new: show(decoder.add(new)))
            worker.join()
        error = result.get("error")
        if isinstance(error, torch.OutOfMemoryError):
            raise StablekitError(f"{self.spec.id} ran out of {self.plan.memory_kind} while generating "
                                 f"{len(ids)} + {max_new} tokens",
                                 hint="a smaller --max-tokens or a shorter prompt; --offload model; or --vram "
                                      "with less than was detected, to plan for less") from error
        if error is not None:
            raise error
        new_ids: list[int] = result["ids"]
        if streamer is not None:
            show(decoder.flush())
            tail = shown.flush()
            if tail:
                pieces.append(tail)
                on_text(tail)
            text, stop = "".join(pieces), shown.matched
        else:
            text, stop = cut_at_stop(tokenizer.decode(new_ids, **_DECODE), stops)
        eos = config.eos_token_id if config.eos_token_id is not None else tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos])
        if cancel.is_set():
            reason = "interrupted"
        elif stop is not None or (new_ids and new_ids[-1] in eos_ids):
            reason = "stop"
        else:
            reason = "length"
        return Completion(text=text, finish_reason=reason, stop_sequence=stop, prompt_tokens=len(ids),
                          completion_tokens=len(new_ids), seconds=result["seconds"], seed=seed, left_out=left_out)


def generate(prepared: Prepared, request: TextRequest, progress: Progress = Progress(), *,
             on_text: Callable[[str], None] | None = None, trust_remote_code: bool = False) -> Completion:
    """One completion of `request.prompt` (through the chat template for chat models), streamed to `on_text`."""
    if request.seed is None and sampling(request):
        request = with_seed(request)
        progress.note(f"seed {request.seed} (drawn; pass --seed {request.seed} to repeat)")
    lm = TextModel(prepared, trust_remote_code=trust_remote_code, progress=progress, raw=request.raw)
    ids = lm.encode(lm.messages(request))
    lm.check_fits(len(ids))
    return lm.complete(ids, request, seed=request.seed, on_text=on_text)


def chat(prepared: Prepared, request: TextRequest, turns: Iterable[str], progress: Progress = Progress(), *,
         history: History | None = None, history_path: Path | None = None,
         on_text: Callable[[str], None] | None = None,
         on_answer: Callable[[Completion, int], None] = lambda completion, turn: None,
         on_error: Callable[[StablekitError], None] | None = None,
         trust_remote_code: bool = False) -> History:
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
        request = with_seed(request)
        progress.note(f"seed {request.seed} (drawn; pass --seed {request.seed} to repeat)")
    history.model, history.seed = prepared.spec.id, request.seed
    if request.system is not None:
        history.messages = [{"role": "system", "content": request.system}] + [
            m for m in history.messages if m["role"] != "system"]
    lm = TextModel(prepared, trust_remote_code=trust_remote_code, progress=progress)
    if not lm.chat_template:
        raise UsageError(f"{prepared.spec.id} has no chat template, so it cannot chat",
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
