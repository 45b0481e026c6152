"""Bad input: every problem reported at once, at the right place, and nothing generated.

Each case in testdata/bad states what it expects in trailing `expect:` comments:
`line:column: part of the message`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from protoc_gen_crud.diagnostics import GenerationError

from .support import ROOT, from_text, protoc, validate_descriptor_set

BAD = ROOT / "testdata" / "bad"
TEXT_CASES = sorted((BAD / "textproto").glob("*.textproto"))
PROTO_CASES = sorted((BAD / "proto").glob("*.proto"))
EXPECT = re.compile(r"^(?:#|//) expect: (\d+):(\d+): (.+)$", re.M)
DIAGNOSTIC = re.compile(r"^(\S+?):(\d+):(\d+): (.+)$")


def expectations(path: Path) -> list[tuple[int, int, str]]:
    found = [(int(a), int(b), text) for a, b, text in EXPECT.findall(path.read_text())]
    assert found, f"{path.name} states no expectation"
    return found


def check(diagnostics: list[str], expected: list[tuple[int, int, str]], filename: str) -> None:
    parsed = []
    for line in diagnostics:
        match = DIAGNOSTIC.match(line)
        assert match, f"not file:line:column: message: {line!r}"
        parsed.append((match.group(1), int(match.group(2)), int(match.group(3)), match.group(4)))
    assert all(name.endswith(filename) for name, *_ in parsed), parsed
    unmatched = list(parsed)
    for line, column, text in expected:
        hit = next((d for d in unmatched if d[1:3] == (line, column) and text in d[3]), None)
        assert hit, f"expected {line}:{column}: {text!r}; got {parsed}"
        unmatched.remove(hit)
    assert not unmatched, f"unexpected diagnostics: {unmatched}"


def test_the_corpus_is_large_enough():
    assert len(TEXT_CASES) + len(PROTO_CASES) >= 30


@pytest.mark.parametrize("case", TEXT_CASES, ids=lambda p: p.stem)
def test_textproto_case(case):
    with pytest.raises(GenerationError) as caught:
        from_text(case.read_text(), case.name)
    check([str(d) for d in caught.value.diagnostics], expectations(case), case.name)


@pytest.mark.parametrize("case", PROTO_CASES, ids=lambda p: p.stem)
def test_proto_case_through_protoc(case, tmp_path):
    out = tmp_path / "out"
    descriptors = None
    if 'import "buf/validate/validate.proto"' in case.read_text():
        descriptors = validate_descriptor_set(tmp_path / "validate.pb")
    done = protoc(case, out, descriptor_set_in=descriptors)
    assert done.returncode != 0
    assert not any(out.rglob("*")), "files were written despite the error"
    lines = [line.removeprefix("--crud_out: ") for line in done.stderr.strip().splitlines()]
    check(lines, expectations(case), case.name)


def test_crud_gen_reports_and_writes_nothing(tmp_path):
    case = BAD / "textproto" / "45_many_problems_at_once.textproto"
    out = tmp_path / "generated"
    done = subprocess.run([sys.executable, "-m", "protoc_gen_crud.cli", str(case), "-o",
                           str(out)], capture_output=True, text=True)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert len([line for line in done.stderr.splitlines() if DIAGNOSTIC.match(line)]) == 3
    assert not out.exists()


def test_crud_gen_unreadable_config_is_an_error_not_a_traceback(tmp_path):
    binary = tmp_path / "config.textproto"
    binary.write_bytes(b"entity { name: \"\xff\" }")
    for path in (binary, tmp_path / "missing.textproto"):
        done = subprocess.run([sys.executable, "-m", "protoc_gen_crud.cli", str(path)],
                              capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr and "crud-gen:" in done.stderr
