"""Tests of the graders: the code sandbox, code extraction and math grading.

Sandbox runs use short timeouts; tests of an isolation feature the machine cannot provide
(privilege drop, private mounts, network namespace) are skipped with the reason.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from lookahead_ray.data.graders.code import extract_code, grade_code
from lookahead_ray.data.graders.math import extract_final_answer, grade_math
from lookahead_ray.data.sandbox import CodeResult, run_code_tests
from lookahead_ray.data.sandbox import runner as grade

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0\n"


@pytest.fixture(scope="module")
def sandbox() -> grade.SandboxInfo:
    """What isolation this machine gives a sample (from one trivial run)."""
    result = run_code_tests("x = 1", "assert x == 1", timeout_s=10)
    assert result.status == "pass", result
    return result.sandbox


def needs(sandbox: grade.SandboxInfo, feature: str) -> None:
    if not getattr(sandbox, feature):
        pytest.skip(f"sandbox has no {feature} here: {'; '.join(sandbox.notes)}")


def pids_in(output: str, tag: str) -> list[int]:
    lines = [line for line in output.splitlines() if line.startswith(tag)]
    assert lines, f"no {tag} line in output: {output!r}"
    return [int(p) for p in lines[-1][len(tag):].split()]


# --- outcomes ---------------------------------------------------------------------------------


def test_correct_program_passes():
    result = run_code_tests(ADD, ADD_TESTS, timeout_s=10)
    assert isinstance(result, CodeResult)
    assert (result.status, result.message) == ("pass", "all tests passed")
    assert result.passed


def test_humaneval_style_check_with_entry_point():
    tests = (
        "def check(candidate):\n"
        "    assert candidate(2, 3) == 5\n"
        "    assert candidate(0, 0) == 0\n"
    )
    assert run_code_tests(ADD, tests, timeout_s=10, entry_point="add").status == "pass"
    wrong = "def add(a, b):\n    return a * b\n"
    result = run_code_tests(wrong, tests, timeout_s=10, entry_point="add")
    assert result.status == "fail"
    assert "AssertionError" in result.message and "candidate(2, 3) == 5" in result.message


def test_entry_point_must_be_an_identifier():
    with pytest.raises(ValueError, match="identifier"):
        run_code_tests(ADD, "def check(c): pass", entry_point="add); import os; (")


def test_wrong_answer_fails_with_the_failing_line():
    result = run_code_tests("def add(a, b):\n    return a - b\n", ADD_TESTS, timeout_s=10)
    assert result.status == "fail"
    assert result.message.startswith("test failed: AssertionError")
    assert "<tests> line 1: assert add(1, 2) == 3" in result.message


def test_every_test_must_pass():
    tests = ADD_TESTS + "assert add(2, 2) == 5, 'last one'\n"
    result = run_code_tests(ADD, tests, timeout_s=10)
    assert result.status == "fail"
    assert "last one" in result.message and "line 3" in result.message


def test_exception_inside_tested_function_fails():
    program = "def first(xs):\n    return xs[0]\n"
    result = run_code_tests(program, "assert first([]) is None", timeout_s=10)
    assert result.status == "fail"
    assert "IndexError" in result.message and "<program> line 2" in result.message


def test_syntax_error_and_top_level_exception_are_errors():
    result = run_code_tests("def add(a, b:\n    return a\n", ADD_TESTS, timeout_s=10)
    assert result.status == "error"
    assert "SyntaxError" in result.message
    result = run_code_tests("import no_such_module_xyz\n" + ADD, ADD_TESTS, timeout_s=10)
    assert result.status == "error"
    assert "ModuleNotFoundError" in result.message
    result = run_code_tests(ADD, "assert add(1, 2) == 3\ndef broken(:\n", timeout_s=10)
    assert result.status == "error" and result.message.startswith("tests do not compile")


def test_long_messages_are_truncated():
    program = "raise ValueError('x' * 10000)"
    result = run_code_tests(program, "pass", timeout_s=10)
    assert result.status == "error" and "ValueError" in result.message
    assert len(result.message) <= grade.MAX_MESSAGE_CHARS


def test_concurrent_runs_from_threads_are_independent():
    from concurrent.futures import ThreadPoolExecutor

    programs = [ADD, ADD.replace("a + b", "a - b")] * 3
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda p: run_code_tests(p, ADD_TESTS, timeout_s=20), programs))
    assert [r.status for r in results] == ["pass", "fail"] * 3
    uids = {r.sandbox.uid for r in results}
    assert None in uids or len(uids) == len(results)


# --- time -------------------------------------------------------------------------------------


def test_infinite_loop_times_out_promptly():
    start = time.monotonic()
    result = run_code_tests("while True:\n    pass\n", "assert True", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert result.status == "timeout", result
    assert elapsed < 1.0 + 3.0


def test_sleeping_program_hits_the_wall_clock_limit():
    start = time.monotonic()
    result = run_code_tests("import time\ntime.sleep(60)\n", "assert True", timeout_s=1.0)
    assert result.status == "timeout" and "wall-clock" in result.message
    assert time.monotonic() - start < 4.0


def test_resource_limits_are_applied():
    program = (
        "import resource as r\n"
        "limits = {n: r.getrlimit(getattr(r, n)) for n in "
        "('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_CORE', 'RLIMIT_NPROC')}\n"
    )
    tests = (
        "assert limits['RLIMIT_CPU'] == (3, 4), limits\n"
        "assert limits['RLIMIT_AS'] == (300 << 20, 300 << 20), limits\n"
        "assert limits['RLIMIT_FSIZE'] == (2 << 20, 2 << 20), limits\n"
        "assert limits['RLIMIT_CORE'] == (0, 0), limits\n"
        "assert limits['RLIMIT_NPROC'][0] >= 16, limits\n"
    )
    result = run_code_tests(program, tests, timeout_s=2.5, memory_mb=300, fsize_mb=2, nproc=16)
    assert result.status == "pass", result


def test_cpu_limit_is_reported_as_timeout():
    # The wall clock fires first at the default CPU limit; lower it from inside to see SIGXCPU.
    program = (
        "import resource\n"
        "resource.setrlimit(resource.RLIMIT_CPU, (1, resource.getrlimit(resource.RLIMIT_CPU)[1]))\n"
        "while True:\n"
        "    pass\n"
    )
    # A wide wall clock: on a loaded machine one CPU second can take many seconds of wall time.
    result = run_code_tests(program, "assert True", timeout_s=30)
    assert result.status == "timeout", result
    assert "CPU time limit" in result.message


# --- early exits and forged passes ------------------------------------------------------------


@pytest.mark.parametrize(
    "program",
    [
        "import sys\nsys.exit(0)\n",
        "raise SystemExit(0)\n",
        "import os\nos._exit(0)\n",
        "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n",
    ],
    ids=["sys.exit", "SystemExit", "os._exit", "self-kill"],
)
def test_exiting_before_the_tests_does_not_pass(program):
    result = run_code_tests(ADD + program, ADD_TESTS, timeout_s=10)
    assert result.status in ("fail", "error"), result
    assert "before the tests" in result.message or "SIGKILL" in result.message


def test_exiting_inside_the_tests_does_not_pass():
    program = "import os\ndef add(a, b):\n    os._exit(0)\n"
    assert run_code_tests(program, ADD_TESTS, timeout_s=10).status == "fail"
    program = "import sys\ndef add(a, b):\n    sys.exit(0)\n"
    result = run_code_tests(program, ADD_TESTS, timeout_s=10)
    assert result.status == "fail" and "SystemExit" in result.message


def test_printed_or_forged_pass_records_do_not_pass():
    tag = "LAR1"  # the record format of the former single-interpreter harness
    fake = f"{tag} {uuid.uuid4().hex} pass {'all tests passed'.encode().hex()}"
    line = repr("\n" + fake + "\n")
    program = (
        "import os, sys\n"
        "print('ALL TESTS PASSED')\n"
        "print('pass')\n"
        f"line = {line}.encode()\n"
        "for fd in range(256):\n"
        "    try:\n"
        "        os.write(fd, line)\n"
        "    except OSError:\n"
        "        pass\n"
        "sys.stdout.flush()\n"
        "os._exit(0)\n"
    )
    result = run_code_tests(program, "assert False", timeout_s=10)
    assert result.status == "fail", result
    assert "ALL TESTS PASSED" in result.output


def test_program_cannot_read_the_nonce_back_from_its_file_descriptors():
    # Read everything readable through inherited fds (directly and reopened through /proc),
    # replay every 32-hex token as a pass record on every fd, then exit cleanly.
    program = (
        "import os, re\n"
        "found = set()\n"
        "for fd in range(256):\n"
        "    for read in (lambda: os.pread(fd, 1 << 20, 0),\n"
        "                 lambda: open('/proc/self/fd/%d' % fd, 'rb').read(1 << 20)):\n"
        "        try:\n"
        "            found.update(re.findall(rb'[0-9a-f]{32}', read()))\n"
        "        except Exception:\n"
        "            pass\n"
        "record = b''.join(b'\\nLAR1 ' + n + b' pass 00\\n' for n in found)\n"
        "record = record or b'\\nLAR1 x pass 00\\n'\n"
        "for fd in range(256):\n"
        "    try:\n"
        "        os.write(fd, record)\n"
        "    except OSError:\n"
        "        pass\n"
        "os._exit(0)\n"
    )
    result = run_code_tests(program, "assert False", timeout_s=10)
    assert result.status == "fail", result


def test_harness_record_is_not_reachable_by_stdout():
    # Output that imitates the completion record exactly, but without the nonce, is ignored.
    program = ADD + "print('LAR1 0000 pass 00')\n"
    assert run_code_tests(program, ADD_TESTS, timeout_s=10).status == "pass"
    assert run_code_tests(program, "assert add(1, 1) == 3", timeout_s=10).status == "fail"


# --- resources --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "program",
    [
        "x = bytearray(8 << 30)\n",
        "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n",
    ],
    ids=["one-allocation", "growing"],
)
def test_memory_bomb_is_an_error(program):
    start = time.monotonic()
    result = run_code_tests(program, "assert True", timeout_s=10, memory_mb=256)
    assert result.status == "error", result
    assert "MemoryError" in result.message or "memory" in result.message
    assert time.monotonic() - start < 8


def test_file_size_limit_is_an_error():
    program = "with open('big.bin', 'wb') as fh:\n    fh.write(b'x' * (3 << 20))\n"
    result = run_code_tests(program, "assert True", timeout_s=10, fsize_mb=1)
    assert result.status == "error", result
    assert "File too large" in result.message or "file size" in result.message


def test_fork_bomb_is_stopped_and_cleaned_up(sandbox):
    if sandbox.uid is None and os.geteuid() == 0:
        pytest.skip("running as root without a privilege drop: RLIMIT_NPROC is not enforced")
    program = (
        "import os, time\n"
        "pids = []\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    pids.append(pid)\n"
        "print('PIDS', *pids, flush=True)\n"
    )
    start = time.monotonic()
    result = run_code_tests(program, "assert len(pids) == 200, len(pids)", timeout_s=5, nproc=32)
    assert result.status == "fail", result
    spawned = pids_in(result.output, "PIDS ")
    assert 0 < len(spawned) < 32
    assert time.monotonic() - start < 5
    assert result.sandbox.leftovers == 0 and not grade._processes_of({result.sandbox.uid})


def test_processes_that_leave_the_group_are_killed(sandbox):
    needs(sandbox, "privileges_dropped")
    program = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setsid()\n"
        "    if os.fork():\n"
        "        os._exit(0)\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "time.sleep(0.2)\n"
        "mine = [p for p in os.listdir('/proc')\n"
        "        if p.isdigit() and os.stat('/proc/' + p).st_uid == os.getuid()]\n"
        "print('PIDS', *[p for p in mine if int(p) != os.getpid()], flush=True)\n"
    )
    result = run_code_tests(program, "assert True", timeout_s=10)
    assert result.status == "pass", result
    escaped = pids_in(result.output, "PIDS ")  # pids in the sample's own PID namespace
    assert escaped, "the escaped grandchild should have been listed"
    assert result.sandbox.leftovers == 0 and not grade._processes_of({result.sandbox.uid})


# --- isolation --------------------------------------------------------------------------------


def test_runs_in_a_fresh_directory_that_is_removed():
    program = "import os\ncwd = os.getcwd()\nhome = os.environ['HOME']\nprint('CWD', cwd)\n"
    tests = (
        "assert os.listdir('.') == []\n"
        "assert home == cwd\n"
        "open('scratch.txt', 'w').write('ok')\n"
        "assert open(os.path.join(home, 'scratch.txt')).read() == 'ok'\n"
    )
    result = run_code_tests(program, tests, timeout_s=10)
    assert result.status == "pass", result
    cwd = [line[4:] for line in result.output.splitlines() if line.startswith("CWD ")][0]
    assert os.path.basename(cwd).startswith("lookahead-grade-")
    assert not os.path.exists(cwd)


def write_attempts(paths: list[str]) -> str:
    return (
        "import os\n"
        "outcomes = {}\n"
        f"for path in {paths!r}:\n"
        "    try:\n"
        "        with open(path, 'w') as fh:\n"
        "            fh.write('escaped')\n"
        "        outcomes[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        outcomes[path] = type(exc).__name__\n"
        "open('inside.txt', 'w').write('fine')\n"
        "inside = open('inside.txt').read()\n"
        "uids = (os.getuid(), os.geteuid())\n"
    )


def test_cannot_write_root_owned_paths(sandbox):
    needs(sandbox, "privileges_dropped")
    name = f"lookahead-escape-{uuid.uuid4().hex}"
    paths = [f"/tmp/../etc/{name}", f"/etc/{name}", f"/usr/{name}", f"/root/{name}",
             os.path.join(os.getcwd(), name)]
    tests = (
        "assert inside == 'fine'\n"
        "assert 0 not in uids, uids\n"
        "denied = ('PermissionError', 'OSError', 'FileNotFoundError')\n"
        "assert all(v in denied for v in outcomes.values()), outcomes\n"
    )
    result = run_code_tests(write_attempts(paths), tests, timeout_s=10)
    for path in paths:
        assert not os.path.exists(path), f"the sample wrote {path}"
    assert result.status == "pass", result


def test_cannot_write_shared_temporary_dirs(sandbox):
    needs(sandbox, "filesystem_isolated")
    name = f"lookahead-escape-{uuid.uuid4().hex}"
    paths = [f"/tmp/{name}", f"/var/tmp/{name}", f"/dev/shm/{name}", f"../{name}"]
    tests = "assert all(v != 'written' for v in outcomes.values()), outcomes\n"
    result = run_code_tests(write_attempts(paths), tests, timeout_s=10)
    for path in paths[:3]:
        assert not os.path.exists(path), f"the sample wrote {path}"
    assert result.status == "pass", result


def test_network_is_unreachable(sandbox):
    needs(sandbox, "network_isolated")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    port = server.getsockname()[1]
    try:
        program = (
            "import socket\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
            "s.settimeout(3)\n"
            "try:\n"
            f"    s.connect(('127.0.0.1', {port}))\n"
            "    outcome = 'connected'\n"
            "except OSError as exc:\n"
            "    outcome = type(exc).__name__ + ': ' + str(exc)\n"
        )
        result = run_code_tests(program, "assert outcome == 'connected', outcome", timeout_s=10)
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()
    assert result.status == "fail", result
    assert "unreachable" in result.message.lower() or "refused" in result.message.lower()


# --- code extraction --------------------------------------------------------------------------


def test_extract_code_prefers_the_last_python_block():
    response = (
        "Plan:\n```text\nnot code\n```\nFirst try:\n```python\ndef add(a, b):\n    return 0\n```\n"
        "Final:\n```python\ndef add(a, b):\n    return a + b\n```\nDone."
    )
    assert extract_code(response) == "def add(a, b):\n    return a + b\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("x = 1") == "x = 1"


def test_grade_code():
    response = f"Here you go:\n```python\n{ADD}```\n"
    assert grade_code(response, ADD_TESTS, timeout_s=10) == 1.0
    assert grade_code(response.replace("a + b", "a - b"), ADD_TESTS, timeout_s=10) == 0.0
    check = "def check(f):\n    assert f(2, 2) == 4\n"
    assert grade_code(ADD, check, entry_point="add", timeout_s=10) == 1.0
    assert grade_code("while True: pass", ADD_TESTS, timeout_s=0.5) == 0.0


# --- math -------------------------------------------------------------------------------------


def test_extract_final_answer():
    assert extract_final_answer("so \\boxed{\\frac{1}{\\sqrt{2}}} is it") == "\\frac{1}{\\sqrt{2}}"
    assert extract_final_answer("\\boxed{1} then \\boxed{\\{a, \\{b\\}\\}}") == "\\{a, \\{b\\}\\}"
    assert extract_final_answer("\\boxed{x^{2^{3}}} and a number 7 later") == "x^{2^{3}}"
    assert extract_final_answer("unbalanced \\boxed{\\frac{1}{2} so 3") == "3"
    assert extract_final_answer("The answer is 42.") == "42"
    assert extract_final_answer("from 3 to -1,250.5 total") == "-1250.5"
    assert extract_final_answer("no digits here") is None


@pytest.mark.parametrize(
    "response, reference, score",
    [
        ("\\boxed{\\frac{1}{2}}", "0.5", 1.0),
        ("The answer is 42.", "42", 1.0),
        ("The answer is 41.", "42", 0.0),
        ("\\boxed{\\frac{1}{3}}", "0.5", 0.0),
        ("We get \\boxed{\\{1, \\{2\\}\\}} in the end", "\\{\\{2\\}, 1\\}", 1.0),
        ("so $\\boxed{2^{10}}$", "1024", 1.0),
        ("\\boxed{3\\pi}", "3\\pi", 1.0),
        ("\\boxed{3}", "3\\pi", 0.0),
        ("no answer at all", "7", 0.0),
        # The question restated is not an answer: only the final answer (here 33) is judged.
        ("To calculate 5 * 33, use 5 * 33 = 155. This is how to calculate 5 * 33.", "165", 0.0),
        ("5 * 33 = 165", "165", 1.0),
        ("To calculate 4 - 1, we subtract: 4 - 1 = 3.", "3", 1.0),
    ],
)
def test_grade_math(response, reference, score):
    assert grade_math(response, reference) == score


def test_grade_math_falls_back_to_string_comparison(monkeypatch):
    import math_verify

    monkeypatch.setattr(math_verify, "parse", lambda *args, **kwargs: [])
    assert grade_math("\\boxed{\\text{Monday}}", "Monday") == 1.0
    assert grade_math("The total is 1,000.", "1000") == 1.0
    assert grade_math("\\boxed{Tuesday}", "Monday") == 0.0


def test_grade_math_works_in_worker_threads():
    scores = []
    worker = threading.Thread(
        target=lambda: scores.append(grade_math("\\boxed{\\frac{2}{4}}", "1/2"))
    )
    worker.start()
    worker.join(30)
    assert scores == [1.0]
