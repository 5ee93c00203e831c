"""Output names and writes: sanitised, inside the output folder, atomic, never clobbering."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stablekit.errors import UsageError
from stablekit.outputs import OutputOptions, check_template, slug, target_path, write_atomic


def path_for(options, **kw):
    defaults = dict(model="sdxl", seed=7, index=0, count=1, prompt="a cat", extension=".png")
    return target_path(options, **{**defaults, **kw})


def test_default_name_comes_from_prompt_and_seed(tmp_path):
    assert path_for(OutputOptions(output_dir=str(tmp_path))) == tmp_path / "a-cat-7.png"


@pytest.mark.parametrize("prompt", ["../../etc/passwd", "/root/.ssh/id_rsa", "..", "a/b\\c:d*e?", "\0\n\t", "…"])
def test_prompts_never_leave_the_output_folder(tmp_path, prompt):
    path = path_for(OutputOptions(output_dir=str(tmp_path)), prompt=prompt)
    assert path.parent == tmp_path and not path.name.startswith(".")
    assert "/" not in path.name and ".." not in path.stem


def test_templates_fill_fields_and_keep_the_users_folders(tmp_path):
    options = OutputOptions(output="renders/{model}-{seed}-{index}.png", output_dir=str(tmp_path))
    assert path_for(options, model="org/model", index=3) == tmp_path / "renders" / "org-model-7-3.png"
    sneaky = OutputOptions(output="renders/{prompt}", output_dir=str(tmp_path))
    assert path_for(sneaky, prompt="../../x").parent == tmp_path / "renders"


def test_plain_file_name_gets_an_index_for_several_outputs(tmp_path):
    options = OutputOptions(output="cat.png", output_dir=str(tmp_path))
    assert path_for(options) == tmp_path / "cat.png"
    assert path_for(options, index=2, count=3) == tmp_path / "cat-2.png"
    assert path_for(OutputOptions(output="cat", output_dir=str(tmp_path))).name == "cat.png"


def test_bad_templates_are_usage_errors():
    with pytest.raises(UsageError, match="unknown field"):
        check_template(OutputOptions(output="{nope}.png"), (".png",))
    with pytest.raises(UsageError, match="not a supported format"):
        check_template(OutputOptions(output="x.gif"), (".png",))
    with pytest.raises(UsageError, match="bad template"):
        check_template(OutputOptions(output="x{.png"), (".png",))


def test_slug_is_never_empty():
    assert slug("") == "untitled" and slug("...") == "untitled"
    assert slug("A Lighthouse, at DUSK!") == "a-lighthouse-at-dusk"
    assert len(slug("x" * 500)) <= 60


def test_existing_files_get_numbered_names(tmp_path):
    tmp_path = tmp_path / "renders"
    target = tmp_path / "out.png"
    first = write_atomic(target, lambda tmp: tmp.write_text("one"))
    second = write_atomic(target, lambda tmp: tmp.write_text("two"))
    third = write_atomic(target, lambda tmp: tmp.write_text("three"))
    assert (first, second, third) == (target, tmp_path / "out-2.png", tmp_path / "out-3.png")
    assert target.read_text() == "one" and second.read_text() == "two"
    assert write_atomic(target, lambda tmp: tmp.write_text("new"), overwrite=True) == target
    assert target.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out-2.png", "out-3.png", "out.png"]


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    tmp_path = tmp_path / "renders"
    def explode(tmp: Path):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "x.png", explode)
    assert list(tmp_path.iterdir()) == []


def test_outputs_get_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_atomic(tmp_path / "x.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644
