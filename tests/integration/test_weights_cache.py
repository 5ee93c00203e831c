"""Converted weights kept between runs (stablekit.weights_cache): a load that converts keeps the converted
components, the next load uses them and paints the same picture; a damaged copy, a full disk, a read-only or
blocked cache folder, or a process killed while writing never fail a run nor leave a half-written copy."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from stablekit import weights_cache


@pytest.fixture(autouse=True)
def keep_tiny_models(monkeypatch):
    """Tiny models are far below the size worth keeping; here every converted component is kept."""
    monkeypatch.setattr(weights_cache, "MIN_BYTES", 0)


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    """The components loaded from kept copies, in order."""
    seen: list[str] = []
    real = weights_cache._load

    def spy(component, entry, dtype):
        seen.append(component.name)
        return real(component, entry, dtype)

    monkeypatch.setattr(weights_cache, "_load", spy)
    return seen


def render(name: str, *extra: str, env: dict | None = None):
    """The picture's pixels (the files differ in the output name they record) and what the run said."""
    result = run_cli("image", "a fox", "-m", "tiny-sd", "--seed", "5", "-o", name, *extra, env=env)
    assert result.returncode == 0, result.stderr
    return pixels(name), result.stderr


def pixels(name) -> bytes:
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(name).convert("RGB")).tobytes()


def entries(home: Path) -> dict[str, dict]:
    root = home / "cache" / "weights"
    found = {}
    for meta in root.glob(f"*/{weights_cache.META}"):
        data = json.loads(meta.read_text())
        found[data["component"]] = data
    return found


def leftovers(home: Path) -> list[str]:
    root = home / "cache" / "weights"
    return [p.name for p in root.iterdir() if p.name.startswith(".")] if root.is_dir() else []


def test_a_converting_load_keeps_its_components_and_the_next_load_uses_them(bf16_cpu, stablekit_home, loads):
    first, said = render("first.png")
    kept = entries(stablekit_home)
    assert set(kept) == {"unet", "text_encoder", "vae"}
    assert all(entry["dtype"] == "bfloat16" and entry["model"] == "tiny-sd" for entry in kept.values())
    assert "Keeping a bfloat16 copy of tiny-sd's unet" in said
    assert loads == []
    second, said = render("second.png")
    assert sorted(loads) == ["text_encoder", "unet", "vae"]
    assert "Keeping" not in said
    uncached, _ = render("uncached.png", env={"STABLEKIT_WEIGHTS_CACHE": "off"})
    assert first == second == uncached  # the same values, so the same pixels


def test_the_kept_copy_holds_the_run_dtype(bf16_cpu, stablekit_home):
    render("a.png")
    for meta in (stablekit_home / "cache" / "weights").glob(f"*/{weights_cache.META}"):
        for weights in meta.parent.glob("*.safetensors"):
            header = weights_cache._header(weights)
            dtypes = {t["dtype"] for k, t in header.items() if k != "__metadata__"}
            assert dtypes <= {"BF16", "I64"}, (weights, dtypes)


def test_a_load_in_the_stored_dtype_keeps_nothing(stablekit_home):
    render("a.png")  # float32 on this CPU, as the tiny models are stored: nothing to convert
    assert entries(stablekit_home) == {}


def test_off_neither_keeps_nor_reads(bf16_cpu, stablekit_home, loads):
    render("a.png", env={"STABLEKIT_WEIGHTS_CACHE": "off"})
    assert entries(stablekit_home) == {}
    render("b.png")
    render("c.png", env={"STABLEKIT_WEIGHTS_CACHE": "0"})
    assert loads == []


@pytest.mark.parametrize("value", ["lots", "12 parsecs", "-3GB"])
def test_a_malformed_setting_is_a_usage_error_before_loading(value):
    result = run_cli("image", "a fox", "-m", "tiny-sd", "-o", "a.png", env={"STABLEKIT_WEIGHTS_CACHE": value})
    assert result.returncode == 2
    assert f"STABLEKIT_WEIGHTS_CACHE={value}: not a size" in result.stderr
    assert "Traceback" not in result.stderr and not Path("a.png").exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "no-config", "fewer-tensors", "no-record"])
def test_a_damaged_copy_is_removed_and_the_run_loads_from_the_model(bf16_cpu, stablekit_home, damage):
    good, _ = render("good.png")
    unet = next(m.parent for m in (stablekit_home / "cache" / "weights").glob(f"*/{weights_cache.META}")
                if json.loads(m.read_text())["component"] == "unet")
    weights = next(unet.glob("*.safetensors"))
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "garbage":
        weights.write_bytes(b"\x00" * 64)
    elif damage == "fewer-tensors":  # a valid file that transformers/diffusers might fill up with random values
        from safetensors.torch import load_file, save_file

        tensors = load_file(weights)
        save_file(dict(list(tensors.items())[:-3]), weights)
    elif damage == "no-record":
        meta = unet / weights_cache.META
        meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "files"}))
    else:
        (unet / "config.json").unlink()
    again, said = render("again.png")
    assert again == good
    assert "the kept unet copy" in said and "removed, loading from the model's own files" in said
    assert "unet" in entries(stablekit_home)  # kept again by the load that converted


def safetensors_full_disk():
    """What safetensors raises when the disk fills while it writes (its own type, not an OSError)."""
    from safetensors import SafetensorError

    return SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


@pytest.mark.parametrize("failure, words", [
    (lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "the disk is full"),
    (lambda: OSError(errno.EROFS, os.strerror(errno.EROFS)), "the file system is read-only"),
    (lambda: OSError(errno.EACCES, os.strerror(errno.EACCES)), "permission denied"),
    (lambda: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), os.strerror(errno.EDQUOT)),
    (safetensors_full_disk, "the disk is full"),
    (lambda: RuntimeError("something else entirely"), "something else entirely"),
], ids=["ENOSPC", "EROFS", "EACCES", "EDQUOT", "safetensors-ENOSPC", "other"])
def test_a_copy_that_cannot_be_written_leaves_nothing_and_the_run_goes_on(bf16_cpu, stablekit_home, monkeypatch,
                                                                           failure, words):
    from diffusers import ModelMixin

    real = ModelMixin.save_pretrained

    def fail_midway(self, folder, *args, **kwargs):
        real(self, folder, *args, **kwargs)  # a file or two written, then the disk says no
        raise failure()

    monkeypatch.setattr(ModelMixin, "save_pretrained", fail_midway)
    image, said = render("a.png")
    assert Path("a.png.json").is_file() and image
    assert "cannot write a converted copy of the weights" in said and "the run goes on" in said
    assert words in said
    assert set(entries(stablekit_home)) <= {"text_encoder"}  # transformers' save was not made to fail
    assert leftovers(stablekit_home) == []
    assert "Traceback" not in said


def test_a_file_where_the_cache_goes_is_said_and_the_run_goes_on(bf16_cpu, stablekit_home):
    (stablekit_home / "cache").mkdir()
    (stablekit_home / "cache" / "weights").write_text("not a folder")
    image, said = render("a.png")
    assert image and Path("a.png.json").is_file()
    assert "cannot write a converted copy of the weights" in said
    assert (stablekit_home / "cache" / "weights").read_text() == "not a folder"


def test_a_read_only_cache_still_serves_what_it_holds(bf16_cpu, stablekit_home, loads, monkeypatch):
    good, _ = render("good.png")

    def read_only(path, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "utime", read_only)
    again, said = render("again.png")
    assert again == good and sorted(loads) == ["text_encoder", "unet", "vae"]
    assert "Traceback" not in said


def test_a_disk_nearly_full_keeps_nothing_and_says_so(bf16_cpu, stablekit_home, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100 * 2**30, 99 * 2**30, 2**30))
    _, said = render("a.png")
    assert "not keeping a bfloat16 copy of tiny-sd's" in said and "the disk would have under" in said
    assert entries(stablekit_home) == {}
    assert leftovers(stablekit_home) == []


@pytest.fixture
def small_disk(tmp_path):
    """A real 128 KiB file system (tmpfs: room for one of tiny-sd's kept components, not three), where mounting
    one is allowed (root on Linux); else the test is skipped."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode:
        pytest.skip("cannot mount a small file system here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_disk_that_fills_while_writing_leaves_nothing_and_the_run_goes_on(bf16_cpu, stablekit_home, small_disk,
                                                                            monkeypatch):
    """The free-space check passed (someone else filled the disk since): the write itself meets ENOSPC."""
    import shutil

    (stablekit_home / "cache").mkdir()
    (stablekit_home / "cache" / "weights").symlink_to(small_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 0, 2**40))
    image, said = render("a.png")
    assert image and Path("a.png.json").is_file()
    assert "the disk is full" in said and "the run goes on" in said and "Traceback" not in said
    assert not [p for p in small_disk.iterdir() if p.name.startswith(".")]
    kept = list(small_disk.glob(f"*/{weights_cache.META}"))
    assert len(kept) < 3
    for meta in kept:  # what fitted is whole
        assert weights_cache._header(next(meta.parent.glob("*.safetensors"))) is not None


def test_a_read_only_file_system_keeps_serving_its_copies_and_takes_no_new_ones(bf16_cpu, stablekit_home, small_disk,
                                                                               loads, monkeypatch):
    """A real read-only mount: what it holds still loads (nothing is touched); a model it lacks runs, unkept."""
    import shutil

    (stablekit_home / "cache").mkdir()
    (stablekit_home / "cache" / "weights").symlink_to(small_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(2**40, 0, 2**40))
    monkeypatch.setattr(weights_cache, "KEEP_FREE", 0)
    render("kept.png")
    held = sorted(p.name for p in small_disk.iterdir())
    assert held, "the first run kept what fitted"
    remounted = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True)
    if remounted.returncode:
        pytest.skip("cannot remount read-only here")
    again, said = render("again.png")
    assert again == pixels("kept.png") and loads and "Traceback" not in said
    result = run_cli("image", "a fox", "-m", "tiny-sdxl", "--seed", "5", "-o", "other.png")
    assert result.returncode == 0, result.stderr
    assert "the file system is read-only" in result.stderr and "the run goes on" in result.stderr
    assert sorted(p.name for p in small_disk.iterdir()) == held


def test_a_process_killed_while_writing_leaves_no_copy_and_its_leftover_is_removed(bf16_cpu, stablekit_home):
    """A real process SIGKILLed inside save_pretrained: nothing counts as kept; the next writer clears its folder."""
    script = (
        "import os, signal, sys\n"
        "from diffusers import ModelMixin\n"
        "from stablekit import weights_cache\n"
        "weights_cache.MIN_BYTES = 0\n"
        "real = ModelMixin.save_pretrained\n"
        "def die(self, folder, *a, **k):\n"
        "    real(self, folder, *a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "ModelMixin.save_pretrained = die\n"
        "from stablekit import cpu_features\n"
        "from pathlib import Path\n"
        f"cpu_features.CPUINFO = Path({str(cpu_features_file(stablekit_home))!r})\n"
        "from stablekit.cli import main\n"
        "main(['image', 'a fox', '-m', 'tiny-sd', '--seed', '5', '-o', 'killed.png'])\n"
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert process.returncode == -9, process.stderr
    assert leftovers(stablekit_home), "the killed writer's temporary folder"
    assert "unet" not in entries(stablekit_home) and "vae" not in entries(stablekit_home)
    render("next.png")
    assert leftovers(stablekit_home) == []
    assert {"unet", "vae", "text_encoder"} <= set(entries(stablekit_home))


def cpu_features_file(home: Path) -> Path:
    from conftest import AMX_CPU

    path = home.parent / "cpuinfo-amx"
    path.write_text(AMX_CPU)
    return path


def test_changed_model_files_make_a_new_copy_and_the_old_one_goes(bf16_cpu, stablekit_home, tmp_path):
    from stablekit import hub
    from stablekit.registry import load_registry

    source = hub.ensure_local(load_registry().get("tiny-sd"))
    folder = tmp_path / "my-model"
    import shutil

    shutil.copytree(source, folder)
    result = run_cli("image", "a fox", "-m", str(folder), "--seed", "5", "-o", "a.png")
    assert result.returncode == 0, result.stderr
    before = {name: meta for name, meta in entries(stablekit_home).items()}
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # "re-downloaded"
    result = run_cli("image", "a fox", "-m", str(folder), "--seed", "5", "-o", "b.png")
    assert result.returncode == 0, result.stderr
    unet_entries = [m for m in (stablekit_home / "cache" / "weights").glob(f"*/{weights_cache.META}")
                    if json.loads(m.read_text())["component"] == "unet"]
    assert len(unet_entries) == 1 and json.loads(unet_entries[0].read_text())["created"] > before["unet"]["created"]
    assert pixels("a.png") == pixels("b.png")


@pytest.fixture
def half_precision_repo(tmp_path, monkeypatch, stablekit_home):
    """tiny-sd served as org/half-sd with float16 variant files beside its float32 ones (as stabilityai/sd-turbo
    has them), and a catalog record that loads the variant, as sd-turbo's does."""
    import shutil

    import huggingface_hub.constants as constants
    from safetensors.torch import load_file, save_file

    from fakehub import FakeHub
    from stablekit import hub
    from stablekit.registry import load_registry

    repo = tmp_path / "half-sd"
    shutil.copytree(hub.pull(load_registry().get("tiny-sd")), repo, ignore=shutil.ignore_patterns(".stablekit*"))
    for weights in list(repo.glob("*/*.safetensors")):
        half = {name: t.half() if t.is_floating_point() else t for name, t in load_file(weights).items()}
        save_file(half, weights.with_name(weights.name.replace(".safetensors", ".fp16.safetensors")))
    record = (Path(weights_cache.__file__).parent / "catalog.toml").read_text().split("[models.tiny-sd]\n")[1]
    record = record.split("\n\n")[0].replace('tiny = "sd"\n', "")
    (stablekit_home / "catalog.toml").write_text(f'[models.half-sd]\n{record}\nrepo = "org/half-sd"\n'
                                                 'variant = "fp16"\n')
    with FakeHub() as server:
        server.repos["org/half-sd"] = repo
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield repo


def test_a_float16_variant_on_a_float32_cpu_is_kept_in_float32_and_models_rm_removes_it(half_precision_repo,
                                                                                        stablekit_home, loads):
    """sd-turbo's case on every CPU without bfloat16: its fp16 files converted to float32 on each load, before."""
    pulled = run_cli("models", "pull", "half-sd")
    assert pulled.returncode == 0, pulled.stderr
    first = run_cli("image", "a fox", "-m", "half-sd", "--seed", "5", "-o", "a.png")
    assert first.returncode == 0, first.stderr
    kept = entries(stablekit_home)
    assert set(kept) == {"unet", "text_encoder", "vae"} and {e["dtype"] for e in kept.values()} == {"float32"}
    second = run_cli("image", "a fox", "-m", "half-sd", "--seed", "5", "-o", "b.png")
    assert second.returncode == 0, second.stderr
    assert sorted(loads) == ["text_encoder", "unet", "vae"]
    assert pixels("a.png") == pixels("b.png")
    removed = run_cli("models", "rm", "half-sd", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert entries(stablekit_home) == {}
    assert weights_cache.remove_from(stablekit_home) == 0


def output_of(kind: str, run: int, tmp_path: Path) -> tuple[list[str], object]:
    """The command for one family, and a reader of what it made (to compare two runs)."""
    import numpy as np
    from PIL import Image

    if kind == "video":
        source = tmp_path / "first.png"
        if not source.exists():
            Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(source)
        return (["video", "-i", str(source), "-m", "tiny-svd", "--seed", "1", "-f", "frames", "-o", f"clip{run}"],
                lambda: [pixels(p) for p in sorted(Path(f"clip{run}").glob("*.png"))])
    if kind == "audio":
        import soundfile

        return (["audio", "rain", "-m", "tiny-audio", "--seed", "1", "-o", f"rain{run}.wav"],
                lambda: soundfile.read(f"rain{run}.wav")[0].tobytes())
    if kind == "text":
        return (["text", "Once upon a time", "-m", "tiny-lm", "--temperature", "0", "--max-tokens", "8",
                 "--min-tokens", "8"], None)
    return (["image", "a fox", "-m", kind, "--seed", "2", "-o", f"{kind}{run}.png"], lambda: pixels(f"{kind}{run}.png"))


@pytest.mark.parametrize("kind, components", [
    ("tiny-sdxl", {"unet", "vae", "text_encoder", "text_encoder_2"}),
    ("tiny-sd3", {"transformer", "vae", "text_encoder", "text_encoder_2"}),
    ("video", {"unet", "vae", "image_encoder"}),
    ("audio", {"transformer", "vae", "text_encoder"}),  # its projection model (a few MB) is the pipeline's own class
    ("text", {"model"}),
])
def test_every_family_keeps_and_reuses_its_converted_weights(bf16_cpu, stablekit_home, loads, tmp_path, kind,
                                                             components):
    results = []
    for run in (1, 2):
        args, read = output_of(kind, run, tmp_path)
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        results.append(result.stdout if read is None else read())
        if run == 1:
            kept = entries(stablekit_home)
            assert components <= set(kept), sorted(kept)
            assert loads == []
    assert components <= set(loads)
    assert results[0] == results[1] and results[0]


def test_doctor_says_what_is_kept_and_the_limit(bf16_cpu, stablekit_home):
    empty = json.loads(run_cli("doctor", "--json").stdout)["weights_cache"]
    assert empty["copies"] == 0 and empty["limit_bytes"] == weights_cache.DEFAULT_BUDGET
    render("a.png")
    report = run_cli("doctor", env={"STABLEKIT_WEIGHTS_CACHE": "10GB"})
    assert report.returncode == 0, report.stderr
    line = next(line for line in report.stdout.splitlines() if line.startswith("converted"))
    assert "3 kept copies of weights" in line and "of 9.3 GiB" in line
    assert str(stablekit_home / "cache" / "weights") in line
    off = run_cli("doctor", env={"STABLEKIT_WEIGHTS_CACHE": "off"}).stdout
    assert "converted   off (STABLEKIT_WEIGHTS_CACHE); 3 kept copies" in off
    bad = run_cli("doctor", env={"STABLEKIT_WEIGHTS_CACHE": "plenty"})
    assert bad.returncode == 0 and "STABLEKIT_WEIGHTS_CACHE=plenty: not a size" in bad.stdout
