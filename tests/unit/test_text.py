"""The parts of `stablekit text` / `chat` that need no model: stop strings, context fitting, history files."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from stablekit.engines.chat import History, fit_messages, read_history, write_history
from stablekit.engines.text import generate_kwargs, validate, workload
from stablekit.engines.text_stream import IncrementalDecoder, StopFilter, cut_at_stop
from stablekit.errors import InputError, UsageError
from stablekit.jobs import job_from, with_seed
from stablekit.params import TextRequest
from stablekit.registry import load_registry


@pytest.mark.parametrize(("text", "stops", "expected"), [
    ("hello world", ["wor"], ("hello ", "wor")),
    ("hello world", ["xyz"], ("hello world", None)),
    ("hello world", [], ("hello world", None)),
    ("a b c b", ["b"], ("a ", "b")),  # the first occurrence
    ("abcd", ["abcd", "bc"], ("a", "bc")),  # the one completed first ends the answer
    ("abcd", ["bcd", "abcd"], ("", "abcd")),  # same end: the earlier start
    ("stop", ["stop"], ("", "stop")),
])
def test_cut_at_stop(text, stops, expected):
    assert cut_at_stop(text, stops) == expected


def stream(chunks: list[str], stops: list[str]) -> tuple[str, str | None]:
    shown = StopFilter(stops)
    out = "".join(shown.feed(chunk) for chunk in chunks)
    return out + shown.flush(), shown.matched


def test_stop_filter_holds_back_a_possible_stop_and_releases_it():
    shown = StopFilter(["###"])
    assert shown.feed("answer #") == "answer "
    assert shown.feed("#") == ""
    assert shown.feed(" more") == "## more"  # it was not a stop after all
    assert shown.feed("###tail") == ""
    assert shown.matched == "###" and shown.feed("later") == ""


@pytest.mark.parametrize("seed", range(40))
def test_streamed_text_equals_text_cut_at_once(seed):
    """However the text is chunked, streaming shows exactly what cutting the whole text gives."""
    rng = random.Random(seed)
    text = "".join(rng.choice("ab \n") for _ in range(rng.randint(0, 30)))
    stops = ["".join(rng.choice("ab \n") for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(0, 3))]
    cuts = sorted(rng.sample(range(len(text) + 1), k=min(len(text) + 1, rng.randint(0, 8))))
    chunks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    assert stream(chunks, stops) == cut_at_stop(text, stops)


def byte_decode(ids: list[int]) -> str:
    """A byte-level decoder, like StableLM 2's: one token per byte, split characters shown as U+FFFD."""
    return bytes(ids).decode("utf-8", errors="replace")


@pytest.mark.parametrize("seed", range(40))
def test_incremental_decoding_joins_to_the_whole_decode(seed):
    """Characters split across tokens (and invalid bytes, which random weights produce) come out whole."""
    rng = random.Random(seed)
    data = bytearray("".join(rng.choice(["a", " ", "\n", "é", "基", "🙂"]) for _ in range(20)).encode())
    for _ in range(rng.randint(0, 3)):  # stray bytes: a lone continuation byte, a cut-off lead byte
        data.insert(rng.randint(0, len(data)), rng.choice([0x9F, 0xE5, 0xF0]))
    decoder = IncrementalDecoder(byte_decode)
    pieces, position = [], 0
    while position < len(data):
        step = rng.randint(1, 4)
        pieces.append(decoder.add(list(data[position:position + step])))
        position += step
    pieces.append(decoder.flush())
    assert "".join(pieces) == byte_decode(list(data))


def test_incremental_decoding_holds_back_a_split_character():
    decoder = IncrementalDecoder(byte_decode)
    assert decoder.add(list(b"ok ")) == "ok "
    assert decoder.add(list("基".encode())[:2]) == ""
    assert decoder.add(list("基".encode())[2:]) == "基"
    assert decoder.flush() == ""


def words(messages):
    return sum(len(m["content"].split()) for m in messages)


def conversation(*contents, system=None):
    messages = [{"role": "system", "content": system}] if system else []
    for i, content in enumerate(contents):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": content})
    return messages


def test_fit_messages_leaves_out_oldest_exchanges_and_keeps_system_and_newest():
    messages = conversation("one two", "three four", "five six", "seven eight", "nine ten", system="be brief")
    kept, left_out = fit_messages(messages, words, budget=8)
    assert left_out == 2
    assert kept == [messages[0], *messages[3:]]  # system, then the newest exchange and question
    assert fit_messages(messages, words, budget=7) == ([messages[0], messages[-1]], 4)
    assert fit_messages(messages, words, budget=100) == (messages, 0)


def test_fit_messages_stops_at_the_newest_message():
    messages = conversation("a", "b", "a very long newest question indeed")
    kept, left_out = fit_messages(messages, words, budget=2)
    assert kept == messages[-1:] and left_out == 2  # the caller reports that this alone does not fit


def test_fit_messages_handles_a_history_starting_with_an_answer():
    messages = [{"role": "assistant", "content": "hello there"}, *conversation("x y z", "p q", "r")]
    assert fit_messages(messages, words, budget=6) == (messages[1:], 1)
    assert fit_messages(messages, words, budget=3) == (messages[-1:], 3)


def test_history_round_trip(tmp_path):
    path = tmp_path / "chats" / "h.json"
    history = History(messages=conversation("hi", "hello ✓", system="sys"), model="tiny-lm", seed=7)
    assert write_history(path, history) == path
    assert read_history(path) == history
    data = json.loads(path.read_text())
    assert data["format"] == "stablekit-chat" and data["messages"][2]["content"] == "hello ✓"
    assert not list(path.parent.glob(".*partial*")), "no temporary file is left behind"


def test_history_accepts_a_bare_message_list_and_a_missing_file(tmp_path):
    path = tmp_path / "h.json"
    assert read_history(path) is None
    path.write_text(json.dumps(conversation("hi")))
    assert read_history(path) == History(messages=conversation("hi"))


@pytest.mark.parametrize("content", ["{not json", '{"messages": [{"role": "robot", "content": "x"}]}',
                                     '{"messages": "hi"}', "42"])
def test_history_that_is_not_one_is_a_usage_error(tmp_path, content):
    path = tmp_path / "h.json"
    path.write_text(content)
    with pytest.raises(InputError, match="is not a chat history"):
        read_history(path)


@pytest.fixture(scope="module")
def specs():
    registry = load_registry()
    return {name: registry.resolve(name, "text") for name in ("tiny-lm", "stablelm-2-1.6b")}


@pytest.mark.parametrize(("changes", "message"), [
    ({"prompt": "  "}, "the prompt is empty"),
    ({"max_new_tokens": 0}, "--max-tokens 0"),
    ({"max_new_tokens": 256}, "reads at most 256 tokens"),
    ({"min_new_tokens": 40, "max_new_tokens": 32}, "--min-tokens 40"),
    ({"temperature": -0.5}, "--temperature"),
    ({"top_p": 0.0}, "--top-p"),
    ({"top_k": -1}, "--top-k"),
    ({"repetition_penalty": 0.0}, "--repetition-penalty"),
    ({"stop": ["ok", ""]}, "stop string must not be empty"),
])
def test_validate_rejects_bad_requests(specs, changes, message):
    request = replace(TextRequest(prompt="hi", model="tiny-lm", max_new_tokens=32), **changes)
    with pytest.raises(UsageError, match=message):
        validate(request, specs["tiny-lm"])


def test_base_models_neither_chat_nor_take_a_system_prompt(specs):
    base = specs["stablelm-2-1.6b"]
    validate(TextRequest(prompt="Once upon a time"), base)
    with pytest.raises(UsageError, match="base model"):
        validate(TextRequest(prompt=""), base, chat=True)
    with pytest.raises(UsageError, match="base model"):
        validate(TextRequest(prompt="hi", system="be kind"), base)
    validate(TextRequest(prompt="", max_new_tokens=32), specs["tiny-lm"], chat=True)


def test_workload_estimates_prompt_and_answer_within_the_context(specs):
    tiny = specs["tiny-lm"]
    assert workload(TextRequest(prompt="x" * 30, max_new_tokens=32), tiny).tokens == 10 + 32
    assert workload(TextRequest(prompt="x" * 3000, max_new_tokens=32), tiny).tokens == 256
    assert workload(TextRequest(prompt=""), tiny, chat=True).tokens == 256


def test_generate_kwargs_sampling_and_greedy():
    sampled = generate_kwargs(TextRequest(prompt="", temperature=0.7, top_p=0.9, top_k=0, min_new_tokens=4), 16)
    assert sampled == {"max_new_tokens": 16, "min_new_tokens": 4, "repetition_penalty": 1.0, "do_sample": True,
                       "temperature": 0.7, "top_p": 0.9, "top_k": 0}
    greedy = generate_kwargs(TextRequest(prompt="", temperature=0.0), 8)
    assert greedy["do_sample"] is False and "min_new_tokens" not in greedy
    greedy_job = job_from("text", {"prompt": "hi", "model": "tiny-lm", "temperature": 0.0})
    assert with_seed(greedy_job).seed is None  # greedy needs no seed
    assert with_seed(job_from("text", {"prompt": "hi", "model": "tiny-lm"})).seed is not None


def test_a_model_larger_than_the_gpu_loads_through_accelerates_device_map(monkeypatch, tmp_path):
    """The plan's offload reaches from_pretrained as device_map + max_memory, and nothing moves it after."""
    import transformers

    from stablekit.console import Progress
    from stablekit.devices import Hardware, Workload, plan
    from stablekit.engines import text as engine
    from stablekit.planning import Plan

    spec = load_registry().get("stablelm-2-12b-chat")
    hardware = Hardware("cuda", "test GPU", 8.0, 8.0, 64.0, 60.0, (8, 9), 1)
    device_plan = plan(spec, hardware, Workload(tokens=1024))
    assert device_plan.offload == "model" and device_plan.dtype == "bfloat16"

    calls: dict = {}

    class FakeModel:
        def to(self, device):
            calls["moved_to"] = device
            return self

        def eval(self):
            return self

    class FakeTokenizer:
        chat_template = "{{ messages }}"

    monkeypatch.setattr(engine.hub, "ensure_local", lambda spec: tmp_path)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda folder, **kw: FakeTokenizer())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda folder, **kw: calls.update(kw) or FakeModel())
    job = job_from("text", {"prompt": "hi", "model": "stablelm-2-12b-chat"})
    lm = engine.TextModel(Plan(job, hardware, device_plan, Workload(tokens=1024), spec), progress=Progress())
    assert lm.chat_template and lm.context_length == 4096
    lm.load()
    assert calls["device_map"] == "auto" and calls["max_memory"][0].endswith("MiB") and calls["max_memory"]["cpu"]
    assert calls["trust_remote_code"] is False and calls["local_files_only"] is True
    assert str(calls["dtype"]) == "torch.bfloat16" and "moved_to" not in calls
