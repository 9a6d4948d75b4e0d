"""The sandbox attack table of the README, one run per attack: each is contained and reported.

tests/unit/test_grade.py tests every limit in depth; this file adds the decoy-directory attack and
checks the outcome the README lists for each attack. Run with `-s` to see the messages.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from lookahead_ray.data.grade import run_code_tests

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sandbox():
    result = run_code_tests("x = 1", "assert x == 1", timeout_s=10)
    assert result.status == "pass", result
    return result.sandbox


def needs(sandbox, feature: str) -> None:
    if not getattr(sandbox, feature):
        pytest.skip(f"sandbox has no {feature} here: {'; '.join(sandbox.notes)}")


ATTACKS = {
    # name: (program, the statuses that mean "contained", the isolation it relies on)
    "infinite loop": ("while True:\n    pass\n", {"timeout"}, None),
    "memory bomb": ("blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\n", {"error"}, None),
    "fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                  {"timeout", "error"}, None),
    "write outside the temp dir": ("open('/etc/lookahead-escape-%s', 'w').write('x')\n" % uuid.uuid4().hex,
                                   {"error"}, "privileges_dropped"),
    "open a socket": ("import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=2)\n",
                      {"error"}, "network_isolated"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_contained(sandbox, name):
    program, contained, feature = ATTACKS[name]
    if feature:
        needs(sandbox, feature)
    result = run_code_tests(program, "assert False, 'the attack finished'", timeout_s=2, memory_mb=256, nproc=16)
    print(f"\n{name}: {result.status}: {result.message}")
    assert result.status in contained, result


def make_decoy(parent: Path) -> Path:
    """A world-readable directory tree owned by this user, as a sample would find it."""
    decoy = parent / f".lookahead-decoy-{uuid.uuid4().hex}"
    (decoy / "sub").mkdir(parents=True)
    (decoy / "keep.txt").write_text("keep")
    (decoy / "sub" / "data.txt").write_text("data")
    for path in (decoy, decoy / "sub"):
        path.chmod(0o755)
    for path in (decoy / "keep.txt", decoy / "sub" / "data.txt"):
        path.chmod(0o644)
    return decoy


def intact(decoy: Path) -> bool:
    return (decoy / "keep.txt").read_text() == "keep" and (decoy / "sub" / "data.txt").read_text() == "data"


def test_deleting_a_decoy_directory_fails_and_leaves_it_intact(sandbox):
    needs(sandbox, "privileges_dropped")
    decoys = [make_decoy(REPO), make_decoy(Path("/tmp"))]
    program = (
        "import os, shutil, subprocess\n"
        f"decoys = {[str(d) for d in decoys]!r}\n"
        "outcomes = {}\n"
        "for d in decoys:\n"
        "    try:\n"
        "        shutil.rmtree(d)\n"
        "        outcomes[d] = 'deleted'\n"
        "    except OSError as exc:\n"
        "        outcomes[d] = type(exc).__name__\n"
        "    subprocess.run(['rm', '-rf', d], capture_output=True)\n"
        "    try:\n"
        "        os.rename(d, d + '.moved')\n"
        "        outcomes[d + ' rename'] = 'moved'\n"
        "    except OSError as exc:\n"
        "        outcomes[d + ' rename'] = type(exc).__name__\n"
    )
    tests = "assert False, sorted(set(outcomes.values()))\n"  # report what each attempt got
    try:
        result = run_code_tests(program, tests, timeout_s=10)
        print(f"\ndelete a decoy directory: {result.status}: {result.message}")
        for decoy in decoys:
            assert intact(decoy), f"the sample changed {decoy}"
            assert not Path(str(decoy) + ".moved").exists()
        # The decoys are not even visible: the sample's root holds only system dirs and its scratch.
        assert result.status == "fail" and "FileNotFoundError" in result.message, result
        assert "deleted" not in result.message and "moved" not in result.message, result
    finally:
        for decoy in decoys:
            shutil.rmtree(decoy, ignore_errors=True)
            shutil.rmtree(str(decoy) + ".moved", ignore_errors=True)
