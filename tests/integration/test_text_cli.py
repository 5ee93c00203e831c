"""`stablekit text` and `stablekit chat` end to end on tiny-lm (a random-weight StableLM with a chat template).

Random weights may end an answer at once, so runs that need text set --min-tokens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys

import pytest

from conftest import run_cli

TINY = ("--model", "tiny-lm")
LONG = ("--min-tokens", "24", "--max-tokens", "24")


def text_json(*args: str, input: str | None = None) -> dict:
    result = run_cli("text", *args, "--json", input=input)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


_REFERENCE: dict = {}


@pytest.fixture
def reference() -> dict:
    """The answer to 'Hello there' with seed 3, not streamed (made once, inside a test's hermetic home)."""
    if not _REFERENCE:
        _REFERENCE.update(text_json("Hello there", *TINY, *LONG, "--seed", "3"))
    return _REFERENCE


def test_streamed_text_equals_the_json_text_and_the_seed_repeats_it(reference):
    assert reference["model"] == "tiny-lm" and reference["seed"] == 3
    assert reference["completion_tokens"] == 24 and reference["finish_reason"] == "length"
    assert reference["prompt_tokens"] > 2 and reference["stop_sequence"] is None
    assert reference["seconds"] > 0 and reference["tokens_per_second"] > 0
    assert reference["text"], "24 tokens of random weights decode to some text"

    streamed = run_cli("text", "Hello there", *TINY, *LONG, "--seed", "3")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == reference["text"] + "\n"
    assert re.search(r"24 tokens in [\d.]+ s \([\d.]+ tokens/s\); prompt \d+ tokens; finished: length",
                     streamed.stderr), streamed.stderr

    from_stdin = text_json("-", *TINY, *LONG, "--seed", "3", input="Hello there\n")
    assert from_stdin["text"] == reference["text"], "a piped prompt is the same prompt (final newline dropped)"
    other = text_json("Hello there", *TINY, *LONG, "--seed", "4")
    assert other["text"] != reference["text"], "another seed gives other text"


def test_stop_strings_end_the_answer_and_are_left_out(reference):
    text = reference["text"]
    found = re.search(r"[A-Za-z0-9]{2}", text[3:])
    assert found, f"no printable pair to stop at in {text!r}"
    stop = found.group()
    before = text[:text.index(stop)]

    stopped = text_json("Hello there", *TINY, *LONG, "--seed", "3", "--stop", stop, "--stop", "never-there")
    assert stopped["text"] == before
    assert stopped["finish_reason"] == "stop" and stopped["stop_sequence"] == stop
    assert stopped["completion_tokens"] < 24, "generation ended at the stop string"

    streamed = run_cli("text", "Hello there", *TINY, *LONG, "--seed", "3", "--stop", stop, "-q")
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == before + "\n" and streamed.stderr == ""


def test_piped_chat_answers_each_line_and_history_round_trips(tmp_path):
    chat = ("chat", *TINY, "--min-tokens", "6", "--max-tokens", "6")
    whole = tmp_path / "whole.json"
    both = run_cli(*chat, "--seed", "7", "--history", str(whole), input="Hi there!\n\nWhat did I say?\n")
    assert both.returncode == 0, both.stderr
    saved = json.loads(whole.read_text())
    assert saved["format"] == "stablekit-chat" and saved["model"] == "tiny-lm" and saved["seed"] == 7
    roles = [(m["role"], m["content"]) for m in saved["messages"]]
    assert [r for r, _ in roles] == ["user", "assistant", "user", "assistant"]
    assert roles[0][1] == "Hi there!" and roles[2][1] == "What did I say?"  # the blank line is no turn
    answers = [content for role, content in roles if role == "assistant"]
    assert both.stdout == "".join(answer + "\n" for answer in answers), "both answers streamed, in order"
    assert both.stderr.count("6 tokens in") == 2 and both.stderr.count("Loading tiny-lm") == 1

    # The same conversation in two sessions: the second resumes model, seed and messages from the file.
    split = tmp_path / "split.json"
    first = run_cli(*chat, "--seed", "7", "--history", str(split), "--json", input="Hi there!\n")
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert record["turn"] == 0 and record["text"] == answers[0] and record["completion_tokens"] == 6
    second = run_cli("chat", "--min-tokens", "6", "--max-tokens", "6", "--history", str(split), "--json",
                     input="What did I say?\n")
    assert second.returncode == 0, second.stderr
    assert "resuming 2 messages" in second.stderr
    assert json.loads(second.stdout)["turn"] == 1
    assert json.loads(split.read_text())["messages"] == saved["messages"]


def test_system_prompt_and_chat_flag_of_text(tmp_path):
    path = tmp_path / "h.json"
    result = run_cli("text", "--chat", "First!", *TINY, "--system", "You are terse.", "--history", str(path),
                     "--min-tokens", "3", "--max-tokens", "3", "--json", input="Second\n")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["turn"] for line in result.stdout.splitlines()] == [0, 1]
    messages = json.loads(path.read_text())["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[0]["content"] == "You are terse." and messages[1]["content"] == "First!"


def test_a_conversation_longer_than_the_context_leaves_out_the_oldest_turns(tmp_path):
    path = tmp_path / "long.json"
    old = [{"role": role, "content": f"{role} message number {i} " * 8}
           for i in range(6) for role in ("user", "assistant")]
    path.write_text(json.dumps({"messages": old, "seed": 1}))
    result = run_cli("chat", *TINY, "--min-tokens", "4", "--max-tokens", "4", "--history", str(path),
                     input="and now?\n")
    assert result.returncode == 0, result.stderr
    assert re.search(r"context full: the oldest \d+ messages are left out", result.stderr), result.stderr
    messages = json.loads(path.read_text())["messages"]
    assert messages[:12] == old and messages[12]["content"] == "and now?", "the file keeps every turn"


def test_context_overflow_is_a_clear_error_not_a_crash():
    too_long = run_cli("text", "lorem ipsum " * 200, *TINY)
    assert too_long.returncode == 2, too_long.stderr
    assert re.search(r"Error: the prompt is \d+ tokens and tiny-lm reads at most 256", too_long.stderr)
    assert "Traceback" not in too_long.stderr and "Loading" not in too_long.stderr, "checked before loading"
    chat = run_cli("chat", *TINY, "--max-tokens", "8", input="lorem ipsum " * 200 + "\n")
    assert chat.returncode == 2 and "Error: the prompt is" in chat.stderr and "Traceback" not in chat.stderr


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(tmp_path):
    path = tmp_path / "h.json"
    argv = [sys.executable, "-m", "stablekit", "chat", *TINY, "--seed", "1", "--min-tokens", "200",
            "--max-tokens", "200", "--history", str(path)]
    process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=os.environ.copy())
    process.stdin.write(b"Tell me a long story\n")
    process.stdin.flush()
    assert os.read(process.stdout.fileno(), 1), "the answer streams before it is finished"
    process.send_signal(signal.SIGINT)
    process.stdin.write(b"Shorter, please\n")
    process.stdin.close()
    process.stdin = None
    _, err = process.communicate(timeout=300)
    err = err.decode()
    assert process.returncode == 0, err
    assert "finished: interrupted" in err and "200 tokens in" in err and "Traceback" not in err
    messages = json.loads(path.read_text())["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant"]
    assert messages[1]["content"], "the interrupted answer keeps what was shown"


def test_ctrl_c_ends_text_with_what_was_written():
    argv = [sys.executable, "-m", "stablekit", "text", "Go on", *TINY, "--seed", "1", "--min-tokens", "240",
            "--max-tokens", "240"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    first = os.read(process.stdout.fileno(), 1)  # unbuffered: communicate() reads the rest
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 130, err.decode()
    assert (first + out).decode().endswith("\n") and "finished: interrupted" in err.decode()


def test_remote_code_runs_only_with_trust_remote_code(tmp_path, reference):
    """A model folder whose config points at its own Python class loads only with --trust-remote-code."""
    import shutil

    from stablekit import hub
    from stablekit.registry import load_registry

    folder = tmp_path / "custom-lm"
    shutil.copytree(hub.ensure_local(load_registry().get("tiny-lm")), folder)
    (folder / "modeling_custom.py").write_text(
        "from transformers import StableLmConfig, StableLmForCausalLM\n\n\n"
        "class CustomConfig(StableLmConfig):\n    model_type = 'custom-lm'\n\n\n"
        "class CustomForCausalLM(StableLmForCausalLM):\n    config_class = CustomConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="custom-lm", architectures=["CustomForCausalLM"],
                  auto_map={"AutoConfig": "modeling_custom.CustomConfig",
                            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))

    refused = run_cli("text", "Hello there", "--model", str(folder), *LONG, "--seed", "3")
    assert refused.returncode == 1 and "--trust-remote-code" in refused.stderr, refused.stderr
    assert refused.stdout == ""
    trusted = text_json("Hello there", "--model", str(folder), *LONG, "--seed", "3", "--trust-remote-code")
    assert trusted["text"] == reference["text"], "the same weights through the custom class"


def test_dry_run_plans_without_loading_and_presets_apply(tmp_path):
    preset = tmp_path / "terse.toml"
    preset.write_text('command = "text"\nstop = ["\\n\\n", "###"]\ntemperature = 0.0\nmax_new_tokens = 64\n')
    result = run_cli("text", "Hello", "--model", "stablelm-2-12b-chat", "--vram", "100", "--dry-run", "--json",
                     "--preset", str(preset), "--max-tokens", "100")
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["model"] == "stablelm-2-12b-chat" and plan["files"]["status"] == "missing"
    request = plan["request"]
    assert request["stop"] == ["\n\n", "###"] and request["temperature"] == 0.0 and request["max_new_tokens"] == 100
    assert request["top_p"] == 0.95, "the model's default where neither flag nor preset sets it"
    assert plan["workload"] == "102 tokens" and plan["plan"]["dtype"]


@pytest.mark.parametrize(("args", "code", "needle"), [
    (("chat", "--model", "stablelm-2-1.6b"), 2, "base model"),
    (("text", "hi", *TINY, "--temperature", "-1"), 2, "--temperature -1"),
    (("text", "hi", *TINY, "--max-tokens", "300"), 2, "reads at most 256 tokens"),
    (("text", "hi", *TINY, "--history", "h.json"), 2, "--history is for conversations"),
    (("text", "-", *TINY), 2, "the prompt is empty"),
])
def test_bad_input_is_one_line_and_exit_2(args, code, needle):
    result = run_cli(*args, input="")
    assert result.returncode == code, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_broken_history_file_is_an_input_error(tmp_path):
    path = tmp_path / "h.json"
    path.write_text("{oops")
    result = run_cli("chat", *TINY, "--history", str(path), input="hi\n")
    assert result.returncode == 2 and "is not a chat history" in result.stderr
    assert path.read_text() == "{oops", "the file is left as it was"


@pytest.mark.parametrize("command", ["text", "chat"])
def test_help_imports_no_ml_library(command):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "stablekit", command, "--help"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and "Examples" in result.stdout
    modules = set(re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\w+)", result.stderr, flags=re.M))
    assert "stablekit" in modules and not modules & {"torch", "transformers", "numpy"}


def test_readme_offline_text_command_works_as_written(tmp_path):
    import shlex

    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("stablekit text")
                   and line.endswith("--model tiny-lm"))
    result = run_cli(*shlex.split(command)[1:], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("\n") and "tokens/s" in result.stderr
