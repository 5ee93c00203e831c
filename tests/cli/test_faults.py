"""Bad invocations and environment faults, one table: each ends in one `Error:` line (and at most a `Hint:`),
exit 1 or 2, no traceback, and nothing touched outside the test's output folder and STABLEKIT_HOME.

Adding a fault is one `Case(...)` line. Placeholders in args, env and file names: {tmp} (the test's folder),
{home} (STABLEKIT_HOME), {out} (the output folder). `files` maps a path to its text (bytes for raw content);
`setup` names a function below for what files cannot say (symlinks, injected errors).
"""

from __future__ import annotations

import errno
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import run_cli

SDXL_USER = 'extends = "sdxl"\nrepo = "org/x"\n'
TINY_USER = 'extends = "tiny-sd"\n'


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]
    needles: tuple[str, ...] = ()  # all in stderr
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    code: int | None = None  # 1 or 2; None: either
    setup: str | None = None  # one name, or several joined by '+'
    keeps: bool = False  # the fault came after outputs were whole (stdout, the manifest): they stay, each complete

    def __str__(self) -> str:
        return self.name


def catalog(text: str | bytes) -> dict[str, str | bytes]:
    return {"{home}/catalog.toml": text}


def record(body: str, model_id: str = "x") -> dict[str, str | bytes]:
    return catalog(f'[models."{model_id}"]\n{body}')


def model_index(text: str, **more: str) -> dict[str, str | bytes]:
    """A folder {tmp}/m with this model_index.json and `more` files (relative name -> text)."""
    return {"{tmp}/m/model_index.json": text, **{f"{{tmp}}/m/{name}": v for name, v in more.items()}}


NOT_SAFETENSORS = b"<html>404 not found</html>"
# Every generating command, quick (input images from the input_images setup); -d or -o is added per case.
AUDIO = ("audio", "rain", "-m", "tiny-audio", "--seconds", "0.5", "--seed", "1")
VIDEO = ("video", "-i", "{tmp}/in.png", "-m", "tiny-svd", "--frames", "2", "--seed", "1")
MESH = ("mesh", "-i", "{tmp}/in-rgba.png", "-m", "tiny-triposr", "--resolution", "32")
JOBS = {"{tmp}/jobs.jsonl": '{"command": "image", "prompt": "x", "model": "tiny-sd"}\n'}
COMMANDS = {"image": ("image", "x", "-m", "tiny-sd"), "audio": AUDIO, "video": VIDEO, "mesh": MESH,
            "batch": ("batch", "{tmp}/jobs.jsonl")}
SIDECAR = '{"parameters": {"command": "image", "model": "tiny-sd", "prompt": "x", "seed": 1}}'

CASES = [
    # --- STABLEKIT_HOME -------------------------------------------------------------------------------
    Case("home-is-a-file", ("models", "list"), ("is a file, not a folder",), {"{tmp}/home-file": "x"},
         {"STABLEKIT_HOME": "{tmp}/home-file"}, 2),
    Case("home-is-a-file-image", ("image", "x", "-m", "tiny-sd", "-d", "{out}"), ("is a file",),
         {"{tmp}/home-file": "x"}, {"STABLEKIT_HOME": "{tmp}/home-file"}, 2),
    Case("home-unwritable", ("models", "pull", "tiny-sd"), ("cannot write the tiny model tiny-sd", "Hint:"),
         env={"STABLEKIT_HOME": "/sys/stablekit-test-home"}, code=1),
    Case("home-read-only", ("models", "pull", "tiny-lm"), ("the file system is read-only",), code=1,
         setup="read_only_home"),
    # --- user catalog of any shape --------------------------------------------------------------------
    Case("catalog-models-not-a-table", ("models", "list"), ("'models' should be a table",), catalog("models = 3\n")),
    Case("catalog-models-a-list", ("models", "list"), ("'models' should be a table",), catalog("models = [1, 2]\n")),
    Case("catalog-not-utf8", ("models", "list"), ("not UTF-8",), catalog(b"[models.x]\nname = \"\xff\xfe\"\n")),
    Case("catalog-not-toml", ("models", "list"), ("not valid TOML",), catalog("[models.x\n")),
    Case("catalog-is-a-folder", ("models", "list"), ("a folder, not a catalog file",), setup="catalog_folder"),
    Case("catalog-record-not-table", ("models", "list"), ("expected a table",), catalog("[models]\nx = 3\n")),
    Case("catalog-unknown-key", ("models", "list"), ("models.x.stepz: unknown key",), record(SDXL_USER + "stepz=3\n")),
    Case("catalog-defaults-wrong-type", ("models", "list"), ("'num_inference_steps' should be int",),
         record(SDXL_USER + 'defaults = { num_inference_steps = "many" }\n')),
    Case("catalog-defaults-unknown-key", ("models", "list"), ("unknown key 'colour'",),
         record(SDXL_USER + 'defaults = { colour = "red" }\n')),
    Case("catalog-defaults-not-table", ("models", "list"), ("models.x.defaults: expected dict",),
         record(SDXL_USER + "defaults = 5\n")),
    Case("catalog-defaults-nan", ("models", "list"), ("nan is not a finite number",),
         record(SDXL_USER + "defaults = { guidance_scale = nan }\n")),
    Case("catalog-defaults-inf", ("models", "list"), ("inf is not a finite number",),
         record(SDXL_USER + "defaults = { guidance_scale = inf }\n")),
    Case("catalog-extra-wrong-type", ("models", "list"), ("'skip_guidance_layers' has the wrong type",),
         record(SDXL_USER + 'defaults = { skip_guidance_layers = "7" }\n')),
    Case("catalog-limits-wrong-type", ("models", "list"), ("limits.size_multiple: expected a positive int",),
         record(SDXL_USER + 'limits = { size_multiple = "8" }\n')),
    Case("catalog-limits-unknown", ("models", "list"), ("limits.speed: unknown key",),
         record(SDXL_USER + "limits = { speed = 3 }\n")),
    Case("catalog-limits-negative", ("models", "list"), ("expected a positive",),
         record(SDXL_USER + "limits = { context_length = -1 }\n")),
    Case("catalog-memory-inf", ("models", "list"), ("not a finite number",),
         record(SDXL_USER + "memory = { params = { unet = inf } }\n")),
    Case("catalog-memory-bool", ("models", "list"), ("memory.params",),
         record(SDXL_USER + "memory = { params = { unet = true } }\n")),
    Case("catalog-aliases-not-names", ("models", "list"), ("models.x.aliases: expected a list of names",),
         record(SDXL_USER + "aliases = [1, 2]\n")),
    Case("catalog-tasks-not-list", ("models", "list"), ("models.x.tasks: expected list",),
         record(SDXL_USER + 'tasks = "txt2img"\n')),
    Case("catalog-gated-not-bool", ("models", "list"), ("models.x.gated: expected bool",),
         record(SDXL_USER + 'gated = "yes"\n')),
    Case("catalog-extends-unknown", ("models", "list"), ("extends: no built-in model 'nope'",),
         record('extends = "nope"\n')),
    Case("catalog-extends-not-string", ("models", "list"), ("extends",), record("extends = 3\n")),
    Case("catalog-tiny-unknown-kind", ("models", "list"), ("unknown kind 'sd9'",),
         record(TINY_USER + 'tiny = "sd9"\n')),
    Case("catalog-repo-not-hub-id", ("models", "list"), ("is not a hub repo id",),
         record('extends = "sdxl"\nrepo = "a/.."\n')),
    Case("catalog-repo-a-path", ("models", "list"), ("is not a hub repo id",),
         record('extends = "sdxl"\nrepo = "/etc"\n')),
    Case("catalog-revision-a-path", ("models", "list"), ("is not a branch, tag or commit",),
         record(SDXL_USER + 'revision = "../../../etc"\n')),
    Case("catalog-variant-a-path", ("models", "list"), ("is not a variant name",),
         record(SDXL_USER + 'variant = "../x"\n')),
    # --- ids are never paths --------------------------------------------------------------------------
    Case("id-dotdot-pull", ("models", "pull", "../../x"), ("'../../x' is not a plain name",),
         record(TINY_USER, "../../x")),
    Case("id-dotdot-rm", ("models", "rm", "../../x", "--yes"), ("is not a plain name",), record(TINY_USER, "../../x")),
    Case("id-deep-dotdot-pull", ("models", "pull", "../../../x"), ("not a plain name",),
         record(TINY_USER, "../../../x")),
    Case("id-absolute-pull", ("models", "pull", "{tmp}/victim"), ("not a plain name",),
         record(TINY_USER, "{tmp}/victim")),
    Case("id-absolute-rm", ("models", "rm", "{tmp}/victim", "--yes"), ("not a plain name",),
         {**record(TINY_USER, "{tmp}/victim"), "{tmp}/victim/keep.txt": "mine"}),
    Case("id-inner-dotdot", ("models", "list"), ("not a plain name",), record(TINY_USER, "a/../../b")),
    Case("id-backslash", ("models", "list"), ("not a plain name",), record(TINY_USER, "a\\\\..\\\\b")),
    Case("tiny-symlink-out-pull", ("models", "pull", "evil"), ("outside",),
         record(TINY_USER, "evil"), setup="tiny_link"),
    Case("tiny-symlink-out-rm", ("models", "rm", "evil", "--yes"), ("outside",), record(TINY_USER, "evil"),
         setup="tiny_link"),
    Case("rm-not-made-by-stablekit", ("models", "rm", "mine", "--yes"), ("was not built by stablekit",),
         {**record(TINY_USER, "mine"), "{home}/tiny-own/mine/data.txt": "mine"}, setup="own_tiny_home"),
    Case("pull-over-a-foreign-folder", ("models", "pull", "mine"), ("exists and was not built by stablekit",),
         {**record(TINY_USER, "mine"), "{home}/tiny-own/mine/data.txt": "mine"}, setup="own_tiny_home"),
    Case("rm-local-folder", ("models", "rm", "{tmp}/m", "--yes"), ("your own file or folder",),
         model_index('{"_class_name": "StableDiffusionPipeline"}')),
    # --- --model paths and folders ---------------------------------------------------------------------
    Case("model-path-missing", ("image", "x", "-m", "./nope/model", "-d", "{out}"), ("no such file or folder",)),
    Case("model-abs-path-missing", ("image", "x", "-m", "{tmp}/nope", "-d", "{out}"), ("no such file or folder",)),
    Case("model-file-missing", ("image", "x", "-m", "nope.safetensors", "-d", "{out}"), ("no such file or folder",)),
    Case("model-info-missing", ("models", "info", "../nope"), ("no such file or folder",)),
    Case("model-unknown-id", ("image", "x", "-m", "sdxl-trubo", "-d", "{out}"), ("did you mean 'sdxl-turbo'",)),
    Case("model-not-a-folder", ("models", "info", "{tmp}/m"), ("is not a model folder",), {"{tmp}/m/readme.txt": "x"}),
    Case("index-a-list", ("models", "info", "{tmp}/m"), ("should hold a JSON object, not list",), model_index("[]")),
    Case("index-not-json", ("models", "info", "{tmp}/m"), ("is not readable JSON",), model_index("{nope")),
    Case("index-class-not-string", ("models", "info", "{tmp}/m"), ("no pipeline class",),
         model_index('{"_class_name": 5}')),
    Case("index-component-shape", ("models", "info", "{tmp}/m"), ("entry 'unet' should be [library, class]",),
         model_index('{"_class_name": "StableDiffusionPipeline", "unet": ["diffusers"]}')),
    Case("index-unknown-class", ("models", "info", "{tmp}/m"), ("pipeline class FluxPipeline is not one",),
         model_index('{"_class_name": "FluxPipeline"}')),
    Case("index-custom-code", ("models", "info", "{tmp}/m"), ("needs custom code", "never runs code"),
         model_index('{"_class_name": "StableDiffusionPipeline", "unet": ["my_repo_code", "MyUNet"]}')),
    Case("component-config-a-list", ("models", "info", "{tmp}/m"), ("unet/config.json should hold a JSON object",),
         model_index('{"_class_name": "StableDiffusionPipeline"}', **{"unet/config.json": "[1]"})),
    Case("config-architectures-string", ("models", "info", "{tmp}/m"), ("names no architecture",),
         {"{tmp}/m/config.json": '{"architectures": "StableLmForCausalLM"}'}),
    Case("config-not-causal-lm", ("text", "hi", "-m", "{tmp}/m"), ("is not a text generator",),
         {"{tmp}/m/config.json": '{"architectures": ["BertModel"]}'}),
    Case("config-remote-code", ("text", "hi", "-m", "{tmp}/m"), ("never runs code", "--trust-remote-code"),
         {"{tmp}/m/config.json": '{"architectures": ["XForCausalLM"], "auto_map": {"AutoModelForCausalLM": "x.X"}}'},
         code=1),
    Case("config-a-number", ("text", "hi", "-m", "{tmp}/m"), ("should hold a JSON object, not int",),
         {"{tmp}/m/config.json": "3"}),
    Case("config-single-model-unknown", ("models", "info", "{tmp}/m"), ("not a model stablekit runs on its own",),
         {"{tmp}/m/config.json": '{"_class_name": "UNet2DConditionModel"}'}),
    Case("yaml-not-triposr", ("models", "info", "{tmp}/m"),
         ("is not a TripoSR config",), {"{tmp}/m/config.yaml": "a: 1\n"}),
    # --- files named .safetensors that are not ----------------------------------------------------------
    Case("checkpoint-not-safetensors", ("image", "x", "-m", "{tmp}/fake.safetensors", "-d", "{out}"),
         ("not a readable .safetensors file",), {"{tmp}/fake.safetensors": NOT_SAFETENSORS}),
    Case("checkpoint-empty", ("image", "x", "-m", "{tmp}/empty.safetensors", "-d", "{out}"),
         ("not a readable .safetensors file",), {"{tmp}/empty.safetensors": b""}),
    Case("checkpoint-pickle", ("image", "x", "-m", "{tmp}/model.ckpt", "-d", "{out}"),
         ("only .safetensors checkpoints",), {"{tmp}/model.ckpt": b"PK"}),
    Case("folder-unet-not-safetensors", ("image", "x", "-m", "{tmp}/sd", "-d", "{out}"),
         ("unet/diffusion_pytorch_model.safetensors", "not a readable .safetensors"), setup="damaged_unet"),
    Case("folder-vae-not-safetensors", ("image", "x", "-m", "{tmp}/sd", "-d", "{out}"),
         ("vae/diffusion_pytorch_model.safetensors", "not a readable .safetensors"), setup="damaged_vae"),
    Case("tiny-weights-damaged", ("image", "x", "-m", "tiny-sd", "-d", "{out}"),
         ("is not a safetensors file", "models rm tiny-sd"), setup="damaged_tiny_home"),
    Case("lora-not-safetensors", ("image", "x", "-m", "tiny-sd", "--lora", "{tmp}/style.safetensors", "-d", "{out}"),
         ("--lora",), {"{tmp}/style.safetensors": NOT_SAFETENSORS}),
    # --- the hub, offline --------------------------------------------------------------------------------
    Case("hub-id-offline", ("image", "x", "-m", "org/never-pulled", "-d", "{out}"),
         ("org/never-pulled is not downloaded", "models pull org/never-pulled"), code=1),
    Case("hub-id-info-offline", ("models", "info", "org/never-pulled"), ("HF_HUB_OFFLINE",), code=1),
    Case("hub-id-offline-audio", ("audio", "rain", "-m", "org/never-pulled", "-d", "{out}"), ("not downloaded",)),
    Case("hub-id-offline-video", ("video", "-i", "{tmp}/in.png", "-m", "org/never-pulled", "-d", "{out}"),
         ("not downloaded",), {"{tmp}/in.png": "not read"}),
    Case("hub-id-offline-mesh", ("mesh", "-i", "{tmp}/in.png", "-m", "org/never-pulled", "-d", "{out}"),
         ("not downloaded",), {"{tmp}/in.png": "not read"}),
    Case("hub-id-offline-text", ("text", "hi", "-m", "org/never-pulled"), ("not downloaded",)),
    Case("hub-id-dotdot", ("models", "pull", "org/.."), ("no such file or folder",)),
    # --- the output folder, decided before anything loads (injected: tests run as root) ---------------------
    *[Case(f"out-read-only-{cmd}", (*args, "-d", "{out}"), ("cannot write into {out}: the file system is read-only",
                                                             "Hint:"), JOBS, code=1, setup="input_images+read_only_out")
      for cmd, args in COMMANDS.items()],
    *[Case(f"out-not-permitted-{cmd}", (*args, "-d", "{out}"), ("cannot write into {out}: permission denied",
                                                                "Hint:"), JOBS, code=1,
           setup="input_images+unwritable_out")
      for cmd, args in COMMANDS.items()],
    *[Case(f"out-is-a-file-{cmd}", (*args, "-d", "{tmp}/taken/sub"), ("{tmp}/taken",), {**JOBS, "{tmp}/taken": "mine"},
           setup="input_images") for cmd, args in COMMANDS.items()],
    Case("batch-manifest-not-permitted", ("batch", "{tmp}/jobs.jsonl", "--manifest", "{out}/m.jsonl", "-d", "{out}/o"),
         ("permission denied",), JOBS, setup="unwritable_out"),
    Case("reproduce-out-read-only", ("reproduce", "{tmp}/in.png", "-o", "{out}/again.png"),
         ("cannot write into {out}: the file system is read-only",), {"{tmp}/in.png.json": SIDECAR},
         setup="input_images+read_only_out"),
    Case("lock-read-only", ("lock", "tiny-lm", "--lockfile", "{out}/stablekit.lock"), ("the file system is read-only",),
         setup="read_only_late"),
    # --- a full disk (or one gone read-only) while writing: one error, nothing half-written -------------------
    Case("disk-full-image", ("image", "x", "-m", "tiny-sd", "-d", "{out}"), ("the disk is full", "Hint: free"),
         code=1, setup="full_disk"),
    Case("disk-full-image-sidecar", ("image", "x", "-m", "tiny-sd", "-d", "{out}"),
         ("x-", ".png.json: the disk is full"), code=1, setup="full_disk_json"),
    Case("disk-full-image-jpeg", ("image", "x", "-m", "tiny-sd", "-o", "{out}/a.jpg", "-n", "2"),
         ("the disk is full",), code=1, setup="full_disk"),
    Case("disk-read-only-late-image", ("image", "x", "-m", "tiny-sd", "-d", "{out}"),
         ("the file system is read-only",), code=1, setup="read_only_late"),
    Case("disk-not-permitted-late-image", ("image", "x", "-m", "tiny-sd", "-d", "{out}"), ("permission denied",),
         code=1, setup="unwritable_late"),
    Case("disk-full-audio", (*AUDIO, "-d", "{out}"), ("the disk is full",), code=1, setup="full_disk"),
    Case("disk-full-audio-flac-sidecar", (*AUDIO, "-o", "{out}/a.flac"), ("a.flac.json: the disk is full",), code=1,
         setup="full_disk_json"),
    Case("disk-full-video-gif", (*VIDEO, "-o", "{out}/v.gif"), ("cannot write {out}/v.gif: the disk is full",),
         code=1, setup="input_images+full_disk"),
    Case("disk-full-video-frames", (*VIDEO, "-o", "{out}/frames/"), ("cannot write {out}/frames: the disk is full",),
         code=1, setup="input_images+full_disk"),
    Case("disk-full-video-frames-sidecar", (*VIDEO, "-o", "{out}/frames/"), ("frames.json: the disk is full",),
         code=1, setup="input_images+full_disk_json"),
    Case("disk-full-mesh", (*MESH, "-o", "{out}/m.glb"), ("cannot write {out}/m.glb: the disk is full",), code=1,
         setup="input_images+full_disk"),
    Case("disk-full-mesh-turntable", (*MESH, "-o", "{out}/m.ply", "--turntable", "t.gif", "--turntable-views", "2",
                                      "--turntable-size", "32", "-d", "{out}"), ("t.gif: the disk is full",), code=1,
         setup="input_images+full_disk_gif"),
    Case("disk-full-batch-manifest", ("batch", "{tmp}/jobs.jsonl", "-d", "{out}"),
         ("cannot write the manifest {out}/stablekit-batch.jsonl: the disk is full",), JOBS, code=1,
         setup="full_disk_manifest", keeps=True),
    Case("disk-full-lock", ("lock", "tiny-lm", "--lockfile", "{out}/stablekit.lock"),
         ("cannot write {out}/stablekit.lock: the disk is full",), code=1, setup="full_disk"),
    # --- stdout that cannot be written (in-process: an I/O error; /dev/full and pipes in test_process_faults) --
    Case("stdout-eio-models-list", ("models", "list"), ("cannot write the results to stdout: input/output error",),
         code=1, setup="stdout_eio"),
    Case("stdout-eio-presets-list", ("presets", "list"), ("cannot write the results to stdout",), code=1,
         setup="stdout_eio"),
    Case("stdout-eio-dry-run", ("image", "x", "-m", "tiny-sd", "--dry-run", "--json"), ("cannot write the results",),
         code=1, setup="stdout_eio"),
    Case("stdout-enospc-image", ("image", "x", "-m", "tiny-sd", "-d", "{out}"),
         ("cannot write the results to stdout: the disk is full", "with its sidecar"), code=1, setup="stdout_enospc",
         keeps=True),
    Case("stdout-eio-text", ("text", "hi", "-m", "tiny-lm", "--max-tokens", "3"), ("cannot write the results",),
         code=1, setup="stdout_eio"),
    Case("stdout-eio-info", ("info", "{tmp}/in.png"), ("cannot write the results",), {"{tmp}/in.png.json": SIDECAR},
         code=1, setup="input_images+stdout_eio"),
    # --- output names, decided before anything loads -----------------------------------------------------------
    Case("template-date-spec", ("image", "x", "-m", "tiny-sd", "-o", "{date:%Y}.png"), ("bad template",), code=2),
    Case("template-conversion", (*AUDIO, "-o", "{seed!r}.wav"), ("conversions are not filled in",), code=2),
    Case("template-separator-fill", (*VIDEO, "-o", "{prompt:/>9}.gif"), ("may not hold braces or path separators",),
         code=2, setup="input_images"),
    Case("template-too-long", (*MESH, "-o", "{index:300}.glb"), ("longer than 255 bytes",), code=2,
         setup="input_images"),
    Case("template-item", ("image", "x", "-m", "tiny-sd", "-o", "{prompt[0]}.png"), ("unknown field {prompt[0]}",),
         code=2),
    Case("template-nested", ("image", "x", "-m", "tiny-sd", "-o", "{index:{seed}}.png"), ("braces",), code=2),
    Case("template-bad-suffix-audio", (*AUDIO, "-o", "x.mp3"), ("'.mp3'",), code=2),
    # --- no silent no-ops; no NaN or infinity anywhere ----------------------------------------------------------
    Case("family-without-checkpoint", ("image", "x", "-m", "tiny-sd", "--family", "sdxl"),
         ("--family only apply to a single-file checkpoint", "Hint: drop --family"), code=2),
    Case("config-without-checkpoint", ("image", "x", "-m", "tiny-sdxl", "--config", "sdxl"),
         ("--config only apply to a single-file checkpoint",), code=2),
    Case("refiner-model-without-refiner", ("image", "x", "-m", "tiny-sdxl", "--refiner-model", "tiny-sdxl"),
         ("--refiner-model without --refiner would do nothing",), code=2),
    Case("refiner-split-without-refiner", ("image", "x", "-m", "tiny-sdxl", "--refiner-split", "0.5"),
         ("--refiner-split without --refiner would do nothing", "Hint: add --refiner"), code=2),
    Case("refiner-in-preset-without-refiner", ("image", "x", "-m", "tiny-sdxl", "-p", "{tmp}/p.toml"),
         ("--refiner-model without --refiner",), {"{tmp}/p.toml": 'command = "image"\nrefiner_model = "sdxl"\n'},
         code=2),
    Case("nan-guidance-flag", ("image", "x", "-m", "tiny-sd", "--guidance", "nan"), ("must be a finite number",),
         code=2),
    Case("inf-strength-flag", ("image", "x", "-m", "tiny-sd", "--image", "{tmp}/in.png", "--strength", "inf"),
         ("must be a finite number",), code=2, setup="input_images"),
    Case("nan-lora-scale", ("image", "x", "-m", "tiny-sd", "--lora", "{tmp}/l.safetensors:nan"),
         ("the scale must be a finite number",), {"{tmp}/l.safetensors": NOT_SAFETENSORS}, code=2),
    Case("nan-seconds-audio", ("audio", "rain", "-m", "tiny-audio", "--seconds", "nan"), ("finite",), code=2),
    Case("inf-guidance-video", (*VIDEO, "--max-guidance", "inf"), ("finite",), code=2, setup="input_images"),
    Case("nan-threshold-mesh", (*MESH, "--threshold", "nan"), ("finite",), code=2, setup="input_images"),
    Case("nan-temperature-text", ("text", "hi", "-m", "tiny-lm", "--temperature", "nan"), ("finite",), code=2),
    Case("nan-in-preset", ("image", "x", "-m", "tiny-sd", "-p", "{tmp}/p.toml"), ("'guidance_scale' must be a finite",),
         {"{tmp}/p.toml": 'command = "image"\nguidance_scale = nan\n'}, code=2),
    Case("inf-in-job-line", ("batch", "{tmp}/jobs.jsonl", "-d", "{out}"), ("must be a finite number",),
         {"{tmp}/jobs.jsonl": '{"command": "audio", "prompt": "x", "model": "tiny-audio", '
                              '"guidance_scale": Infinity}\n'},
         code=2),
]


# --- setups: what a files table cannot say ----------------------------------------------------------------


def read_only_home(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    """A fresh home (no shared tiny builds) on a file system that refuses writes: EROFS from mkdir."""
    fresh = tmp_path / "ro-home"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(fresh)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return {"STABLEKIT_HOME": str(fresh)}


def catalog_folder(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    (home / "catalog.toml").mkdir()
    return {}


def tiny_link(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    """home/tiny/evil -> a folder outside the home, holding what must survive."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    tiny = tmp_path / "own-tiny"
    tiny.mkdir()
    (tiny / "evil").symlink_to(victim, target_is_directory=True)
    return {"STABLEKIT_HOME": str(_fresh_home(tmp_path, tiny))}


def own_tiny_home(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    return {"STABLEKIT_HOME": str(_fresh_home(tmp_path, home / "tiny-own"))}


def _fresh_home(tmp_path: Path, tiny: Path) -> Path:
    """A home whose tiny folder is `tiny` (the shared build cache stays out of reach), with the test's catalog."""
    fresh = tmp_path / "home2"
    fresh.mkdir()
    (fresh / "tiny").symlink_to(tiny, target_is_directory=True)
    catalog_file = tmp_path / "stablekit-home" / "catalog.toml"
    if catalog_file.exists():
        shutil.copy(catalog_file, fresh / "catalog.toml")
    return fresh


def _tiny_copy(tmp_path: Path) -> Path:
    from stablekit import hub
    from stablekit.registry import load_registry

    folder = tmp_path / "sd"
    shutil.copytree(hub.ensure_local(load_registry().get("tiny-sd")), folder)
    return folder


def damaged_unet(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    (_tiny_copy(tmp_path) / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(NOT_SAFETENSORS)
    return {}


def damaged_vae(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    (_tiny_copy(tmp_path) / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00" * 4)
    return {}


def damaged_tiny_home(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    """A home of its own whose built tiny-sd has a truncated VAE (a disk that filled up mid-build, say)."""
    own = tmp_path / "own-tiny"
    own.mkdir()
    shutil.copytree(_tiny_copy(tmp_path), own / "tiny-sd")
    shutil.rmtree(tmp_path / "sd")
    (own / "tiny-sd" / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x10\x00")
    return {"STABLEKIT_HOME": str(_fresh_home(tmp_path, own))}


def input_images(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    """{tmp}/in.png (RGB, for video and img2img) and {tmp}/in-rgba.png (an object on transparency, for mesh)."""
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 120, 40)).save(tmp_path / "in.png")
    rgba = Image.new("RGBA", (48, 48), (0, 0, 0, 0))
    rgba.paste((30, 60, 220, 255), (12, 12, 36, 36))
    rgba.save(tmp_path / "in-rgba.png")
    return {}


def _inside(path, root: Path) -> bool:
    return os.path.abspath(os.fspath(path)).startswith(str(root) + os.sep)


def _out_is(tmp_path: Path, monkeypatch, *, read_only: bool = False, writable: bool = True) -> None:
    """The output folder exists, on a file system that says it is read-only (statvfs), or not writable by this
    user (access: root passes every permission check, so it is injected)."""
    out = tmp_path / "out"
    out.mkdir()
    real_statvfs, real_access = os.statvfs, os.access

    class ReadOnly:
        def __init__(self, result):
            self._result = result
            self.f_flag = result.f_flag | os.ST_RDONLY

        def __getattr__(self, name):
            return getattr(self._result, name)

    if read_only:
        monkeypatch.setattr(os, "statvfs", lambda path: ReadOnly(real_statvfs(path)) if _inside(path, tmp_path)
                            and os.path.abspath(path).startswith(str(out)) else real_statvfs(path))
    if not writable:
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if os.path.abspath(os.fspath(path)).startswith(
            str(out)) and mode & os.W_OK else real_access(path, mode, **kw))


def read_only_out(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _out_is(tmp_path, monkeypatch, read_only=True)
    return {}


def unwritable_out(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _out_is(tmp_path, monkeypatch, writable=False)
    return {}


def _fail_writes(tmp_path: Path, monkeypatch, number: int, match=lambda name: True) -> None:
    """Every file written under the output folder whose name `match`es fails with OSError(number) halfway (a
    disk that fills up mid-write): Path.write_bytes / write_text (sidecars, meshes, audio, lockfiles), PIL's
    save (images, GIF, WebP, PNG frames) and os.write (the manifest)."""
    from PIL import Image

    out = tmp_path / "out"
    real_bytes, real_text, real_save, real_write = Path.write_bytes, Path.write_text, Image.Image.save, os.write

    def hit(path) -> bool:
        return isinstance(path, (str, os.PathLike)) and _inside(path, out) and match(os.path.basename(path))

    def failure(path) -> OSError:
        return OSError(number, os.strerror(number), str(path))

    def write_bytes(self, data):
        if hit(self):
            real_bytes(self, data[:len(data) // 2])
            raise failure(self)
        return real_bytes(self, data)

    def write_text(self, data, *args, **kwargs):
        if hit(self):
            real_text(self, data[:len(data) // 2], *args, **kwargs)
            raise failure(self)
        return real_text(self, data, *args, **kwargs)

    def save(self, fp, *args, **kwargs):
        if hit(fp):
            real_bytes(Path(fp), b"\x89PNG\r\n half")
            raise failure(fp)
        return real_save(self, fp, *args, **kwargs)

    def write(fd, data):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name and hit(name):
            real_write(fd, data[:len(data) // 2])
            raise failure(name)
        return real_write(fd, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    monkeypatch.setattr(Path, "write_text", write_text)
    monkeypatch.setattr(Image.Image, "save", save)
    monkeypatch.setattr(os, "write", write)


def full_disk(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _fail_writes(tmp_path, monkeypatch, errno.ENOSPC)
    return {}


def full_disk_json(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    """Room for the output, none for its sidecar."""
    _fail_writes(tmp_path, monkeypatch, errno.ENOSPC, lambda name: name.endswith(".json"))
    return {}


def full_disk_gif(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _fail_writes(tmp_path, monkeypatch, errno.ENOSPC, lambda name: name.endswith(".gif"))
    return {}


def full_disk_png(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _fail_writes(tmp_path, monkeypatch, errno.ENOSPC, lambda name: name.endswith(".png"))
    return {}


def full_disk_dog(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    """The second prompt's image meets a full disk; the first one's was written whole."""
    _fail_writes(tmp_path, monkeypatch, errno.ENOSPC, lambda name: "a-dog" in name)
    return {}


def full_disk_manifest(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _fail_writes(tmp_path, monkeypatch, errno.ENOSPC, lambda name: name.endswith(".jsonl"))
    return {}


def read_only_late(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    """The file system turns read-only after the checks before loading (remounted, say)."""
    _fail_writes(tmp_path, monkeypatch, errno.EROFS)
    return {}


def unwritable_late(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _fail_writes(tmp_path, monkeypatch, errno.EACCES)
    return {}


def _stdout_fails(monkeypatch, number: int) -> None:
    """stdout refuses every write (what a full disk or a dead terminal does to a redirected stdout)."""
    import conftest

    def write(text):
        raise OSError(number, os.strerror(number))

    monkeypatch.setattr(conftest._STDOUT, "write", write)


def stdout_eio(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _stdout_fails(monkeypatch, errno.EIO)
    return {}


def stdout_enospc(tmp_path: Path, home: Path, monkeypatch) -> dict[str, str]:
    _stdout_fails(monkeypatch, errno.ENOSPC)
    return {}


# --- the runner --------------------------------------------------------------------------------------------


def _fill(text: str, where: dict[str, str]) -> str:
    for key, value in where.items():
        text = text.replace("{" + key + "}", value)
    return text


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `path` (without following symlinks) with its size and modification time."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            entry = Path(root) / name
            stat = entry.lstat()
            found[str(entry)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _outside(tmp_path: Path, allowed: list[Path]) -> dict[str, tuple[int, int]]:
    """What lies in the test's folder and the one above it, but not in the folders a run may write."""
    everything = {**_tree(tmp_path), **{str(p): (0, 0) for p in tmp_path.parent.iterdir()}}
    keep = [str(a) for a in allowed]
    return {k: v for k, v in everything.items() if not any(k == a or k.startswith(a + os.sep) for a in keep)}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_fault_is_one_clear_error(case: Case, tmp_path, stablekit_home, monkeypatch):
    out = tmp_path / "out"
    where = {"tmp": str(tmp_path), "home": str(stablekit_home), "out": str(out)}
    for name, content in case.files.items():
        path = Path(_fill(name, where))
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(_fill(content, where))
    env = {k: _fill(v, where) for k, v in case.env.items()}
    for setup in (case.setup or "").split("+") if case.setup else ():
        env.update(globals()[setup](tmp_path, stablekit_home, monkeypatch))
    homes = [stablekit_home, Path(env.get("STABLEKIT_HOME", stablekit_home)), out, tmp_path / "hf-home"]
    before = _outside(tmp_path, homes)

    result = run_cli(*(_fill(arg, where) for arg in case.args), env=env)

    assert result.returncode in ((case.code,) if case.code else (1, 2)), (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    assert lines.index(errors[0]) >= len(lines) - 2 and all(not line.strip() or line.startswith(("Error: ", "Hint: "))
                                                           for line in lines[lines.index(errors[0]):]), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    for needle in case.needles:
        assert _fill(needle, where) in result.stderr, result.stderr
    assert _outside(tmp_path, homes) == before
    if case.keeps:  # what was finished before the fault stays, whole; only it is printed
        kept = _whole_outputs(out)
        assert all(line in kept for line in result.stdout.split()), (result.stdout, kept)
        return
    assert result.stdout == "", result.stdout  # no result is printed for a run that failed
    assert not out.exists() or not any(out.iterdir()), f"a failed run left output behind: {list(out.iterdir())}"


def _whole_outputs(out: Path) -> list[str]:
    """The outputs in `out`, each checked whole: no temporary files, every output with its sidecar and every
    sidecar with its output (the batch manifest aside)."""
    names = {p.name for p in out.iterdir()}
    assert not [n for n in names if ".partial" in n], names
    outputs = [n for n in names if not n.endswith((".json", ".jsonl"))]
    assert all(f"{n}.json" in names for n in outputs), names
    assert all(n[:-5] in names for n in names if n.endswith(".json")), names
    return [str(out / n) for n in outputs]


def test_a_full_disk_fails_the_job_it_meets_and_the_rest_still_run(tmp_path, stablekit_home, monkeypatch):
    """A prompts file (the batch loop): the image that meets the full disk is that job's error, said once as it
    happens and counted at the end; the other prompt's image is whole; nothing half-written."""
    out = tmp_path / "out"
    (tmp_path / "p.txt").write_text("a dog\na cat\n")
    full_disk_dog(tmp_path, stablekit_home, monkeypatch)
    result = run_cli("image", "--prompts-file", str(tmp_path / "p.txt"), "-m", "tiny-sd", "--seed", "5", "-d", str(out))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [f"Error: prompt 1: cannot write {out}/a-dog-5.png: the disk is full",
                      "Error: 1 of 2 prompts failed: prompt 1"], result.stderr
    assert result.stdout.split() == _whole_outputs(out) == [str(out / "a-cat-6.png")]


def test_the_table_covers_every_command():
    commands = {case.args[0] if case.args[0] != "models" else " ".join(case.args[:2]) for case in CASES}
    assert {"image", "video", "audio", "mesh", "text", "models list", "models info", "models pull",
            "models rm", "batch", "reproduce", "lock", "info", "presets"} <= commands
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)
