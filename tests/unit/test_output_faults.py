"""Output faults below the CLI: what a failed write says, what it leaves (nothing), templates with format specs,
`-o` naming a folder, the checks made before loading, SIGTERM deferred like Ctrl-C, strict JSON sidecars, and the
options that would do nothing."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from stablekit.errors import OutputError, UsageError
from stablekit.outputs import (
    OutputOptions,
    StorageError,
    check_template,
    check_writable,
    finish_before_interrupt,
    remove_strays,
    storage_error,
    target_path,
    temporary_folder,
    write_atomic,
)


@pytest.fixture
def folder(tmp_path) -> Path:
    """An empty folder of the test's own (tmp_path also holds the test's STABLEKIT_HOME)."""
    made = tmp_path / "w"
    made.mkdir()
    return made


def path_for(options, **kw):
    defaults = dict(model="sdxl", seed=7, index=0, count=1, prompt="a cat", extension=".png")
    return target_path(options, **{**defaults, **kw})


# --- templates and folders ---------------------------------------------------------------------------------


def test_seed_and_index_take_number_formats(tmp_path):
    options = OutputOptions(output="{index:03d}-{seed:x}.png", output_dir=str(tmp_path))
    check_template(options, (".png",))
    assert path_for(options, index=7, seed=255) == tmp_path / "007-ff.png"
    assert path_for(OutputOptions(output="{prompt:.3}", output_dir=str(tmp_path))).name == "a-c.png"


@pytest.mark.parametrize("template, message", [
    ("{date:%Y}.png", "bad template"), ("{seed!r}.png", "conversions are not filled in"),
    ("{prompt:/>20}.png", "path separators"), ("{index:{seed}}.png", "braces"),
    ("{index:400}.png", "longer than 255 bytes"), ("{prompt.upper}.png", "unknown field"),
    ("{0}.png", "unknown field"), ("{}.png", "unknown field"),
])
def test_templates_that_cannot_be_filled_are_refused_up_front(template, message):
    with pytest.raises(UsageError, match=message):
        check_template(OutputOptions(output=template), (".png",))


def test_o_ending_in_a_slash_or_naming_a_folder_is_a_folder(tmp_path):
    assert path_for(OutputOptions(output="renders/", output_dir=str(tmp_path))) == tmp_path / "renders" / "a-cat-7.png"
    (tmp_path / "shots").mkdir()
    assert path_for(OutputOptions(output="shots", output_dir=str(tmp_path))) == tmp_path / "shots" / "a-cat-7.png"
    several = [path_for(OutputOptions(output="renders/", output_dir=str(tmp_path)), index=i, count=2, seed=7 + i)
               for i in range(2)]
    assert [p.name for p in several] == ["a-cat-7.png", "a-cat-8.png"]
    check_template(OutputOptions(output="out.d/"), (".png",))  # a folder's dot is no format


def test_an_output_that_is_a_folder_keeps_the_name_it_was_given(tmp_path):
    """Video's PNG frames (extension ""): `-o frames/` is still the frames folder, not a folder to put it in."""
    options = OutputOptions(output="frames/", output_dir=str(tmp_path))
    assert path_for(options, extension="") == tmp_path / "frames"


def test_the_target_folder_is_checked_without_creating_it(tmp_path, monkeypatch):
    check_writable(tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "sub")
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False)
    with pytest.raises(StorageError, match="permission denied") as caught:
        check_writable(tmp_path / "new")
    assert caught.value.hint and "--output-dir" in caught.value.hint


# --- failed writes ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("number, words", [
    (errno.ENOSPC, "the disk is full"), (errno.EROFS, "the file system is read-only"),
    (errno.EACCES, "permission denied"), (errno.EIO, "input/output error")])
def test_a_failed_write_says_why_in_words_and_leaves_nothing(folder, number, words):
    def half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(number, os.strerror(number))

    with pytest.raises(StorageError, match=f"cannot write {folder}/x.png: {words}") as caught:
        write_atomic(folder / "x.png", half_then_fail)
    assert caught.value.errno == number
    assert list(folder.iterdir()) == []


def test_a_temporary_file_that_cannot_be_made_is_said_too(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(StorageError, match="the file system is read-only"):
        write_atomic(tmp_path / "x.png", lambda tmp: None)


def test_temporary_names_carry_the_pid_so_strays_are_found(tmp_path):
    folder = temporary_folder(tmp_path / "frames")
    assert f".{os.getpid()}." in folder.name and folder.name.endswith(".partial")
    assert remove_strays(tmp_path, alive=lambda pid: pid == os.getpid()) == []
    assert remove_strays(tmp_path, alive=lambda pid: False) == [folder] and not folder.exists()


def test_storage_error_names_the_path_and_the_fix():
    error = storage_error(OSError(errno.ENOSPC, "No space left on device"), "/x/y.wav")
    assert (error.message, error.exit_code) == ("cannot write /x/y.wav: the disk is full", 1)
    assert "free some space" in error.hint


def test_a_textured_obj_that_meets_a_full_disk_leaves_no_temporary_file(folder, monkeypatch):
    """The MTL's temporary file used to stay when the disk filled while writing it."""
    from stablekit.writers import mesh as writer

    files = {folder / "m-texture.png": b"png", folder / "m.mtl": b"x" * 100, folder / "m.obj": b"obj"}
    real = Path.write_bytes

    def write_bytes(self, data):
        if self.suffix == ".mtl":
            real(self, data[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    with pytest.raises(OutputError, match="the disk is full"):
        writer.write_together(lambda target: files, folder / "m.obj")
    assert list(folder.iterdir()) == []


def test_ffmpeg_meeting_a_full_disk_is_said_as_such_and_keeps_no_frames(tmp_path, monkeypatch):
    from stablekit.writers.video import write_video

    fake = tmp_path / "ffmpeg"
    fake.write_text("#!/bin/sh\necho '[out#0/mp4] Error closing file: No space left on device' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(fake))
    out = tmp_path / "out"
    with pytest.raises(StorageError, match=f"cannot write {out}/v.mp4: the disk is full"):
        write_video(np.zeros((2, 16, 16, 3), np.uint8), 7, out / "v.mp4")
    assert list(out.iterdir()) == []  # no v-frames/ beside it: a full disk takes no frames either


def test_audio_on_a_full_disk_says_so(folder, monkeypatch):
    """libsndfile says only "System error."; the encoded bytes are written by Python, which says what failed."""
    from stablekit.writers.audio import write_audio

    def full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(StorageError, match="the disk is full"):
        write_audio(np.zeros((100, 2), np.float32), 44100, folder / "a.flac")
    assert list(folder.iterdir()) == []


# --- signals ------------------------------------------------------------------------------------------------


def test_sigterm_waits_until_the_output_is_written(tmp_path):
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with finish_before_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            assert received == []  # deferred: the output being written finishes first
            written = write_atomic(tmp_path / "x.txt", lambda tmp: tmp.write_text("whole"))
        assert received == [signal.SIGTERM]  # then delivered to the handler there was before
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert written.read_text() == "whole"


def test_ctrl_c_still_interrupts_after_the_write():
    with pytest.raises(KeyboardInterrupt):
        with finish_before_interrupt():
            signal.raise_signal(signal.SIGINT)


def test_the_cli_turns_sigterm_into_an_interrupt():
    from stablekit.process import sigterm_as_interrupt

    with sigterm_as_interrupt() as terminated:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGTERM)
    assert terminated.received


# --- sidecars, the sink -----------------------------------------------------------------------------------


def test_sidecars_are_strict_json(folder):
    from stablekit.writers.sidecar import write_sidecar

    assert json.loads(write_sidecar(folder / "x.png", {"a": 1.5}).read_text()) == {"a": 1.5}
    with pytest.raises(OutputError, match="parameters.guidance_scale is not a finite number"):
        write_sidecar(folder / "y.png", {"parameters": {"guidance_scale": float("nan")}})
    assert [p.name for p in folder.iterdir()] == ["x.png.json"]


def test_outputs_emitted_together_are_all_kept_or_none(folder):
    """A mesh and its turntable: the turntable's failure takes the mesh and its sidecar back, and neither path
    is reported."""
    from types import SimpleNamespace

    from stablekit.registry import load_registry
    from stablekit.sink import Output, Sink, Written

    reported = []
    sink = Sink(folder, on_result=reported.append)
    job = SimpleNamespace(spec=load_registry().get("tiny-triposr"), output=None, id=None, command="mesh",
                          request=SimpleNamespace(prompt="chair"), digest=lambda: "d")
    plan = SimpleNamespace(device_plan=SimpleNamespace(to_dict=dict))

    def mesh(path, overwrite):
        return Written(write_atomic(path, lambda tmp: tmp.write_text("mesh")))

    def turntable(path, overwrite):
        raise StorageError(f"cannot write {path}: the disk is full")

    with pytest.raises(StorageError):
        with sink.together():
            sink.emit(job, Output("mesh", ".glb", mesh, {}, plan, None, name="chair"))
            assert reported == []  # not before both are in place
            sink.emit(job, Output("turntable", ".gif", turntable, {}, plan, None, name="chair"))
    assert reported == [] and sink.results == [] and list(folder.iterdir()) == []
    with sink.together():
        sink.emit(job, Output("mesh", ".glb", mesh, {}, plan, None, name="chair"))
    assert [Path(item["path"]).name for item in reported] == ["chair-0.glb"]


# --- no silent no-ops -------------------------------------------------------------------------------------------


def test_what_the_pipeline_would_ignore_is_named():
    from stablekit.engines.image_checks import ignored
    from stablekit.params import ImageRequest
    from stablekit.registry import load_registry

    medium = load_registry().get("sd35-medium")
    plain = ImageRequest(prompt="x", negative_prompt="blur", guidance_scale=4.5)
    assert ignored(plain, medium) == {}
    img2img = ImageRequest(prompt="x", image="in.png", guidance_scale=4.5)
    assert "not available in img2img" in ignored(img2img, medium)["skip_guidance_layers"]
    turbo = ImageRequest(prompt="x", negative_prompt="blur", guidance_scale=0.0)
    assert set(ignored(turbo, load_registry().get("sdxl-turbo"))) == {"negative_prompt"}


def test_a_lora_scale_must_be_finite():
    from stablekit.engines.image_checks import parse_lora

    assert parse_lora("style.safetensors:0.5").scale == 0.5
    with pytest.raises(UsageError, match="finite"):
        parse_lora("style.safetensors:inf")


def test_half_precision_is_suggested_only_where_it_would_fit():
    """Not "use bfloat16" when the size is the problem: the size is named instead."""
    from stablekit.devices import Hardware, Overrides, Workload, plan
    from stablekit.errors import DoesNotFitError
    from stablekit.registry import load_registry

    spec = load_registry().get("sdxl")
    for ram, size, wanted, unwanted in ((12, 1024, "--dtype bfloat16 fits", "smaller size"),
                                        (24, 8192, "a smaller size fits", "--dtype")):
        with pytest.raises(DoesNotFitError) as caught:
            plan(spec, Hardware("cpu", "test", ram, ram, ram, ram), Workload(width=size, height=size), Overrides())
        assert wanted in caught.value.hint and unwanted not in caught.value.hint
