"""The trusted side of the code sandbox: start the harness on one sample, collect its verdict.

The design and its limits are described in lookahead_ray/data/sandbox/__init__.py.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pwd
import random
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CODE_STATUSES = ("pass", "fail", "timeout", "error")
MAX_MESSAGE_CHARS = 500
MAX_OUTPUT_CHARS = 2000
RECORD_TAG = "LAR1"
UNPRIVILEGED_UID_RANGE = (200_000, 2**31 - 2)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")
HARNESS_NAME = "harness.py"
HARNESS_SOURCE = str(Path(__file__).with_name(HARNESS_NAME))


@dataclass(frozen=True)
class SandboxInfo:
    """What isolation a run actually got (see the module docstring for what each part means)."""

    uid: int | None = None
    privileges_dropped: bool = False
    network_isolated: bool = False
    filesystem_isolated: bool = False
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CodeResult:
    """Outcome of one sandboxed run.

    status: "pass" (every test ran and passed), "fail" (a test failed, the tests raised, or the
    program exited before the tests completed), "timeout" (wall-clock or CPU limit) or "error"
    (the program or tests do not compile, the program raised at top level, a resource limit was
    hit, or the sandbox could not start). message: the reason, with the exception type and the
    failing line where there is one. output: the tail of the sample's stdout and stderr.
    """

    status: str
    message: str
    sandbox: SandboxInfo = SandboxInfo()
    output: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"


# ---------------------------------------------------------------------------------------------
# Code tests
# ---------------------------------------------------------------------------------------------


def run_code_tests(
    program: str,
    tests: str,
    timeout_s: float = 10.0,
    entry_point: str | None = None,
    *,
    memory_mb: int = 1024,
    nproc: int = 32,
    fsize_mb: int = 64,
    disk_mb: int = 128,
    isolate_network: bool = True,
) -> CodeResult:
    """Run `program`, then `tests`, in one sandboxed process and report whether all tests passed.

    tests: Python source run after the program in the same namespace (assert statements, or a
    HumanEval-style `check(candidate)` function: pass `entry_point`, the name of the function
    under test, and `check(<entry_point>)` is appended). The program runs with `__name__` set to
    "__sandbox__", so code under `if __name__ == "__main__":` does not run, and without
    site-packages (`-S`). timeout_s bounds wall-clock and CPU time; memory_mb the address
    space; nproc the processes and threads; fsize_mb any single file written (stdout included);
    disk_mb the work directory (when the grader runs as root).
    """
    tests_source = build_tests_source(tests, entry_point)
    plan = sandbox_plan()
    uid, gid = plan["uid"], plan["gid"]
    nonce = secrets.token_hex(16)
    workdir = tempfile.mkdtemp(prefix="lookahead-grade-", dir=_workdir_parent(uid))
    try:
        if uid is not None:
            os.chown(workdir, uid, gid)
        config = {
            "nonce": nonce,
            "program": program,
            "tests": tests_source,
            "workdir": workdir,
            "uid": uid,
            "gid": gid,
            "cpu_s": max(1, math.ceil(timeout_s)),
            "memory_bytes": int(memory_mb) << 20,
            "fsize_bytes": int(fsize_mb) << 20,
            "disk_mb": int(disk_mb),
            "nproc": int(nproc),
            "isolate_network": bool(isolate_network),
        }
        run = _run_sandboxed(plan["python"], config, workdir, timeout_s)
    finally:
        _remove_tree(workdir)
    return _classify(run, nonce, timeout_s, plan)


def _workdir_parent(uid: int | None) -> str:
    """The usual temporary directory, unless a stranger uid could not even reach it."""
    default = tempfile.gettempdir()
    if uid is None or _world_traversable(default):
        return default
    return next((d for d in ("/tmp", "/var/tmp", "/dev/shm") if _world_traversable(d)), default)


def _world_traversable(path: str) -> bool:
    """Whether every directory from / down to `path` lets others pass (o+x)."""
    path = os.path.realpath(path)
    while True:
        try:
            if not os.stat(path).st_mode & stat.S_IXOTH:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def build_tests_source(tests: str, entry_point: str | None = None) -> str:
    """The tests, plus `check(<entry_point>)` for HumanEval-style tests."""
    if entry_point is None:
        return tests
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")
    return f"{tests}\n\ncheck({entry_point})\n"


def _run_sandboxed(python: str, config: dict, workdir: str, timeout_s: float) -> dict:
    """Start the harness, wait at most `timeout_s`, kill everything it left, collect its output."""
    env = {"PATH": SANDBOX_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout, \
            tempfile.TemporaryFile() as stderr, _record_file() as (results, child_fd):
        config = dict(config, result_fd=child_fd)
        stdin.write(json.dumps(config).encode("utf-8"))
        stdin.seek(0)
        try:
            proc = subprocess.Popen(
                [python, "-I", "-S", "-B", _copy_harness(workdir)],
                stdin=stdin, stdout=stdout, stderr=stderr, pass_fds=(child_fd,),
                cwd=workdir, env=env, start_new_session=True,
            )
        except OSError as exc:
            return {"start_error": f"could not start {python}: {exc}"}
        stdin.close()  # the child holds the only other reference; the nonce leaves no file behind
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        _kill_sample(proc, config["uid"], config["gid"], python)
        return {
            "returncode": proc.returncode,
            "timed_out": timed_out,
            "records": _read_all(results),
            "output": _tail(stdout, MAX_OUTPUT_CHARS // 2) + _tail(stderr, MAX_OUTPUT_CHARS // 2),
        }


def _copy_harness(workdir: str) -> str:
    """Copy harness.py into the sample's directory, readable by the sample's uid (root owns it)."""
    target = os.path.join(workdir, HARNESS_NAME)
    shutil.copyfile(HARNESS_SOURCE, target)
    os.chmod(target, 0o644)
    return target


@contextlib.contextmanager
def _record_file():
    """An unlinked file: the parent reads it, the sample gets only a write-only, append-only fd.

    So the sample cannot read back what the harness wrote (as its own uid it cannot reopen the
    root-owned file through /proc either).
    """
    fd, path = tempfile.mkstemp(prefix="lookahead-grade-records-")
    try:
        child_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    finally:
        os.unlink(path)
    try:
        with os.fdopen(fd, "rb") as reader:
            yield reader, child_fd
    finally:
        os.close(child_fd)


def _kill_sample(proc: subprocess.Popen, uid: int | None, gid: int | None, python: str) -> None:
    """Kill the sample's process group and, when it ran as its own uid, every process of it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    if uid is not None:
        # Sent as the sample's uid, kill(-1) reaches every process of the sample and nothing else;
        # the kernel makes it atomic with respect to fork, so a fork bomb cannot outrun it.
        for command in _reaper_commands(python):
            try:
                subprocess.run(
                    command, user=uid, group=gid, extra_groups=[], cwd="/",
                    env={"PATH": SANDBOX_PATH}, stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30, check=False,
                )
                return
            except (OSError, subprocess.SubprocessError):
                continue


def _reaper_commands(python: str) -> list[list[str]]:
    """`kill -9 -1` (procps, util-linux and busybox all take it), then the same in Python."""
    commands = []
    kill = shutil.which("kill", path=SANDBOX_PATH)
    if kill:
        commands.append([kill, "-9", "-1"])
    code = "import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\nexcept OSError:\n    pass\n"
    commands.append([python, "-I", "-S", "-c", code])
    return commands


def _read_all(fh) -> bytes:
    fh.seek(0)
    return fh.read(1 << 20)


def _tail(fh, limit: int) -> str:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - limit))
    return fh.read().decode("utf-8", "replace")


def _remove_tree(path: str) -> None:
    """Remove the work directory; touches nothing outside it and follows no symlinks.

    As root nothing inside can block the removal. As another user the sample (the same user)
    may have left directories without permissions, so those are opened up first.
    """
    if os.geteuid() != 0:
        for dirpath, dirnames, _files in os.walk(path):
            for name in dirnames:
                _make_dir_removable(os.path.join(dirpath, name))
    shutil.rmtree(path, ignore_errors=True)


def _make_dir_removable(path: str) -> None:
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            os.chmod(path, 0o700)
    except OSError:
        pass


def _parse_records(data: bytes, nonce: str) -> tuple[str | None, tuple[str, str] | None]:
    """The harness's setup report and completion record (status, message).

    Both are the first of their kind: the harness writes the setup report before any untrusted
    code runs, and the completion record is the first line that carries the nonce. Lines the
    sample writes (it can write to the channel, but not read it) cannot come before the setup
    report, and cannot carry the nonce unless the sample dug it out of the harness's memory.
    """
    setup, final = None, None
    for raw in data.decode("ascii", "replace").splitlines():
        parts = raw.split(" ")
        if len(parts) < 3 or parts[0] != RECORD_TAG:
            continue
        try:
            message = bytes.fromhex(parts[-1]).decode("utf-8", "replace")
        except ValueError:
            continue
        if len(parts) == 3 and parts[1] == "setup" and setup is None:
            setup = message
        elif len(parts) == 4 and parts[1] == nonce and parts[2] in CODE_STATUSES and final is None:
            final = (parts[2], message)
    return setup, final


def _sandbox_info(setup: str | None, plan: dict) -> SandboxInfo:
    notes = list(plan["notes"])
    if setup is None:
        return SandboxInfo(uid=plan["uid"], notes=tuple(notes + ["the harness reported no setup"]))
    try:
        info = json.loads(setup)
        return SandboxInfo(
            uid=plan["uid"],
            privileges_dropped=bool(info["privileges_dropped"]),
            network_isolated=bool(info["network_isolated"]),
            filesystem_isolated=bool(info["filesystem_isolated"]),
            notes=tuple(notes + [str(note) for note in info["notes"]]),
        )
    except (ValueError, KeyError, TypeError):
        return SandboxInfo(uid=plan["uid"], notes=tuple(notes + ["unreadable setup report"]))


def _classify(run: dict, nonce: str, timeout_s: float, plan: dict) -> CodeResult:
    """Decide the status. A pass needs the nonce's pass record, exit status 0 and no timeout."""
    if "start_error" in run:
        return CodeResult("error", _truncate(run["start_error"]), SandboxInfo(uid=plan["uid"]))
    setup, final = _parse_records(run["records"], nonce)
    sandbox = _sandbox_info(setup, plan)
    output = run["output"]
    returncode = run["returncode"]

    def result(status: str, message: str) -> CodeResult:
        return CodeResult(status, _truncate(message), sandbox, output)

    if run["timed_out"]:
        return result("timeout", f"wall-clock limit of {timeout_s:g} s exceeded")
    if returncode < 0:
        return result(*_signal_outcome(-returncode))
    if final:
        status, message = final
        if status == "pass" and returncode != 0:
            return result("error", f"exit status {returncode} after the tests passed")
        return result(status, message)
    if returncode == 0:
        return result("fail", "the process exited with status 0 before the tests completed "
                              "(no completion record; e.g. os._exit in the program)")
    last_line = output.strip().splitlines()[-1] if output.strip() else ""
    return result("error", f"the process exited with status {returncode} before the tests "
                           f"completed{': ' + last_line if last_line else ''}")


def _signal_outcome(signum: int) -> tuple[str, str]:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGXCPU:
        return "timeout", f"CPU time limit exceeded ({name})"
    if signum == signal.SIGXFSZ:
        return "error", f"file size limit exceeded ({name})"
    if signum == signal.SIGKILL:
        return "error", f"killed by {name} (CPU hard limit or out of memory)"
    return "error", f"killed by {name}"


def _truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Sandbox plan: which interpreter, which uid
# ---------------------------------------------------------------------------------------------


def sandbox_plan() -> dict:
    """The interpreter and the unprivileged uid/gid for one run, plus notes on what is missing.

    As root, a fresh random uid is chosen for every run, and an interpreter that such a uid can
    actually use (the grader's own, else the system's python3). Not as root, or when no such
    interpreter exists, the sample runs as the grader's user and the notes say so.
    """
    if os.geteuid() != 0:
        return {"python": sys.executable, "uid": None, "gid": None,
                "notes": ("privileges NOT dropped: the grader does not run as root",)}
    uid, gid = _pick_id("/proc/self/uid_map"), _pick_id("/proc/self/gid_map")
    python = _unprivileged_python()
    if uid is None or gid is None or python is None:
        why = "no usable unprivileged uid/gid" if python else \
            "no Python interpreter works for an unprivileged uid (or switching uid is not allowed)"
        return {"python": sys.executable, "uid": None, "gid": None,
                "notes": (f"privileges NOT dropped, running as root: {why}",)}
    return {"python": python, "uid": uid, "gid": gid, "notes": ()}


def _pick_id(map_path: str) -> int | None:
    """A random id that is mapped in this user namespace and has no passwd/group entry.

    Ids come from a range of two billion, so concurrent runs practically never share one; in a
    container that maps only a few ids (e.g. 0-65535) the range is what is mapped above 10000.
    """
    try:
        with open(map_path) as fh:
            mapped = [tuple(int(x) for x in line.split()) for line in fh if line.strip()]
    except (OSError, ValueError):
        mapped = [(0, 0, 2**32 - 1)]
    ranges = []
    for low, high in (UNPRIVILEGED_UID_RANGE, (10_000, 65_533)):
        for inside, _outside, count in mapped:
            lo, hi = max(inside, low), min(inside + count - 1, high)
            if lo <= hi:
                ranges.append((lo, hi))
        if ranges:
            break
    rng = random.SystemRandom()
    for _ in range(100 if ranges else 0):
        lo, hi = rng.choice(ranges)
        candidate = rng.randint(lo, hi)
        if not _id_is_known(candidate):
            return candidate
    return None


def _id_is_known(ident: int) -> bool:
    try:
        pwd.getpwuid(ident)
        return True
    except KeyError:
        pass
    try:
        import grp

        grp.getgrgid(ident)
        return True
    except KeyError:
        return False


@functools.lru_cache(maxsize=1)
def _unprivileged_python() -> str | None:
    """The first interpreter that works the same for a stranger uid as for root (cached).

    The grader's own interpreter may live where only root can read (e.g. under /root); an
    interpreter that finds a different standard library as another uid is not usable either.
    """
    probe_uid, probe_gid = _pick_id("/proc/self/uid_map"), _pick_id("/proc/self/gid_map")
    if probe_uid is None or probe_gid is None:
        return None
    seen = set()
    for candidate in (sys.executable, *PYTHON_CANDIDATES):
        real = os.path.realpath(candidate)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        as_root = _probe_python(candidate, None, None)
        if as_root is not None and as_root == _probe_python(candidate, probe_uid, probe_gid):
            return candidate
    return None


def _probe_python(python: str, uid: int | None, gid: int | None) -> str | None:
    """sys.prefix and version as seen by `uid` (None: this user), or None if it does not work."""
    code = ("import sys, os, json, math, collections, ctypes, resource, traceback\n"
            "print(sys.prefix, os.path.dirname(os.__file__), sys.version_info[:2])")
    kwargs = {} if uid is None else {"user": uid, "group": gid, "extra_groups": []}
    try:
        done = subprocess.run([python, "-I", "-S", "-c", code], capture_output=True, text=True,
                              cwd="/", env={"PATH": SANDBOX_PATH}, timeout=30, **kwargs)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None
