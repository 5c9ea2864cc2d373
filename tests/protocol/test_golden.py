"""Golden vectors: the same bytes-in/bytes-out cases on CPython and on the
MicroPython unix port under a device-sized heap."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from simulator import unixport

GOLDEN = Path(__file__).parent.parent / "golden"
VECTORS = GOLDEN / "vectors.jsonl"
sys.path.insert(0, str(GOLDEN))

import make_vectors  # noqa: E402
import run_vectors  # noqa: E402

CASES = [json.loads(line) for line in VECTORS.read_text(encoding="utf-8").splitlines() if line]


def test_vectors_file_is_what_the_generator_writes() -> None:
    assert VECTORS.read_text(encoding="utf-8") == make_vectors.render(), (
        "vectors.jsonl is stale: run tests/golden/make_vectors.py"
    )


def test_vectors_cover_every_protocol_function_and_bad_cases() -> None:
    fns = {c["fn"] for c in CASES}
    assert fns == set(run_vectors.FUNCS)
    errors = {c["expect"]["err"] for c in CASES if "err" in c["expect"]}
    assert {"malformed", "oversized", "unknown_topic", "bad_signature", "expired",
            "replayed", "missing_field", "bad_field", "bad_topic"} <= errors


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_cpython(case: dict) -> None:
    assert run_vectors.run_case(case) == case["expect"]


@pytest.mark.mpy
def test_micropython_unix_port_128k_heap() -> None:
    proc = unixport.run([str(GOLDEN / "run_vectors.py"), str(VECTORS)], extra_path=[GOLDEN], timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1] == {"done": len(CASES)}
    outs = {d["name"]: d["out"] for d in lines[:-1]}
    mismatches = {c["name"]: (outs.get(c["name"]), c["expect"]) for c in CASES
                  if outs.get(c["name"]) != c["expect"]}
    assert not mismatches
