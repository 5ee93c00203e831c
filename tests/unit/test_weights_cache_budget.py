"""The weights cache's budget, eviction order and choice of files, without loading a model."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from stablekit import weights_cache
from stablekit.errors import UsageError
from stablekit.weights_cache import GIB, Component


@pytest.mark.parametrize("value, expected", [
    (None, weights_cache.DEFAULT_BUDGET), ("", weights_cache.DEFAULT_BUDGET), ("on", weights_cache.DEFAULT_BUDGET),
    ("off", 0), ("0", 0), ("no", 0), ("30GB", 30 * 10**9), ("500MiB", 500 * 2**20), ("1.5 GiB", int(1.5 * GIB)),
    ("2048", 2048),
])
def test_the_budget_is_read_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(weights_cache.ENV, raising=False)
    else:
        monkeypatch.setenv(weights_cache.ENV, value)
    assert weights_cache.budget() == expected


def make_entry(root: Path, key: str, *, source: str, dtype: str = "bfloat16", size: int, used: float) -> Path:
    entry = root / key
    entry.mkdir(parents=True)
    (entry / weights_cache.META).write_text(json.dumps({"source": source, "dtype": dtype, "bytes": size,
                                                        "component": "unet"}))
    os.utime(entry, (used, used))
    return entry


def component(source: str, nbytes: int, dtype: str = "bfloat16") -> Component:
    return Component("unet", "diffusers", "UNet2DConditionModel", Path(source), "new", dtype, nbytes)


def test_the_least_recently_used_entries_make_room(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_cache, "KEEP_FREE", 0)
    now = time.time()
    oldest = make_entry(tmp_path, "a", source="/m/a/unet", size=4 * GIB, used=now - 300)
    middle = make_entry(tmp_path, "b", source="/m/b/unet", size=4 * GIB, used=now - 200)
    newest = make_entry(tmp_path, "c", source="/m/c/unet", size=4 * GIB, used=now - 100)
    assert weights_cache._room_for(tmp_path, component("/m/d/unet", 6 * GIB), limit=12 * GIB) is None
    assert not oldest.exists() and not middle.exists() and newest.exists()


def test_an_older_copy_of_the_same_component_goes_first(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_cache, "KEEP_FREE", 0)
    now = time.time()
    other = make_entry(tmp_path, "a", source="/m/a/unet", size=GIB, used=now - 300)
    older = make_entry(tmp_path, "b", source="/m/b/unet", size=GIB, used=now)
    other_dtype = make_entry(tmp_path, "c", source="/m/b/unet", dtype="float32", size=GIB, used=now)
    assert weights_cache._room_for(tmp_path, component("/m/b/unet", GIB), limit=100 * GIB) is None
    assert other.exists() and not older.exists() and other_dtype.exists()


def test_a_component_over_the_budget_is_not_kept_and_nothing_is_evicted(tmp_path):
    kept = make_entry(tmp_path, "a", source="/m/a/unet", size=GIB, used=time.time())
    reason = weights_cache._room_for(tmp_path, component("/m/b/unet", 5 * GIB), limit=4 * GIB)
    assert "over the cache's 4.0 GiB" in reason and kept.exists()


def test_a_temporary_folder_is_never_an_entry(tmp_path):
    make_entry(tmp_path, ".tmp-1-abc", source="/m/a/unet", size=GIB, used=time.time())
    assert list(weights_cache._entries(tmp_path)) == []


def test_stale_temporaries_of_gone_processes_are_removed(tmp_path):
    mine = tmp_path / f".tmp-{os.getpid()}-k1"
    gone = tmp_path / ".tmp-999999999-k2"
    garbled = tmp_path / ".tmp-x"
    for folder in (mine, gone, garbled):
        folder.mkdir()
    weights_cache._remove_stale_temporaries(tmp_path)
    assert mine.exists() and not gone.exists() and not garbled.exists()


@pytest.mark.parametrize("names, variant, chosen", [
    (["model.safetensors", "model.fp16.safetensors"], "fp16", ["model.fp16.safetensors"]),
    (["model.safetensors", "model.fp16.safetensors"], None, ["model.safetensors"]),
    (["model.safetensors"], "fp16", ["model.safetensors"]),
    (["m-00001-of-00002.safetensors", "m-00002-of-00002.safetensors", "m.fp16-00001-of-00002.safetensors"],
     None, ["m-00001-of-00002.safetensors", "m-00002-of-00002.safetensors"]),
])
def test_the_weight_files_are_those_from_pretrained_reads(tmp_path, names, variant, chosen):
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in weights_cache._weight_files(tmp_path, variant)] == chosen


def test_a_folder_it_cannot_read_has_nothing_to_convert(tmp_path):
    assert weights_cache.convertible(tmp_path, "bfloat16", None, set()) == []
    (tmp_path / "model_index.json").write_text("[not, json")
    assert weights_cache.convertible(tmp_path, "bfloat16", None, set()) == []
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\xff" * 16)
    assert weights_cache.convertible(tmp_path, "bfloat16", None, set()) == []


def test_a_size_that_is_not_one_is_refused(monkeypatch):
    monkeypatch.setenv(weights_cache.ENV, "big")
    with pytest.raises(UsageError, match="not a size"):
        weights_cache.budget()


@pytest.mark.parametrize("record", ['{"bytes": "lots", "source": 7}', "[1, 2]", '{"bytes": -5}', "null"])
def test_a_record_edited_into_nonsense_is_evicted_and_breaks_nothing(tmp_path, monkeypatch, record):
    monkeypatch.setenv("STABLEKIT_HOME", str(tmp_path))
    root = weights_cache.cache_dir()
    odd = root / "odd"
    odd.mkdir(parents=True)
    (odd / weights_cache.META).write_text(record)
    assert weights_cache.summary()["copies"] == 1 and weights_cache.summary()["used_bytes"] == 0
    assert weights_cache.remove_from(tmp_path / "some-model") == 0 and odd.exists()
    monkeypatch.setattr(weights_cache, "KEEP_FREE", 0)
    assert weights_cache._room_for(root, component("/m/b/unet", 2 * GIB), limit=2 * GIB) is None
    assert not odd.exists()  # removed by the next write


class FakeModule:
    """What _write needs of a model: save_pretrained writing a safetensors file and a config."""

    def __init__(self, payload: bytes):
        self.payload = payload

    def save_pretrained(self, folder):
        folder = Path(folder)
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(self.payload)
        (folder / "config.json").write_text("{}")


def test_two_writers_of_one_copy_leave_one_whole_entry(tmp_path, monkeypatch):
    """Two processes (a batch's Ray workers, say) converting the same model at once: the second rename finds the
    first's complete entry and keeps it."""
    monkeypatch.setenv("STABLEKIT_HOME", str(tmp_path))
    root = weights_cache.cache_dir()
    root.mkdir(parents=True)
    first = component("/m/a/unet", GIB)
    weights_cache._write(FakeModule(b"first"), first, "m", root)
    weights_cache._write(FakeModule(b"second!"), first, "m", root)
    assert (first.entry / "model.safetensors").read_bytes() == b"first"
    weights_cache._check_sizes(first.entry)
    assert [p.name for p in root.iterdir()] == [first.key]


def test_a_model_bigger_than_the_limit_does_not_rewrite_its_copies_every_run(tmp_path, monkeypatch):
    """Two components of 6 GiB under a 10 GiB limit: the first is kept, the second is said not to fit beside it (it
    must not evict the first, which the next run then loads, only to evict it again: a rewrite on every run)."""
    from stablekit.console import Progress

    monkeypatch.setenv("STABLEKIT_HOME", str(tmp_path))
    monkeypatch.setattr(weights_cache, "KEEP_FREE", 0)
    notes: list[str] = []

    class Notes(Progress):
        def note(self, message: str) -> None:
            notes.append(message)

    unet = Component("unet", "diffusers", "UNet2DConditionModel", Path("/m/x/unet"), "k-unet", "bfloat16", 6 * GIB)
    text = Component("text_encoder", "transformers", "T5EncoderModel", Path("/m/x/text_encoder"), "k-text",
                     "bfloat16", 6 * GIB)
    modules = {"unet": FakeModule(b"u"), "text_encoder": FakeModule(b"t")}
    weights_cache.keep(modules, [unet, text], "x", 10 * GIB, Notes())
    assert unet.entry.is_dir() and not text.entry.exists()
    assert "with this model's other copies it would need 12.0 GiB" in notes[-1]
    # The next run loads the unet from its copy and converts the text encoder again: still nothing evicted.
    weights_cache.keep({"text_encoder": FakeModule(b"t")}, [text], "x", 10 * GIB, Notes(), in_use={unet.key})
    assert unet.entry.is_dir() and not text.entry.exists()


def test_entries_in_use_are_never_evicted(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_cache, "KEEP_FREE", 0)
    now = time.time()
    used = make_entry(tmp_path, "in-use", source="/m/a/unet", size=4 * GIB, used=now - 500)
    idle = make_entry(tmp_path, "idle", source="/m/b/unet", size=4 * GIB, used=now - 100)
    assert weights_cache._room_for(tmp_path, component("/m/a/vae", 4 * GIB), limit=9 * GIB, in_use={"in-use"}) is None
    assert used.exists() and not idle.exists()


@pytest.mark.parametrize("body", [b"[1, 2]", b"not json", b""])
def test_a_file_whose_header_is_not_a_safetensors_header_is_not_read_as_one(tmp_path, body):
    from stablekit.checkpoints import header
    from stablekit.errors import InputError

    path = tmp_path / "model.safetensors"
    path.write_bytes(len(body).to_bytes(8, "little") + body)
    with pytest.raises(InputError, match="not a readable .safetensors file"):
        header(path)
    assert weights_cache._header(path) is None
