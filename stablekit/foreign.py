"""Records other tools write into images: AUTOMATIC1111's `parameters` text (read into the nearest stablekit
job, with what has no counterpart listed) and ComfyUI's `prompt` / `workflow` graphs (summarised, not run)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

# A1111's key/value pattern (modules/infotext_utils.py, re_param_code) and its size field.
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)\s*[x×]\s*(\d+)$")
# A1111 field -> (job key, converter). Sampler, Size and Model are mapped by hand below.
_FIELDS = {"Steps": ("num_inference_steps", int), "CFG scale": ("guidance_scale", float), "Seed": ("seed", int)}


@dataclass
class A1111:
    """An A1111 `parameters` text split as A1111 itself splits it."""

    prompt: str
    negative_prompt: str | None
    fields: dict[str, str] = field(default_factory=dict)


def parse_a1111(text: str) -> A1111:
    """Prompt lines, then `Negative prompt:` lines, then one line of `Key: value` pairs (A1111's layout)."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    if lines and len(_PARAM.findall(lines[-1])) >= 3:
        for key, value in _PARAM.findall(lines.pop()):
            value = value.strip()
            if value.startswith('"') and value.endswith('"'):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            fields[key.strip()] = value
    prompt: list[str] = []
    negative: list[str] | None = None
    for line in lines:
        if line.startswith("Negative prompt:"):
            negative = [line[len("Negative prompt:"):].strip()]
        elif negative is not None:
            negative.append(line)
        else:
            prompt.append(line)
    return A1111("\n".join(prompt).strip(), "\n".join(negative).strip() if negative is not None else None, fields)


def looks_like_a1111(text: str) -> bool:
    return "Steps:" in text and len(_PARAM.findall(text.strip().split("\n")[-1])) >= 3


def our_sampler(sampler: str | None, schedule: str | None = None) -> str | None:
    """stablekit's --scheduler name for an A1111 sampler ("Euler a", "DPM++ 2M" + Schedule type "Karras")."""
    from .schedulers import SAMPLERS

    if not sampler:
        return None
    wanted = sampler if not schedule or schedule.lower() in ("automatic", "") else f"{sampler} {schedule}"
    for name, spec in SAMPLERS.items():  # the first name of each method is its plain form (no trailing spacing)
        if not spec.flow and spec.a1111 == wanted and "timestep_spacing" not in spec.options:
            return name
    return None


def a1111_values(found: A1111) -> tuple[dict[str, Any], list[str]]:
    """Job values for `stablekit image` from an A1111 record, and the `Key: value` fields with no counterpart."""
    from .registry import load_registry

    values: dict[str, Any] = {"prompt": found.prompt, "negative_prompt": found.negative_prompt or None}
    unmapped: list[str] = []
    fields = dict(found.fields)
    sampler, schedule = fields.pop("Sampler", None), fields.pop("Schedule type", None)
    if sampler:
        ours = our_sampler(sampler, schedule)
        if ours:
            values["scheduler"] = ours
        else:
            unmapped.append(f"Sampler: {sampler}" + (f" ({schedule})" if schedule else ""))
    size = _SIZE.match(fields.pop("Size", "").strip())
    if size:
        values["width"], values["height"] = int(size[1]), int(size[2])
    model = fields.pop("Model", None)
    if model:
        spec = load_registry().find(model)
        if spec is not None and spec.modality == "image":
            values["model"] = spec.id
        else:
            unmapped.append(f"Model: {model} (not a stablekit model id; pass --model)")
    for key, value in fields.items():
        if key in _FIELDS:
            name, convert = _FIELDS[key]
            try:
                values[name] = convert(value)
                continue
            except ValueError:
                pass
        unmapped.append(f"{key}: {value}")
    return values, unmapped


def comfyui_summary(name: str, graph: Any) -> str:
    """One line about a ComfyUI graph: how many nodes, of which kinds (the graph is shown, never run)."""
    if not isinstance(graph, dict):
        return f"{name}: not JSON"
    if name == "workflow":
        nodes = [n.get("type", "?") for n in graph.get("nodes", []) if isinstance(n, dict)]
    else:
        nodes = [n.get("class_type", "?") for n in graph.values() if isinstance(n, dict)]
    kinds = ", ".join(dict.fromkeys(nodes))
    return f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}" + (f": {kinds}" if kinds else "")


def comfyui_inputs(graph: Any) -> dict[str, Any]:
    """The sampler settings and text prompts in a ComfyUI API graph, as shown (not mapped to a job)."""
    shown: dict[str, Any] = {}
    if not isinstance(graph, dict):
        return shown
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            continue
        kind, inputs = node.get("class_type", ""), node.get("inputs", {})
        plain = {k: v for k, v in inputs.items() if not isinstance(v, list)} if isinstance(inputs, dict) else {}
        if kind.startswith("KSampler") or kind in ("CLIPTextEncode", "CheckpointLoaderSimple", "EmptyLatentImage"):
            shown[f"{kind} #{node_id}"] = plain
    return shown
