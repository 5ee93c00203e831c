"""Tiny random-weight diffusion pipelines in the hub layouts: SD 1.5, SDXL, SD3, SVD and Stable Audio Open."""

from __future__ import annotations

import pathlib

from .components import LDM_SCHEDULE, clip_text, kl_vae, name_component, save, seeded, t5_encoder
from .tokenizers import clip_tokenizer, t5_tokenizer


def build_sd(path: pathlib.Path) -> None:
    """stable-diffusion-v1-5 layout: UNet on 32x32 latents, 2-block VAE (x2) -> 64x64 images."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    unet = seeded(
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
    scheduler = PNDMScheduler(**LDM_SCHEDULE, steps_offset=1, skip_prk_steps=True, set_alpha_to_one=False)
    pipe = StableDiffusionPipeline(
        vae=kl_vae(1, (4, 8)),
        text_encoder=clip_text(2),
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    save(pipe, path)


def build_sdxl(path: pathlib.Path) -> None:
    """stable-diffusion-xl-base-1.0 layout: two CLIP encoders, text_time conditioning, 64x64 images."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    unet = seeded(
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
        **LDM_SCHEDULE,
        steps_offset=1,
        prediction_type="epsilon",
        interpolation_type="linear",
        timestep_spacing="leading",
        use_karras_sigmas=False,
    )
    pipe = StableDiffusionXLPipeline(
        vae=kl_vae(1, (4, 8), scaling_factor=0.13025, force_upcast=True),
        text_encoder=clip_text(2),
        text_encoder_2=clip_text(3, with_projection=True),
        tokenizer=clip_tokenizer(),
        tokenizer_2=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )
    save(pipe, path)


def build_sd3(path: pathlib.Path) -> None:
    """stable-diffusion-3-medium-diffusers layout: MMDiT (patch 2) on 32x32x16 latents, 2-block VAE -> 64x64.

    16 latent channels as in the real model: SD3's inpainting pipeline accepts nothing else.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = seeded(
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
    vae = kl_vae(
        1, (4, 8), latent_channels=16, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=vae,
        text_encoder=clip_text(2, with_projection=True),
        tokenizer=clip_tokenizer(),
        text_encoder_2=clip_text(3, with_projection=True),
        tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_encoder(4),
        tokenizer_3=t5_tokenizer(),
    )
    save(pipe, path)


def build_svd(path: pathlib.Path) -> None:
    """stable-video-diffusion-img2vid layout: 16x16 latents, 2-block temporal VAE -> 32x32, 4 frames."""
    from diffusers import (
        AutoencoderKLTemporalDecoder,
        EulerDiscreteScheduler,
        StableVideoDiffusionPipeline,
        UNetSpatioTemporalConditionModel,
    )
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = seeded(
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
    vae = seeded(
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
        **LDM_SCHEDULE,
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
        image_encoder=seeded(2, CLIPVisionModelWithProjection, vision),
        unet=unet,
        scheduler=scheduler,
        feature_extractor=CLIPImageProcessor(crop_size=224, size=224),
    )
    save(pipe, path)
    name_component(path, "feature_extractor", ["transformers", "CLIPImageProcessor"])


def build_audio(path: pathlib.Path) -> None:
    """stable-audio-open-1.0 layout: stereo 8 kHz, 1000 latents x hop 8 -> at most 1.0 s."""
    from diffusers import (
        AutoencoderOobleck,
        CosineDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )

    transformer = seeded(
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
    vae = seeded(
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
    projection = seeded(
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
        text_encoder=t5_encoder(2),
        projection_model=projection,
        tokenizer=t5_tokenizer(),
        transformer=transformer,
        scheduler=scheduler,
    )
    save(pipe, path)


def build_taesd(path: pathlib.Path, latent_channels: int = 4) -> None:
    """madebyollin/taesd layout (a bare AutoencoderTiny): 2 blocks (x2) to match the tiny pipelines' VAEs."""
    from diffusers import AutoencoderTiny

    vae = seeded(3, AutoencoderTiny, encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
                 num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=latent_channels)
    vae.save_pretrained(path, safe_serialization=True)


def build_taesd3(path: pathlib.Path) -> None:
    """madebyollin/taesd3 layout: the tiny autoencoder on SD3's 16 latent channels."""
    build_taesd(path, latent_channels=16)
