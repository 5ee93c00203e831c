"""How much memory a model needs for a workload under one placement strategy: pure per-family formulas.

Weights are parameter counts x bytes. What grows with the job is one formula per family in terms of what
drives it (latent megapixels x samples for the denoiser, decoded megapixels for the VAE, frames for video,
the fixed audio window, the KV cache from the model's config), each constant fitted to a measurement of
benchmarks/memory.py (README, "The device manager") or to a published figure, and cited where it is set.
"""

from __future__ import annotations

from dataclasses import dataclass

from .families import family

GIB = 1024**3
BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
DENOISERS = ("unet", "transformer", "model", "refiner_unet")
DECODERS = ("vae",)
# Process memory that is not the model's: the CPU figure is the intercept of the SD-Turbo fit (torch, diffusers
# and the text encoders' temporaries, 0.62 GiB at 256^2 and 512^2); on a GPU, what torch allocates beside weights
# and activations (cuBLAS workspaces, the scheduler's tensors): 0.08 GiB, the intercept of the model-offload fit
# below (H200, torch 2.11; the CUDA context itself is outside torch's allocator and outside the free memory the
# plan reads). MPS keeps the older, untested allowance.
RUNTIME_GIB = {"cuda": 0.1, "mps": 0.3, "cpu": 0.62}
_LOAD_RUNTIME_GIB = 0.5  # torch + diffusers while loading: the whole process after loading bf16 files as bf16 (0.53)
_LEAF_GIB = 0.15  # sequential offload: the largest single layer on the device (SDXL's 63 M-parameter embedding)


@dataclass(frozen=True)
class Formula:
    """What grows with the job for one family, in GiB at 16 bit (float32 doubles it)."""

    denoise: float = 0.0  # per latent megapixel per sample through the denoiser (CFG doubles the samples)
    decode: float = 0.0  # per megapixel decoded at once by the VAE
    tile_megapixels: float = 0.0  # what one VAE tile decodes (its config's sample_size squared)
    fixed: float = 0.0  # independent of size (audio's full window; TripoSR's one forward pass)
    block_share: float = 0.5  # two consecutive blocks of the denoiser at most / its weights (group offload)
    source: str = ""


# Fitted constants, with the measurement each comes from ("bench" = benchmarks/memory.py on the CPU, float32
# compute, figures in the README's table; "gpu" = tests/gpu/test_memory_gpu.py on an H200, bf16, torch 2.11's
# SDPA, torch.cuda.max_memory_allocated, benchmarks/results/gpu-tests-2026-11-28.log; "pub" =
# shared/notes/models.md's published GPU figures).
# denoise (gpu): model offload keeps only the UNet and its work on the GPU, so its peak less the UNet's weights and
# the runtime is the denoiser's activations: SD-Turbo 512^2 with guidance 1.78 GiB - UNet 1.61 - 0.08 over 0.52
# MP-samples -> 0.13; SDXL 1024^2 with guidance 5.23 - 4.78 - 0.08 over 2.10 -> 0.17 (attention never
# materialises its score matrix with SDPA, so activations are small and linear in tokens).
FORMULAS: dict[str, Formula] = {
    # decode: the slope of SD-Turbo's generation peak from 256^2 to 512^2 (5.71 -> 6.55 GiB, float32, guidance 0:
    # the VAE decode is the peak), 4.27 GiB/MP in fp32; the intercept is RUNTIME_GIB["cpu"]
    "sd15": Formula(denoise=0.13, decode=2.15, tile_megapixels=0.262, block_share=0.49,
                    source="decode: bench sd-turbo 256/512 (same VAE); denoise: gpu sd-turbo (same UNet widths)"),
    "sd21": Formula(denoise=0.13, decode=2.15, tile_megapixels=0.262, block_share=0.49,
                    source="decode: bench sd-turbo 256/512, gpu sd-turbo 512^2 (ratio 1.00); denoise: gpu sd-turbo "
                           "model offload"),
    "sdxl": Formula(denoise=0.17, decode=2.15, tile_megapixels=1.05, block_share=0.63,
                    source="decode: the SD VAE's (same decoder; bench), gpu sdxl 1024^2 everything on the device "
                           "8.98 GiB; denoise: gpu sdxl model offload; checks, pub fp16 batch 4 (A100, as the GPU "
                           "holds it: reserved + context): model offload 20.2 GB = 4 MP decoded at once in fp32 "
                           "(force_upcast) -> 18.3 GiB planned; VAE slicing 15.4 GB -> 11.1 GiB planned x 1.26 "
                           "(gpu reserved/allocated without offload) + ~0.5 context = 14.5 GiB = 15.6 GB"),
    "sd3": Formula(denoise=0.9, decode=2.15, tile_megapixels=1.05, block_share=0.084,
                   source="decode: the SD VAE's widths; denoise: [provisional]; pub check: SD3 Medium model "
                          "offload ~12.1 GB (T5 + CLIP-G phase)"),
    "svd": Formula(denoise=0.25, decode=1.6, block_share=0.45,
                   source="pub: svd-xt under 8 GB with model offload, forward chunking, decode chunks of 2; "
                          "bench svd 2 and 4 frames at 448x256, decode chunks 4 and 1: whole-process ratios "
                          "1.02-1.15 (on a CPU the load's resident pages hide the work's own share)"),
    "stable-audio": Formula(denoise=0.2, decode=2.67, block_share=0.083,
                            source="bench audio-10s and audio-30s (10.90 and 10.95 GiB: the full window, whatever "
                                   "--seconds), fp32 files and compute: 10.90 GiB = weights 4.93 "
                                   "+ runtime 0.62 + 5.35 per 47.55 s window (the Oobleck decoder at 44.1 kHz, and "
                                   "the files' pages staying mapped beside the weights: not separated)"),
    "stablelm": Formula(source="KV cache from the config; bench lm-1.6b 128 tokens (ratio 1.01)"),
    "triposr": Formula(fixed=0.05, source="bench triposr: 2.25 GiB = weights 1.56 + runtime 0.62 + ~0.07 for the "
                                          "512 px forward and the 128^3 grid in CPU chunks (random weights: no "
                                          "surface, so marching cubes and colour queries are not in it)"),
    "vae": Formula(decode=2.15, tile_megapixels=0.262, source="the SD VAE's (bench sd-turbo)"),
}
# block_share: block-level group offload streams the next block in while one computes, so two consecutive blocks
# (in the order they run: down blocks, mid block, up blocks) can be on the GPU together; the largest such pair over
# the denoiser's weights, counted on the meta device. SDXL's mid block and up_blocks[0] hold 63 % of its UNet, so
# group offload saves little there. Measured (gpu): SDXL 1024^2 3.34 GiB against 3.46 planned; SD-Turbo 512^2
# 0.80 (its VAE decode, planned 0.80; the pair 0.79 + work stays under it in practice).


@dataclass(frozen=True)
class Workload:
    """How big the job is: what activations and decode memory scale with."""

    width: int | None = None
    height: int | None = None
    batch: int = 1
    frames: int | None = None
    seconds: float | None = None
    tokens: int | None = None
    guided: bool = True  # classifier-free guidance runs the denoiser on two samples per output

    def describe(self) -> str:
        parts = []
        if self.width and self.height:
            parts.append(f"{self.width}x{self.height}")
        if self.frames:
            parts.append(f"{self.frames} frames")
        if self.seconds:
            parts.append(f"{self.seconds:g} s")
        if self.tokens:
            parts.append(f"{self.tokens} tokens")
        if self.batch > 1:
            parts.append(f"batch {self.batch}")
        return ", ".join(parts) or "default size"


@dataclass(frozen=True)
class Strategy:
    """One way to place the model: offload level and decode switches (`device_weights`: what accelerate's
    device_map may put on the GPU, in GiB, for a transformers model)."""

    offload: str = "none"
    tiling: bool = False
    slicing: bool = False
    decode_chunk: int | None = None
    device_weights: float | None = None

    @property
    def label(self) -> str:
        extras = [name for name, on in (("VAE tiling", self.tiling), ("VAE slicing", self.slicing)) if on]
        if self.decode_chunk:
            extras.append(f"decode chunks of {self.decode_chunk}")
        if self.offload == "none":
            offload = "everything on the device"
        elif self.device_weights is not None:
            offload = f"device_map with {self.device_weights:.1f} GiB of weights on the GPU"
        else:
            offload = f"{self.offload} offload"
        return ", ".join([offload, *extras])


@dataclass(frozen=True)
class Estimate:
    """GiB: `peak` on the device (the larger of loading and generating where both use it), `load` in RAM while
    the weights are read and converted, `resident` weights on the device at the generation peak, `work` what
    the job adds there, `host` RAM the offloaded weights need."""

    peak: float
    generate: float
    load: float
    weights: float
    resident: float
    work: float
    host: float
    phase: str


def weights(spec, dtype: str) -> dict[str, float]:
    return {name: millions * 1e6 * BYTES[dtype] / GIB for name, millions in spec.memory.params.items()}


def formula(spec) -> Formula:
    """The family's formula; a record with its own per-unit figures (an architecture unlike its family's: the
    tiny test models, TAESD, a user's record) or of a family this table lacks uses those."""
    m = spec.memory
    known = FORMULAS.get(spec.family)
    if known and not (m.activation_gib or m.decode_gib):
        return known
    return Formula(denoise=m.activation_gib, decode=m.decode_gib, fixed=m.activation_gib if m.unit == "fixed" else 0,
                   source=f"{spec.id}'s catalog record")


def kv_cache_gib(spec, tokens: int, dtype: str) -> float:
    """K and V for every layer and key/value head of the config, for `tokens` positions."""
    m = spec.memory
    if not (m.layers and m.kv_heads and m.head_dim):
        return m.activation_gib * tokens / 1000  # a record without the config's figures: its own per-1k figure
    return 2 * m.layers * m.kv_heads * m.head_dim * tokens * BYTES[dtype] / GIB


def work_gib(spec, work: Workload, dtype: str, strategy: Strategy) -> tuple[float, float]:
    """(denoiser / model activations, decode) in GiB for the job under `strategy`."""
    f, scale = formula(spec), BYTES[dtype] / 2
    megapixels = (work.width or 0) * (work.height or 0) / 1e6
    samples = max(work.batch, 1) * (2 if work.guided else 1)
    unit = spec.memory.unit
    if spec.modality == "text":
        tokens = work.tokens or 1024
        prefill = 4 * tokens * (spec.memory.head_dim * spec.memory.kv_heads or 2048) * BYTES[dtype] / GIB
        return kv_cache_gib(spec, tokens, dtype) + prefill, 0.0
    if unit == "megapixel_frames":
        frames = work.frames or 1
        chunk = min(strategy.decode_chunk or frames, frames)
        act = f.denoise * megapixels * frames * samples * scale
        if chunk < frames:
            act *= 0.5  # the UNet's feed-forward layers chunked too (forward chunking)
        return act, f.decode * megapixels * chunk * scale
    if unit == "seconds":  # per window: the full window is denoised and decoded, whatever --seconds says
        return f.denoise * samples * scale, f.decode * max(work.batch, 1) * scale
    if unit == "fixed":
        return f.fixed * scale, 0.0
    act = f.denoise * megapixels * samples * scale
    decoded = megapixels * (1 if strategy.slicing else max(work.batch, 1))
    if strategy.tiling and f.tile_megapixels:
        decoded = min(decoded, f.tile_megapixels)
    return act, f.decode * decoded * BYTES[decode_dtype(spec, dtype)] / 2


def decode_dtype(spec, dtype: str) -> str:
    """SDXL's VAE overflows in fp16, so its pipeline upcasts it to fp32 for decoding (force_upcast) unless the
    fp16-fix VAE was found: plan for the upcast (it is also what the NaN re-decode uses)."""
    return "float32" if dtype == "float16" and family(spec.family).fp16_vae else dtype


def load_extra_gib(spec, dtype: str) -> float:
    """Loading converts each component from the file's dtype: its file-dtype copy lives until it is converted.
    Measured: SD-Turbo from bf16 files to fp32 peaks 1.4 GiB (its UNet's file) over the fp32 weights; the
    same files loaded as bf16 are mapped, not copied (0.5 GiB in all)."""
    file_bytes = spec.memory.file_bits / 8
    if file_bytes == BYTES[dtype]:
        return 0.0
    return max(spec.memory.params.values()) * 1e6 * file_bytes / GIB


def estimate(spec, work: Workload, dtype: str, kind: str, strategy: Strategy) -> Estimate:
    """The peak of `spec` running `work` in `dtype` on a `kind` device (cuda, mps, cpu) placed by `strategy`."""
    w = weights(spec, dtype)
    total = sum(w.values())
    act, decode = work_gib(spec, work, dtype, strategy)
    runtime = RUNTIME_GIB[kind]
    denoisers = {n: v for n, v in w.items() if n in DENOISERS}
    decoders = {n: v for n, v in w.items() if n in DECODERS}
    encoders = {n: v for n, v in w.items() if n not in denoisers and n not in decoders}
    big_denoiser = max(denoisers.values(), default=0.0)
    phases: dict[str, tuple[float, float]]  # name -> (resident weights, work)
    if strategy.offload == "none":
        phases = {"denoise": (total, act), "decode": (total, decode)}
    elif strategy.device_weights is not None:  # accelerate's device_map: its budget of weights, then the work
        phases = {"generate": (min(strategy.device_weights, total), act)}
    elif strategy.offload == "model":  # one component at a time (base and refiner UNets alternate) ...
        phases = {"denoise": (big_denoiser, act), "decode": (sum(decoders.values()), decode)}
        phases.update(_encoders(encoders, pairs=work.guided))
    elif strategy.offload == "group":  # two blocks of the denoiser (one computing, one streaming in); encoders
        # and the VAE have no block lists diffusers can split, so each is one group, whole on the GPU
        share = formula(spec).block_share
        phases = {"denoise": (share * big_denoiser, act), "decode": (sum(decoders.values()), decode)}
        phases.update(_encoders(encoders, pairs=False))
    else:  # sequential: layer by layer (the VAE's layers are small: gpu SD-Turbo 0.63 GiB = its decode + runtime)
        phases = {"denoise": (_LEAF_GIB, act), "decode": (0.0, decode)}
    phase, (resident, job) = max(phases.items(), key=lambda item: sum(item[1]))
    generate = resident + job + runtime
    extra = load_extra_gib(spec, dtype)
    # converted weights are new memory as they are made; weights already in the compute dtype stay mapped from
    # the files and become resident as the generation touches them (measured: 0.53 GiB after loading SD-Turbo
    # and SDXL as bf16 from bf16 files)
    load = total + extra + _LOAD_RUNTIME_GIB if extra else _LOAD_RUNTIME_GIB
    peak = max(generate, load) if kind == "cpu" else generate
    host = total + extra if strategy.offload != "none" or kind != "cpu" else 0.0
    if strategy.device_weights is not None:
        host = max(total - strategy.device_weights, 0.0) + extra
    return Estimate(round(peak, 3), round(generate, 3), round(load, 3), round(total, 3), round(resident, 3),
                    round(job, 3), round(host, 3), phase)


def _encoders(encoders: dict[str, float], *, pairs: bool) -> dict[str, tuple[float, float]]:
    """Encoder phases. Under model offload a hook offloads only the previous module of the chain, so when the
    encoders run again for the negative prompt the last one (SD3's T5) is still on the GPU beside the next:
    the two largest together. Published: SD3 Medium with model offload ~12.1 GB = T5 8.9 + CLIP-G 1.3 GiB."""
    if not encoders:
        return {}
    ranked = sorted(encoders.items(), key=lambda item: -item[1])
    if pairs and len(ranked) > 1:
        return {f"encode ({ranked[0][0]} + {ranked[1][0]})": (ranked[0][1] + ranked[1][1], 0.0)}
    return {f"encode ({ranked[0][0]})": (ranked[0][1], 0.0)}


def estimate_plan(spec, work: Workload, device_plan) -> Estimate:
    """The estimate for a DevicePlan's own choices (what benchmarks/memory.py compares with its measurement)."""
    strategy = Strategy(device_plan.offload, device_plan.vae_tiling, device_plan.vae_slicing,
                        device_plan.decode_chunk_size, device_plan.device_weights_gib)
    return estimate(spec, work, device_plan.dtype, device_plan.device.split(":")[0], strategy)
