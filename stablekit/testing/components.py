"""Components shared by the tiny diffusion pipelines: seeded construction, text encoders, a KL VAE, saving."""

from __future__ import annotations

import json
import pathlib

from .tokenizers import CLIP_MAX_LENGTH, TEXT_VOCAB_SIZE, clip_repo_files


def seeded(seed: int, factory, *args, **kwargs):
    """Create one component right after seeding, so its weights never depend on what was built before."""
    import torch

    torch.manual_seed(seed)
    return factory(*args, **kwargs).eval()



def clip_text(seed: int, with_projection: bool = False):
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
    return seeded(seed, CLIPTextModelWithProjection if with_projection else CLIPTextModel, config)


def t5_encoder(seed: int):
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
    return seeded(seed, T5EncoderModel, config)


def kl_vae(seed: int, blocks: tuple[int, ...], **config):
    """An AutoencoderKL with one block per entry of `blocks`: images are 2**(len-1) times the latents."""
    from diffusers import AutoencoderKL

    return seeded(
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
LDM_SCHEDULE = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)


def save(pipe, path: pathlib.Path) -> None:
    """Save a pipeline as the hub repos are laid out: safetensors, fp32, CLIP tokenizers as vocab + merges."""
    pipe.save_pretrained(path, safe_serialization=True)
    for name, component in pipe.components.items():
        if type(component).__name__ == "CLIPTokenizer":
            clip_repo_files(path / name)


def name_component(path: pathlib.Path, name: str, library_class: list[str]) -> None:
    """Name a component's class in model_index.json as the hub repo does (diffusers' own JSON formatting).

    Without torchvision, transformers 5 hands out `CLIPImageProcessorPil`, a name older versions can't load.
    """
    index_file = path / "model_index.json"
    index = json.loads(index_file.read_text(encoding="utf-8"))
    index[name] = library_class
    index_file.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")

