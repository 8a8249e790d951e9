"""`render` / `parse` commands and their argparse wiring."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from foundation.chat.cli import add_parse_parser, add_render_parser, parse_command, render_command
from foundation.chat.errors import DSMLParseError, MessageFormatError

GOLDEN = Path(__file__).parent / "golden"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="model_worker")
    sub = parser.add_subparsers(dest="command", required=True)
    add_render_parser(sub)
    add_parse_parser(sub)
    return parser


def test_render_golden_with_tools_beside_messages(tmp_path):
    out = tmp_path / "prompt.txt"
    render_command(GOLDEN / "official_input_1.json", "think-high", False, out)
    assert out.read_bytes() == (GOLDEN / "official_output_1.txt").read_bytes()


def test_render_via_argparse(tmp_path):
    out = tmp_path / "p.txt"
    args = _parser().parse_args(
        [
            "render",
            "--messages",
            str(GOLDEN / "official_input_2.json"),
            "--mode",
            "think-high",
            "--keep-thinking",
            "--out",
            str(out),
        ]
    )
    args.func(args)
    text = out.read_text(encoding="utf-8")
    assert "<think>The user said hello, I should greet back.</think>" in text
    assert not text.endswith("\n")  # nothing added


def test_render_preserves_crlf_and_tools_create_system(tmp_path):
    src = tmp_path / "m.json"
    src.write_text(
        json.dumps(
            {
                "messages": [{"role": "user", "content": "a\r\nb"}],
                "tools": [{"type": "function", "function": {"name": "f"}}],
            }
        ),
        encoding="utf-8",
    )
    out = tmp_path / "p.txt"
    render_command(src, "non-think", False, out)
    data = out.read_bytes().decode("utf-8")
    assert data.startswith("<｜begin▁of▁sentence｜>\n\n## Tools")
    assert data.endswith("<｜User｜>a\r\nb<｜Assistant｜></think>")


def test_parse_command_writes_unicode_json(tmp_path):
    completion = tmp_path / "c.txt"
    completion.write_text(
        '想一想</think>好的\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name="search">\n'
        '<｜DSML｜parameter name="q" string="true">北京</｜DSML｜parameter>\n</｜DSML｜invoke>\n'
        "</｜DSML｜tool_calls><｜end▁of▁sentence｜>",
        encoding="utf-8",
    )
    out = tmp_path / "r.json"
    args = _parser().parse_args(
        ["parse", "--completion", str(completion), "--mode", "think-max", "--out", str(out)]
    )
    args.func(args)
    raw = out.read_text(encoding="utf-8")
    assert "北京" in raw  # ensure_ascii=False
    assert json.loads(raw) == {
        "reasoning_content": "想一想",
        "content": "好的",
        "tool_calls": [{"name": "search", "arguments": {"q": "北京"}}],
    }


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"msgs": []}', encoding="utf-8")
    with pytest.raises(MessageFormatError):
        render_command(bad, "non-think", False, tmp_path / "o.txt")
    broken = tmp_path / "c.txt"
    broken.write_text("x｜DSML｜", encoding="utf-8")
    with pytest.raises(DSMLParseError):
        parse_command(broken, "non-think", tmp_path / "o.json")
    with pytest.raises(SystemExit):
        _parser().parse_args(["render", "--messages", "m", "--mode", "turbo", "--out", "o"])
