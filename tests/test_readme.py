"""The README's examples work: its Python blocks run (in a scratch folder holding ``examples/``), and every
``hpinfer ...`` line of its shell blocks parses with the CLI's own parser (running them would take minutes)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hpinfer.cli import _extra_options, _parser

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def blocks(language: str):
    return [body for lang, body in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")) if lang == language]


def cli_lines():
    for body in blocks("bash"):
        for line in body.splitlines():
            command = line.split("#", 1)[0].strip()
            for part in command.split("&&"):
                words = shlex.split(part.strip())
                if words and words[0].endswith("hpinfer"):
                    yield words[1:]


def test_the_readme_has_examples_to_check():
    assert len(blocks("python")) >= 1 and len(list(cli_lines())) >= 15


@pytest.mark.parametrize("argv", list(cli_lines()), ids=lambda argv: " ".join(argv)[:60])
def test_every_cli_line_of_the_readme_parses(argv):
    args, unknown = _parser().parse_known_args(argv)
    if args.command in ("predict", "bench"):
        _extra_options(unknown)  # per-call pipeline options, as main reads them
    else:
        assert unknown == []


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_every_python_block_of_the_readme_runs(index, tmp_path, monkeypatch):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks("python")[index], f"README.md python block {index}", "exec"), {"__name__": "readme"})


def test_the_sample_output_is_what_command_1_prints(capsys, monkeypatch):
    """The text block after "Command 1 prints" (scores aside: they may move in the last digit between CPUs)."""
    from hpinfer.cli import main

    monkeypatch.chdir(ROOT)
    (shown,) = [body for lang, body in BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8")) if lang == "text"
                and body.startswith("examples/paragraph_en.jpg")]
    assert main(["predict", "--pipeline", "OCR", "--input", "examples/paragraph_en.jpg", "--use_hpip"]) == 0
    printed = capsys.readouterr().out

    def texts(output: str):
        return [re.sub(r"^\s+\d\.\d+\s+", "", line) for line in output.strip().splitlines()]

    assert texts(printed) == texts(shown)
