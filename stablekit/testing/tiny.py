"""Deterministic tiny random-weight models in the real repo layouts, so tests and smoke runs need no downloads."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import tempfile
import warnings

TINY_KINDS: tuple[str, ...] = ("sd", "sdxl", "sd3", "svd", "audio", "lm", "triposr")

MARKER = ".stablekit-tiny"
# Bump when any builder changes, so `ensure` rebuilds folders made by older code.
FORMAT_VERSION = 2

CLIP_MAX_LENGTH = 77  # as the real CLIP tokenizers
T5_MAX_LENGTH = 64  # small, so prompts encode fast; pipelines pad to it
LM_CONTEXT = 256
TEXT_VOCAB_SIZE = 1000  # text encoders must cover every tokenizer id

_LM_SPECIALS = ("<|endoftext|>", "<|user|>", "<|assistant|>", "<|system|>")
# The zephyr chat format of stabilityai/stablelm-2-zephyr-1_6b: "<|user|>\n{text}<|endoftext|>\n<|assistant|>\n".
_ZEPHYR_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] in ('user', 'system', 'assistant') %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{% endfor %}"
)
_LM_CORPUS = (
    "A photo of a cat sitting on a red chair.",
    "The quick brown fox jumps over the lazy dog.",
    "Stable Diffusion turns a text prompt into an image.",
    "Hello! How can I help you today?",
    "Write a short poem about the sea and the sky.",
    "def add(a, b):\n    return a + b\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9, and symbols: #$%&*()[]{}<>/\\|@^_~`'\";:-+=?",
)


def build(kind: str, folder: str | os.PathLike) -> pathlib.Path:
    """Build tiny model `kind` into `folder`, replacing what is there, and return the folder.

    Built in a temporary sibling and renamed into place, so a reader never sees half a model.
    """
    folder = pathlib.Path(folder)
    tmp = _build_temp(kind, folder)
    if not _install(tmp, folder):
        _replace(tmp, folder)
    return folder


def ensure(kind: str, folder: str | os.PathLike) -> pathlib.Path:
    """Return `folder` if it holds a complete build of `kind`, else build it there.

    Two processes may race: one wins the rename, the other discards its copy and uses the winner's.
    """
    folder = pathlib.Path(folder)
    _check_kind(kind)
    if is_complete(kind, folder):
        return folder
    tmp = _build_temp(kind, folder)
    if _install(tmp, folder):
        return folder
    if is_complete(kind, folder):  # another process finished first: use its copy
        shutil.rmtree(tmp, ignore_errors=True)
        return folder
    _replace(tmp, folder)
    return folder


def is_complete(kind: str, folder: str | os.PathLike) -> bool:
    """Whether `folder` holds a finished build of `kind` made by this format version (the marker comes last)."""
    try:
        marker = json.loads((pathlib.Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return False
    return marker == _marker(kind)


def _marker(kind: str) -> dict:
    return {"kind": kind, "format": FORMAT_VERSION}


def _check_kind(kind: str) -> None:
    if kind not in TINY_KINDS:
        raise ValueError(f"unknown tiny model kind {kind!r}; choose one of {', '.join(TINY_KINDS)}")


def _build_temp(kind: str, folder: pathlib.Path) -> pathlib.Path:
    """Build into a fresh temporary sibling of `folder` (same filesystem, so the rename is atomic)."""
    _check_kind(kind)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        with _quiet(kind):
            _BUILDERS[kind](tmp)
        (tmp / MARKER).write_text(json.dumps(_marker(kind)) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


def _install(tmp: pathlib.Path, folder: pathlib.Path) -> bool:
    """Rename `tmp` to `folder`; False when `folder` already exists with content (rename refuses then)."""
    try:
        os.rename(tmp, folder)
    except OSError:
        if not folder.exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return False
    return True


def _replace(tmp: pathlib.Path, folder: pathlib.Path) -> None:
    """Swap `tmp` in for an existing `folder`: move the old one aside first, then delete it.

    Readers may find no folder for the instant between the two renames; a racing builder that fills that gap
    wins, and `tmp` is dropped (both hold the same complete build).
    """
    trash = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    try:
        with contextlib.suppress(FileNotFoundError):
            os.rename(folder, trash / "old")
        try:
            os.rename(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not folder.exists():
                raise
    finally:
        shutil.rmtree(trash, ignore_errors=True)


@contextlib.contextmanager
def _quiet(kind: str):
    """Silence library warnings and progress bars while building, restoring the previous settings after.

    diffusers is left alone for the language model, whose build would otherwise pay seconds to import it.
    """
    import transformers.utils.logging as tlog

    loggers = [tlog]
    if kind != "lm":
        import diffusers.utils.logging as dlog

        loggers.append(dlog)
    saved = [(log.get_verbosity(), log.is_progress_bar_enabled()) for log in loggers]
    for log in loggers:
        log.set_verbosity_error()
        log.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for log, (level, bar) in zip(loggers, saved, strict=True):
            log.set_verbosity(level)
            if bar:
                log.enable_progress_bar()


def _seeded(seed: int, factory, *args, **kwargs):
    """Create one component right after seeding, so its weights never depend on what was built before."""
    import torch

    torch.manual_seed(seed)
    return factory(*args, **kwargs).eval()


# --- tokenizers -----------------------------------------------------------------------------------


def _byte_chars() -> list[str]:
    """GPT-2's byte-to-unicode characters in CLIP's vocabulary order (printable bytes first)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    rest = [b for b in range(256) if b not in bs]
    cs = bs + [256 + n for n in range(len(rest))]
    return [chr(c) for c in cs]


def _clip_vocab() -> dict[str, int]:
    """A byte-level CLIP vocabulary with no merges: every byte, its `</w>` form, start and end (514 ids)."""
    chars = _byte_chars()
    tokens = [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]
    return {token: i for i, token in enumerate(tokens)}


def _clip_tokenizer():
    from transformers import CLIPTokenizer

    return CLIPTokenizer(vocab=_clip_vocab(), merges=[], model_max_length=CLIP_MAX_LENGTH)


def _clip_repo_files(path: pathlib.Path) -> None:
    """Rewrite a saved CLIP tokenizer folder to the real repos' files (vocab.json + merges.txt, no tokenizer.json).

    transformers 5 saves only tokenizer.json; the SD repos ship the older pair, and both must keep loading.
    """
    (path / "tokenizer.json").unlink()
    (path / "vocab.json").write_text(json.dumps(_clip_vocab(), ensure_ascii=False), encoding="utf-8")
    (path / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def _t5_tokenizer():
    """A small unigram T5 tokenizer (pad 0, eos 1, unk 2, "▁" word pieces) that reloads from tokenizer.json."""
    from transformers import T5TokenizerFast

    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + c, -3.0) for c in letters]
    pieces += [(c, -4.0) for c in letters + letters.upper() + "0123456789.,!?'\"-:;()"]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=T5_MAX_LENGTH)


def _lm_tokenizer():
    """Train a byte-level BPE (~300 ids) in memory and wrap it with the zephyr chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=list(_LM_SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_LM_CORPUS, trainer=trainer)
    eos = _LM_SPECIALS[0]
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=eos,
        eos_token=eos,
        unk_token=eos,
        pad_token=eos,
        model_max_length=LM_CONTEXT,
        chat_template=_ZEPHYR_TEMPLATE,
    )


# --- shared components -----------------------------------------------------------------------------


def _clip_text(seed: int, with_projection: bool = False):
    """A 2-layer CLIP text encoder (hidden 32, projection 32) over the tiny CLIP vocabulary."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        vocab_size=TEXT_VOCAB_SIZE,
        max_position_embeddings=CLIP_MAX_LENGTH,
        bos_token_id=512,
        eos_token_id=513,
        pad_token_id=513,
    )
    return _seeded(seed, CLIPTextModelWithProjection if with_projection else CLIPTextModel, config)


def _t5_encoder(seed: int):
    """A 2-layer T5 encoder (d_model 32) over the tiny T5 vocabulary."""
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=TEXT_VOCAB_SIZE,
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    return _seeded(seed, T5EncoderModel, config)


def _kl_vae(seed: int, blocks: tuple[int, ...], **config):
    """An AutoencoderKL with one block per entry of `blocks`: images are 2**(len-1) times the latents."""
    from diffusers import AutoencoderKL

    return _seeded(
        seed,
        AutoencoderKL,
        block_out_channels=blocks,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        layers_per_block=1,
        norm_num_groups=2,
        sample_size=64,
        **{"latent_channels": 4, **config},
    )


# SD 1.5's and SDXL's training noise schedule.
_LDM_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def _save(pipe, path: pathlib.Path) -> None:
    """Save a pipeline as the hub repos are laid out: safetensors, fp32, CLIP tokenizers as vocab + merges."""
    pipe.save_pretrained(path, safe_serialization=True)
    for name, component in pipe.components.items():
        if type(component).__name__ == "CLIPTokenizer":
            _clip_repo_files(path / name)


def _name_component(path: pathlib.Path, name: str, library_class: list[str]) -> None:
    """Name a component's class in model_index.json as the hub repo does (diffusers' own JSON formatting).

    Without torchvision, transformers 5 hands out `CLIPImageProcessorPil`, a name older versions can't load.
    """
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text(encoding="utf-8"))
    index[name] = library_class
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --- builders, one per kind --------------------------------------------------------------------------


def _build_sd(path: pathlib.Path) -> None:
    """stable-diffusion-v1-5 layout: UNet on 32x32 latents, 2-block VAE (x2) -> 64x64 images."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    unet = _seeded(
        0,
        UNet2DConditionModel,
        sample_size=32,
        block_out_channels=(4, 8),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    scheduler = PNDMScheduler(**_LDM_SCHEDULE, steps_offset=1, skip_prk_steps=True, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=_kl_vae(1, (4, 8)),
        text_encoder=_clip_text(2),
        tokenizer=_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _save(pipe, path)


def _build_sdxl(path: pathlib.Path) -> None:
    """stable-diffusion-xl-base-1.0 layout: two CLIP encoders, text_time conditioning, 64x64 images."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    unet = _seeded(
        0,
        UNet2DConditionModel,
        sample_size=32,
        block_out_channels=(2, 4),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 size/crop numbers x 8 + text_encoder_2's 32
        cross_attention_dim=64,  # both encoders' hidden states side by side
        norm_num_groups=1,
    )
    scheduler = EulerDiscreteScheduler(
        **_LDM_SCHEDULE,
        steps_offset=1,
        prediction_type="epsilon",
        interpolation_type="linear",
        timestep_spacing="leading",
        use_karras_sigmas=False,
    )
    pipe = StableDiffusionXLPipeline(
        vae=_kl_vae(1, (4, 8), scaling_factor=0.13025, force_upcast=True),
        text_encoder=_clip_text(2),
        text_encoder_2=_clip_text(3, with_projection=True),
        tokenizer=_clip_tokenizer(),
        tokenizer_2=_clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    _save(pipe, path)


def _build_sd3(path: pathlib.Path) -> None:
    """stable-diffusion-3-medium-diffusers layout: MMDiT (patch 2) on 32x32x16 latents, 2-block VAE -> 64x64.

    16 latent channels as in the real model: SD3's inpainting pipeline accepts nothing else.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = _seeded(
        0,
        SD3Transformer2DModel,
        sample_size=32,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=32,  # the T5 width
        pooled_projection_dim=64,  # both CLIP projections side by side
    )
    vae = _kl_vae(
        1, (4, 8), latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=_clip_text(2, with_projection=True),
        tokenizer=_clip_tokenizer(),
        text_encoder_2=_clip_text(3, with_projection=True),
        tokenizer_2=_clip_tokenizer(),
        text_encoder_3=_t5_encoder(4),
        tokenizer_3=_t5_tokenizer(),
    )
    _save(pipe, path)


def _build_svd(path: pathlib.Path) -> None:
    """stable-video-diffusion-img2vid layout: 16x16 latents, 2-block temporal VAE -> 32x32, 4 frames."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = _seeded(
        0,
        UNetSpatioTemporalConditionModel,
        sample_size=16,
        num_frames=4,
        in_channels=8,  # noisy latents + the conditioning image's latents
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlockSpatioTemporal", "DownBlockSpatioTemporal"),
        up_block_types=("UpBlockSpatioTemporal", "CrossAttnUpBlockSpatioTemporal"),
        cross_attention_dim=32,
        num_attention_heads=8,
        projection_class_embeddings_input_dim=96,  # fps, motion bucket, noise augmentation x 32
        addition_time_embed_dim=32,
    )
    vae = _seeded(
        1,
        AutoencoderKLTemporalDecoder,
        block_out_channels=(32, 64),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        latent_channels=4,
        layers_per_block=2,
        sample_size=32,
    )
    # PIL input is resized to 224 before the encoder, so the vision tower keeps CLIP's 224 (7x7 patches of 32).
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=32,
        image_size=224,
        patch_size=32,
    )
    scheduler = EulerDiscreteScheduler(
        **_LDM_SCHEDULE,
        steps_offset=1,
        prediction_type="v_prediction",
        interpolation_type="linear",
        timestep_spacing="leading",
        timestep_type="continuous",
        use_karras_sigmas=True,
        sigma_min=0.002,
        sigma_max=700.0,
    )
    pipe = StableVideoDiffusionPipeline(
        vae=vae,
        image_encoder=_seeded(2, CLIPVisionModelWithProjection, vision),
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )
    _save(pipe, path)
    _name_component(path, "feature_extractor", ["transformers", "CLIPImageProcessor"])


def _build_audio(path: pathlib.Path) -> None:
    """stable-audio-open-1.0 layout: stereo 8 kHz, 1000 latents x hop 8 -> at most 1.0 s."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )

    transformer = _seeded(
        0,
        StableAudioDiTModel,
        sample_size=1000,
        in_channels=3,
        out_channels=3,
        num_layers=2,
        attention_head_dim=4,
        num_attention_heads=4,
        num_key_value_attention_heads=2,
        cross_attention_dim=4,
        time_proj_dim=8,
        global_states_input_dim=8,  # start and end seconds, 4 each
        cross_attention_input_dim=4,
    )
    vae = _seeded(
        1,
        AutoencoderOobleck,
        encoder_hidden_size=6,
        downsampling_ratios=[2, 4],  # lists: Oobleck concatenates them
        decoder_channels=3,
        decoder_input_channels=3,
        audio_channels=2,
        channel_multiples=[2, 4],
        sampling_rate=8000,
    )
    projection = _seeded(
        3, StableAudioProjectionModel, text_encoder_dim=32, conditioning_dim=4, min_value=0, max_value=32
    )
    scheduler = CosineDPMSolverMultistepScheduler(
        sigma_min=0.3,
        sigma_max=500.0,
        sigma_data=1.0,
        sigma_schedule="exponential",
        solver_order=2,
        prediction_type="v_prediction",
        rho=7.0,
        final_sigmas_type="zero",
    )
    pipe = StableAudioPipeline(
        vae=vae,
        text_encoder=_t5_encoder(2),
        projection_model=projection,
        tokenizer=_t5_tokenizer(),
        transformer=transformer,
        scheduler=scheduler,
    )
    _save(pipe, path)


def _build_lm(path: pathlib.Path) -> None:
    """stablelm-2-zephyr-1_6b layout: StableLmForCausalLM + fast tokenizer with a chat template, 256 context."""
    from transformers import GenerationConfig, StableLmConfig, StableLmForCausalLM

    tokenizer = _lm_tokenizer()
    eos = tokenizer.eos_token_id
    config = StableLmConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=LM_CONTEXT,
        partial_rotary_factor=0.25,
        use_qkv_bias=True,
        tie_word_embeddings=False,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    model = _seeded(0, StableLmForCausalLM, config)
    model.generation_config = GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)


# stabilityai/TripoSR's config.yaml with reduced numbers (GroupNorm keeps its 32 groups, so 32 channels).
_TRIPOSR_YAML = """\
cond_image_size: 64

image_tokenizer_cls: tsr.models.tokenizers.image.DINOSingleImageTokenizer
image_tokenizer:
  pretrained_model_name_or_path: "vit_config.json" # the release names facebook/dino-vitb16

tokenizer_cls: tsr.models.tokenizers.triplane.Triplane1DTokenizer
tokenizer:
  plane_size: 8
  num_channels: 32

backbone_cls: tsr.models.transformer.transformer_1d.Transformer1D
backbone:
  in_channels: ${tokenizer.num_channels}
  num_attention_heads: 2
  attention_head_dim: 16
  num_layers: 2
  cross_attention_dim: 32

post_processor_cls: tsr.models.network_utils.TriplaneUpsampleNetwork
post_processor:
  in_channels: 32
  out_channels: 8

decoder_cls: tsr.models.network_utils.NeRFMLP
decoder:
  in_channels: 24 # 3 * 8
  n_neurons: 16
  n_hidden_layers: 3
  activation: silu

renderer_cls: tsr.models.nerf_renderer.TriplaneNeRFRenderer
renderer:
  radius: 0.87 # slightly larger than 0.5 * sqrt(3)
  feature_reduction: concat
  density_activation: exp
  density_bias: -1.0
  num_samples_per_ray: 128
"""
_TRIPOSR_VIT = {"architectures": ["ViTModel"], "hidden_act": "gelu", "hidden_size": 32, "image_size": 32,
                "intermediate_size": 64, "layer_norm_eps": 1e-12, "model_type": "vit", "num_attention_heads": 4,
                "num_channels": 3, "num_hidden_layers": 2, "patch_size": 8, "qkv_bias": True}


def _build_triposr(path: pathlib.Path) -> None:
    """stabilityai/TripoSR layout (config.yaml, weights as model.safetensors): 64px input, 16x16 triplanes.

    Random weights drawn to keep the density smooth, then the decoder's last layer is set so that about a third
    of the space lies above the iso-level for any input: every image gives a (random-looking) closed blob.
    """
    import math

    import torch
    from safetensors.torch import save_file

    from .models.triposr import build, load_config
    from .models.triposr.isosurface import THRESHOLD, grid_axis, grid_points

    (path / "config.yaml").write_text(_TRIPOSR_YAML, encoding="utf-8")
    (path / "vit_config.json").write_text(json.dumps(_TRIPOSR_VIT, indent=2) + "\n", encoding="utf-8")
    model = build(load_config(path), device="cpu")
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name == "tokenizer.embeddings":  # smooth planes: a 3x3 field per channel, enlarged
                coarse = torch.randn(3 * param.shape[1], 1, 3, 3, generator=generator)
                smooth = torch.nn.functional.interpolate(coarse, size=param.shape[-2:], mode="bicubic")
                param.copy_((smooth.view(param.shape) + 0.05 * noise) / param.shape[1] ** 0.5)
            elif name.endswith(("cls_token", "position_embeddings")):
                param.copy_(0.5 * noise)
            elif param.ndim == 1 and "norm" in name:
                param.copy_(1 + 0.2 * noise if name.endswith("weight") else 0.1 * noise)
            elif param.ndim == 1:
                param.copy_(0.1 * noise)
            elif "upsample" in name:  # one kernel shared by the four sub-pixels, so upsampling stays smooth
                param.copy_((noise[..., :1, :1] + 0.3 * noise) / param.shape[0] ** 0.5)
            else:  # 1 / sqrt(fan_in); the backbone's output small, so the smooth planes dominate
                param.copy_(noise / param[0].numel() ** 0.5 * (0.2 if "proj_out" in name else 1.0))
        last = model.decoder.layers[-1]
        codes = model(torch.rand(3, 3, 64, 64, generator=generator))  # three noise images
        points = grid_points(grid_axis(24, model.config.renderer.radius), 0, 24**3)
        raw = torch.cat([model.query.raw(code, points) for code in codes]) - last.bias  # (N, 4) without bias
        scale = 1.5 / raw.std(dim=0)  # density and colour logits with std 1.5 over space
        last.weight.mul_(scale[:, None])
        last.bias[1:] = 0.0
        iso = math.log(THRESHOLD) - model.config.renderer.density_bias
        last.bias[0] = iso - torch.quantile(raw[:, 0] * scale[0], 0.67)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path / "model.safetensors")


_BUILDERS = {
    "sd": _build_sd,
    "sdxl": _build_sdxl,
    "sd3": _build_sd3,
    "svd": _build_svd,
    "audio": _build_audio,
    "lm": _build_lm,
    "triposr": _build_triposr,
}
