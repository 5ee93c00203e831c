"""Named presets: TOML files of request fields, built in (stablekit.presets) or the user's own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PresetError
from .params import REQUESTS, check_values
from .paths import user_presets_dir

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

_META = ("description", "command")


@dataclass(frozen=True)
class Preset:
    name: str
    command: str
    description: str
    values: dict[str, Any]
    path: Path
    origin: str  # built-in | user | file
    problem: str | None = None  # why the file cannot be used (list_presets lists broken files too)


def builtin_presets_dir() -> Path:
    """The installed stablekit.presets package (presets/ in the repository)."""
    from importlib.resources import files

    return Path(str(files("stablekit.presets")))


def _read(path: Path, origin: str) -> Preset:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise PresetError(f"{path}: cannot read preset ({err})") from None
    except tomllib.TOMLDecodeError as err:
        raise PresetError(f"{path}: not valid TOML ({err})") from None
    command = data.get("command")
    if command not in REQUESTS:
        raise PresetError(f"{path}: 'command' must be one of {', '.join(REQUESTS)}, got {command!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise PresetError(f"{path}: 'description' should be a string")
    values = {k: v for k, v in data.items() if k not in _META}
    check_values(command, values, str(path))
    return Preset(path.stem, command, description, values, path, origin)


def list_presets() -> list[Preset]:
    """Built-in presets, then the user's (a user preset with the same name replaces the built-in).

    A file that cannot be used is listed with its `problem` rather than breaking the whole list.
    """
    found: dict[str, Preset] = {}
    for origin, folder in (("built-in", builtin_presets_dir()), ("user", user_presets_dir())):
        if folder.is_dir():
            for path in sorted(folder.glob("*.toml")):
                try:
                    found[path.stem] = _read(path, origin)
                except PresetError as err:
                    problem = err.message.removeprefix(f"{path}: ")
                    found[path.stem] = Preset(path.stem, "", "", {}, path, origin, problem=problem)
    return sorted(found.values(), key=lambda p: p.name)


def find_preset(name_or_path: str) -> Preset:
    """A preset by name (the user's first, then built-in) or by path to a .toml file."""
    path = Path(name_or_path).expanduser()
    if name_or_path.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise PresetError(f"preset file {path} not found")
        return _read(path, "file")
    for folder, origin in ((user_presets_dir(), "user"), (builtin_presets_dir(), "built-in")):
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return _read(candidate, origin)
    names = ", ".join(p.name for p in list_presets()) or "none"
    raise PresetError(f"unknown preset '{name_or_path}'", hint=f"presets: {names} (see `stablekit presets list`)")


def load_preset(name_or_path: str, command: str) -> Preset:
    """A preset checked against the command it is used with."""
    preset = find_preset(name_or_path)
    if preset.command != command:
        raise PresetError(f"preset '{preset.name}' is for `stablekit {preset.command}`, not `stablekit {command}`")
    return preset
