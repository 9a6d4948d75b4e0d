"""The plain-data protocol between the sandbox's cells, without starting any process."""

from __future__ import annotations

import builtins
import math
import os

import pytest

from lookahead_ray.data.sandbox import protocol as P

NO_HANDLES = lambda ident: pytest.fail("no handle expected")  # noqa: E731


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**200, 1.5, -0.0, float("inf"), 1e-300, 3 + 4j, "", "héllo\ud800", b"\x00\xff",
    [1, [2, (3,)]], (1, "a"), {1, 2}, frozenset({"x"}), {"k": [1], 2: (3, 4), (1, 2): None},
])
def test_plain_values_cross_unchanged(value):
    back = P.decode(P.encode(value), NO_HANDLES)
    assert back == value and type(back) is type(value)


def test_nan_and_subclasses_cross_as_their_base_type():
    assert math.isnan(P.decode(P.encode(float("nan")), NO_HANDLES))

    class Number(int):
        def __eq__(self, other):  # what a hostile program would send
            return True

    back = P.decode(P.encode(Number(3)), NO_HANDLES)
    assert type(back) is int and back == 3 and back != 4


def test_other_objects_become_handles_on_the_sample_side_only():
    handles = []
    thing = object()
    data = P.encode([thing, 1], handles)
    assert handles == [thing] and data == ["l", [["h", 0], ["i", "1"]]]
    with pytest.raises(TypeError):
        P.encode(thing)  # the judge sends only plain data


@pytest.mark.parametrize("data", [
    "x", [], ["?"], ["i", 3], ["b", 1], ["l", [["S", [["l", []]]]]], ["d", [[["l", []], ["n"]]]], ["d", [["n"]]],
    ["h", "0"], ["f", "nope"], ["c", "0x1p0"],
])
def test_malformed_or_unhashable_data_is_rejected(data):
    with pytest.raises(ValueError):
        P.decode(data, lambda ident: ident)


def test_depth_is_bounded_both_ways():
    deep = 1
    for _ in range(P.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(TypeError):
        P.encode(deep)
    with pytest.raises(TypeError):
        P.encode(deep, [])  # the sample reports it as a TypeError raised by the call
    nested = ["n"]
    for _ in range(P.MAX_DEPTH + 5):
        nested = ["l", [nested]]
    with pytest.raises(ValueError):
        P.decode(nested, NO_HANDLES)


def test_frames_round_trip_and_oversized_frames_are_refused():
    r, w = os.pipe()
    try:
        P.send(w, {"value": ["s", "ok"]})
        assert P.receive(r) == {"value": ["s", "ok"]}
        os.write(w, (P.MAX_FRAME + 1).to_bytes(4, "big"))
        with pytest.raises(P.Gone):
            P.receive(r)
    finally:
        os.close(r)
        os.close(w)


def test_program_exceptions_map_to_builtin_types_only():
    assert type(P.program_exception("ValueError", "m")) is ValueError
    assert type(P.program_exception("SystemExit", "m")) is P.ProgramExited
    assert not isinstance(P.program_exception("SystemExit", "m"), Exception)  # `except Exception` cannot swallow it
    assert type(P.program_exception("MyError", "m")) is P.ProgramRaised
    assert type(P.program_exception("__import__", "m")) is P.ProgramRaised


def test_the_tests_see_no_program_name_that_shadows_a_builtin_or_fakes_a_module():
    names = {"add": ["f"], "abs": ["f"], "isinstance": ["f"], "math": ["m", "math"], "m": ["m", "cmath"],
             "os": ["m", "os"], "fake": ["m", "not_a_stdlib_module"], "limit": ["v", ["i", "a"]], "bad name": ["f"],
             "__builtins__": ["v", ["d", [[["s", "abs"], ["h", 0]]]]], "__name__": ["v", ["s", "x"]]}
    namespace = P.tests_namespace(link=None, names=names, trusted=None, entry_point=None)
    assert callable(namespace["add"]) and namespace["add"].__name__ == "add"
    assert "abs" not in namespace and "isinstance" not in namespace
    assert namespace["math"] is math and namespace["os"] is os
    assert "m" not in namespace and "fake" not in namespace and "bad name" not in namespace
    assert namespace["limit"] == 10
    assert namespace["__builtins__"] is builtins
    assert namespace["__name__"] == "__tests__"


@pytest.mark.parametrize("tests, names, visible", [
    ("assert sum(10, 15) == 6\nassert sum(4, 6) == 10\n", {"sum": ["f"]}, {"sum"}),  # MBPP asks for a `sum`
    ("assert abs(add(2, 5) - 7) < 1e-9\n", {"abs": ["f"], "add": ["f"]}, set()),  # abs judges another call
    ("assert sum(1, 2) == len('abc')\n", {"sum": ["f"]}, set()),  # another builtin in the same statement
    ("assert sum(1, 2) == 3\nassert f(sum(1, 2))\n", {"sum": ["f"], "f": ["f"]}, set()),  # once is enough
    ("def check(candidate):\n    assert candidate(1) == 2\n", {"max": ["f"]}, set()),  # never mentioned
    ("assert len(1) == 2\n", {"len": ["v", ["i", "1"]]}, set()),  # only functions
    ("assert sum(1, 2) == 3 +\n", {"sum": ["f"]}, set()),  # tests that do not parse
])
def test_a_program_function_named_like_a_builtin_is_visible_only_as_the_function_under_test(tests, names, visible):
    assert P.functions_under_test(tests, names) == visible
    namespace = P.tests_namespace(link=None, names=names, trusted=None, entry_point=None, tests=tests)
    for name in names:
        if name in P.BUILTIN_NAMES:
            assert (name in namespace) == (name in visible)


def test_trusted_prompt_helpers_replace_the_programs_and_the_entry_point_stays_a_proxy():
    prompt = "def poly(x):\n    return 2 * x\n\n\ndef solve(x):\n    \"\"\"Stub.\"\"\"\n"
    namespace = P.tests_namespace(link=None, names={"poly": ["f"], "solve": ["f"]}, trusted=prompt,
                                  entry_point="solve")
    assert namespace["poly"](3) == 6  # the prompt's own helper, run in the judge
    assert namespace["solve"].__code__ is P.remote_function(None, "solve").__code__  # a proxy, not the stub


# --- harness helpers (the harness is importable as a module; it runs nothing at import) ---------


def wait_status(child_code: str) -> int:
    """The wait status of a forked child that runs `child_code` (statements) and then exits 0."""
    pid = os.fork()
    if pid == 0:
        try:
            exec(child_code)
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


def test_exit_code_follows_the_shell_convention():
    from lookahead_ray.data.sandbox import harness

    assert harness.exit_code(wait_status("os._exit(3)")) == 3
    assert harness.exit_code(wait_status("import signal; os.kill(os.getpid(), signal.SIGKILL)")) == 128 + 9


def test_close_all_but_keeps_exactly_the_listed_fds():
    from lookahead_ray.data.sandbox import harness

    r, w = os.pipe()
    extra = os.dup(w)
    try:
        # The child keeps 0-2 and w (consecutive keeps are where CPython's closerange(n, n) bites).
        code = (f"harness.close_all_but((0, 1, 2, {w}))\n"
                f"os.write({w}, b'ok' if os.get_blocking({w}) is not None else b'')\n"
                f"try:\n    os.fstat({extra})\n    os.write({w}, b' leak')\nexcept OSError:\n    pass\n")
        pid = os.fork()
        if pid == 0:
            try:
                exec(code, {"os": os, "harness": harness})
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        os.close(w)
        os.close(extra)
        assert os.read(r, 100) == b"ok"
    finally:
        os.close(r)
