"""Text completion and chat with the StableLM family through transformers, streamed as it is generated."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .. import hub
from ..console import Progress
from ..devices import Workload, torch_dtype, transformers_load_kwargs
from ..errors import StablekitError, UsageError
from ..layouts import json_object
from ..params import TextRequest
from ..planning import Plan, plan_device
from ..registry import ModelSpec
from ..sink import Output, Written
from .text_quantize import quantize_int8, with_quantize
from .text_stream import DECODE, STOP_MARGIN_TOKENS, IncrementalDecoder, StopFilter, cut_at_stop, token_queue_class

EXTENSIONS = (".txt",)


class ContextError(UsageError):
    """A prompt (or a conversation's newest message) that cannot fit in the model's context."""

_CHARS_PER_TOKEN = 3  # a cautious guess at the prompt's length before the tokenizer is loaded


# --- requests -------------------------------------------------------------------------------------


def context_length(spec: ModelSpec, folder: Path | None = None) -> int | None:
    """The model's context in tokens: the catalog's figure, or the folder's config for a model not in it."""
    if spec.origin in ("local", "hub") and folder is not None:
        value = json_object(folder / "config.json").get("max_position_embeddings")
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
    from ..quiet import import_quietly

    import_quietly("transformers")


def _load_error(spec: ModelSpec, folder: Path, err: Exception) -> StablekitError:
    first = (str(err).splitlines() or [type(err).__name__])[0]
    if "trust_remote_code" in str(err):
        return StablekitError(f"{spec.id}: loading it runs Python code that ships with the model",
                              hint=f"pass --trust-remote-code if you trust the code in {folder} (it runs on "
                                   "your machine with your permissions)")
    return StablekitError(f"{spec.id}: cannot load the model from {folder}: {first}",
                          hint=f"if a download was interrupted, run 'stablekit models pull {spec.id}'")


def _refuse_own_code(spec: ModelSpec, folder: Path) -> None:
    """A folder whose config maps to its own Python classes runs that code: only when the user asked for it."""
    if json_object(folder / "config.json").get("auto_map"):  # (a bad file: the loader's own error says so)
        raise StablekitError(f"{spec.id}: the model needs its repository's own code (auto_map); stablekit never "
                             "runs code from model repositories unless asked",
                             hint=f"pass --trust-remote-code if you trust the code in {folder} (it runs on your "
                                  "machine with your permissions)")


class TextModel:
    """A tokenizer at once and the weights on first use, so prompts are checked before the slow part."""

    def __init__(self, plan: Plan, *, progress: Progress = Progress(), raw: bool = False) -> None:
        _quiet_transformers()
        from transformers import AutoTokenizer

        self.spec, self.plan, self.progress = plan.spec, plan.device_plan, progress
        self.trust_remote_code = plan.request.trust_remote_code
        self.quantize = plan.request.quantize
        self.folder = hub.ensure_local(self.spec)
        if not self.trust_remote_code:
            _refuse_own_code(self.spec, self.folder)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder, local_files_only=True,
                                                           trust_remote_code=self.trust_remote_code)
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

        from .. import weights_cache

        plan = self.plan
        cache_limit = weights_cache.budget()
        self.progress.stage(f"Loading {self.spec.id} ({plan.dtype} on {plan.device}, offload {plan.offload})")
        # Converted weights are kept and reused for a model loaded whole (offloading spreads it over devices) and
        # of a class transformers has itself (never a repository's own code).
        keepable = (weights_cache.convertible_model(self.folder, plan.dtype)
                    if cache_limit and plan.offload == "none" and not self.trust_remote_code else None)
        kept = weights_cache.load_kept([keepable], torch_dtype(plan), self.progress) if keepable else {}
        model = kept.get("model")
        if model is None:
            try:
                model = AutoModelForCausalLM.from_pretrained(self.folder, local_files_only=True,
                                                             dtype=torch_dtype(plan),
                                                             trust_remote_code=self.trust_remote_code,
                                                             **transformers_load_kwargs(plan))
            except (OSError, ValueError) as err:
                raise _load_error(self.spec, self.folder, err) from err
            if keepable:
                weights_cache.keep({"model": model}, [keepable], self.spec.id, cache_limit, self.progress)
        if plan.offload == "none":  # accelerate's device_map has placed an offloaded model already
            model.to(plan.device)
        if self.quantize == "int8":
            model = quantize_int8(model)
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
        TokenQueue = token_queue_class()
        cancel = threading.Event()
        stops = [s for s in request.stop if s]
        window = max((len(s) for s in stops), default=0) + STOP_MARGIN_TOKENS

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool, device=input_ids.device)

        class StopStrings(StoppingCriteria):
            """True once a stop string appears in the generated text (decoded like the final text)."""

            def __call__(self, input_ids, scores, **kwargs):
                tails = input_ids[:, len(ids):][:, -window:].tolist()
                done = [any(s in tokenizer.decode(tail, **DECODE) for s in stops) for tail in tails]
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

        decoder = IncrementalDecoder(lambda part: tokenizer.decode(part, **DECODE))
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
            text, stop = cut_at_stop(tokenizer.decode(new_ids, **DECODE), stops)
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




def plan(job, hardware) -> Plan:
    validate(job.request, job.spec)
    return with_quantize(plan_device(job, workload(job.request, job.spec), hardware))


def session_key(plan: Plan) -> tuple:
    p = plan.device_plan
    return ("text", plan.spec.id, plan.spec.revision, plan.request.raw, plan.request.trust_remote_code, p.device,
            p.dtype, p.offload, plan.request.quantize)


def load(plan: Plan, progress: Progress = Progress()) -> TextSession:
    """The tokenizer now; the weights on first use (so a prompt that cannot fit fails before the slow part)."""
    return TextSession(TextModel(plan, progress=progress, raw=plan.request.raw))


class TextSession:
    """A loaded text model: one completion per job, streamed to a sink that shows text as it comes."""

    def __init__(self, lm: TextModel) -> None:
        self.lm = lm

    def close(self) -> None:
        self.lm = None

    def run(self, plan: Plan, sink, inputs: dict | None = None) -> None:
        request, lm = plan.request, self.lm
        ids = lm.encode(lm.messages(request))
        lm.check_fits(len(ids))
        completion = lm.complete(ids, request, seed=request.seed, on_text=sink.stream if sink.streams_text else None)
        params = {**plan.job.to_dict(), "model": plan.spec.id, "finish_reason": completion.finish_reason,
                  "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens}

        def write(path: Path, overwrite: bool) -> Written:
            from ..outputs import write_atomic

            return Written(write_atomic(path, lambda tmp: tmp.write_text(completion.text, encoding="utf-8"),
                                        overwrite=overwrite))

        sink.emit(plan.job, Output("text", ".txt", write, params, plan, lm.folder, seed=request.seed,
                                   name=request.prompt, value=completion, info=completion.to_dict()))
