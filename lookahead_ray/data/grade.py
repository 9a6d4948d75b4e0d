"""Graders for generated answers: sandboxed code tests and math-answer equivalence.

Code: `run_code_tests` runs one program plus its tests in a fresh, locked-down process and says
whether every test ran and passed; `grade_code` turns a model's response into 1.0 / 0.0.

Math: `grade_math` compares a response's final answer with the reference using math-verify, and
falls back to comparing the extracted answers as strings when math-verify finds nothing to parse.

How the code sandbox works
--------------------------
Each sample gets its own interpreter, started as `python -I -S -B -c <harness>` in a new session
(so its process group can be killed as a whole) with a minimal environment, a fresh temporary
directory as cwd, HOME and TMPDIR, and stdin/stdout/stderr that are not shared with the grader.
The harness, before it runs any untrusted code:

* sets resource limits: RLIMIT_CPU (`timeout_s` rounded up, per process, a backstop to the
  wall-clock limit the grader enforces), RLIMIT_AS (memory), RLIMIT_FSIZE, RLIMIT_NPROC,
  RLIMIT_NOFILE and RLIMIT_CORE=0 (no core dumps);
* enters a new network namespace (`unshare(CLONE_NEWNET)`; as a non-root user together with a
  user namespace), in which there is no usable interface, not even loopback;
* when the grader runs as root: enters a private mount namespace in which /tmp, /var/tmp,
  /dev/shm and /run/lock are replaced by empty read-only tmpfs mounts and the work directory by
  a small writable tmpfs (this also caps the disk the sample can use), then drops to a random
  unprivileged uid/gid used by no one else (no supplementary groups, no-new-privileges). That uid
  owns nothing outside the work directory, makes RLIMIT_NPROC count only this sample's
  processes (root is exempt from it), and lets the grader kill every process of the sample,
  including ones that left the process group, with one `kill(-1, SIGKILL)` sent as that uid.

A program passes only if the harness itself reports that every test ran without an exception:
as its last act before exiting with status 0 it writes a completion record carrying a random
per-run nonce to a record file. The sample holds that file only as a write-only, append-only
descriptor (it cannot read back what is in it, and as another uid it cannot reopen it through
/proc), and the harness's setup report written there earlier carries no nonce. The nonce comes
on stdin, which the harness reads and replaces with /dev/null before any untrusted code runs; it
is not in argv, the environment or any file. The grader accepts only the first record with the
nonce, and only together with exit status 0 and no timeout. So `sys.exit(0)`, `os._exit(0)`,
killing the process, printing "ALL TESTS PASSED" or writing record-like lines anywhere cannot
make a sample pass.

The sandbox's interpreter is the grader's own when an unprivileged uid can use it, else the
system's python3 (a grader installed under /root, for example, is unreadable to that uid).

What it cannot guarantee: the program and its tests share one interpreter, so deliberately
adversarial code can still subvert the tests from inside (find the nonce through frame
introspection, `sys.settrace` over the asserts, return objects whose `__eq__` is always true).
World-readable files (for example datasets on disk) stay readable. Without root there is no
privilege drop and no private mount namespace: the sample runs as the grader's own user (it can
write wherever that user can, and signal the grader's processes), RLIMIT_NPROC is counted
against all of that user's processes, and processes that leave the process group survive the
cleanup. Without permission to create namespaces the network stays reachable. What was applied is
reported in `CodeResult.sandbox` for every run.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pwd
import random
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

CODE_STATUSES = ("pass", "fail", "timeout", "error")
MAX_MESSAGE_CHARS = 500
MAX_OUTPUT_CHARS = 2000
RECORD_TAG = "LAR1"
UNPRIVILEGED_UID_RANGE = (200_000, 2**31 - 2)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
PYTHON_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")

# The harness that runs inside the sandboxed interpreter. It must stay runnable on any Python 3.8+
# (the sandbox may use the system interpreter), and it imports everything it needs before it drops
# privileges, because the interpreter's own files may not be readable by the unprivileged uid.
_HARNESS = r'''
import builtins, ctypes, json, linecache, os, resource, sys, traceback

CLONE_NEWNS, CLONE_NEWUSER, CLONE_NEWNET = 0x00020000, 0x10000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_REC, MS_PRIVATE = 1, 2, 4, 32, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
SHARED_WRITABLE_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock")
MAX_MESSAGE = 500
_compile, _exec, _write, _exit = compile, exec, os.write, os._exit


def libc():
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                          ctypes.c_char_p]
    return lib


def errno_text(what):
    return "%s failed: %s" % (what, os.strerror(ctypes.get_errno()))


def read_config():
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return json.loads(b"".join(chunks).decode("utf-8"))


def make_reporter(fd, nonce):
    """report(status, message) writes the completion record; status b"setup" is not secret.

    The nonce reaches the record file only with the completion record, after the tests.
    """
    tag = b"\nLAR1 " + nonce.encode("ascii") + b" "

    def report(status, message):
        head = b"\nLAR1 setup" if status == b"setup" else tag + status
        data = head + b" " + message.encode("utf-8", "replace").hex().encode("ascii") + b"\n"
        while data:
            data = data[_write(fd, data):]

    return report


def user_tasks(uid):
    """Tasks (threads) the kernel counts against `uid` for RLIMIT_NPROC."""
    count = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/status" % name) as fh:
                fields = dict(line.split(":", 1) for line in fh if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            pass
    return count


def set_limits(cfg, root, notes):
    nproc = cfg["nproc"]
    if not root:
        nproc += user_tasks(os.getuid())
        notes.append("RLIMIT_NPROC counts all processes of the grader's user (not root)")
    limits = [
        ("RLIMIT_CPU", cfg["cpu_s"], cfg["cpu_s"] + 1),
        ("RLIMIT_AS", cfg["memory_bytes"], cfg["memory_bytes"]),
        ("RLIMIT_FSIZE", cfg["fsize_bytes"], cfg["fsize_bytes"]),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_NPROC", nproc, nproc),
        ("RLIMIT_NOFILE", 256, 256),
    ]
    for name, soft, hard in limits:
        which = getattr(resource, name)
        try:
            resource.setrlimit(which, (soft, hard))
        except (ValueError, OSError):
            cur_hard = resource.getrlimit(which)[1]
            if cur_hard != resource.RLIM_INFINITY:
                soft, hard = min(soft, cur_hard), cur_hard
            resource.setrlimit(which, (soft, hard))
            notes.append("%s capped by the existing hard limit %d" % (name, hard))


def write_file(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def isolate_network(lib, root, notes):
    if lib.unshare(CLONE_NEWNET) == 0:
        return True
    first = errno_text("unshare(CLONE_NEWNET)")
    if not root:
        uid, gid = os.getuid(), os.getgid()
        if lib.unshare(CLONE_NEWUSER | CLONE_NEWNET) == 0:
            write_file("/proc/self/setgroups", "deny")
            write_file("/proc/self/uid_map", "%d %d 1" % (uid, uid))
            write_file("/proc/self/gid_map", "%d %d 1" % (gid, gid))
            return True
        first += "; " + errno_text("unshare(CLONE_NEWUSER|CLONE_NEWNET)")
    notes.append("network NOT isolated: " + first)
    return False


def isolate_filesystem(lib, cfg, notes):
    """Private mount namespace: shared writable dirs become empty read-only tmpfs mounts."""
    if lib.unshare(CLONE_NEWNS) != 0:
        notes.append("filesystem NOT isolated: " + errno_text("unshare(CLONE_NEWNS)"))
        return False
    if lib.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        notes.append("filesystem NOT isolated: " + errno_text("making / private"))
        return False
    ok, hidden = True, []
    for path in SHARED_WRITABLE_DIRS:
        real = os.path.realpath(path)
        if real in hidden or not os.path.isdir(real):
            continue
        flags = MS_NOSUID | MS_NODEV
        if lib.mount(b"tmpfs", real.encode(), b"tmpfs", flags, b"size=64k,mode=755") == 0:
            hidden.append(real)
        else:
            ok = False
            notes.append(errno_text("hiding " + real))
    workdir, uid, gid = cfg["workdir"], cfg["uid"], cfg["gid"]
    os.makedirs(workdir, mode=0o755, exist_ok=True)
    options = "size=%dm,mode=700,uid=%d,gid=%d" % (cfg["disk_mb"], uid, gid)
    if lib.mount(b"tmpfs", workdir.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode()) != 0:
        ok = False
        notes.append(errno_text("tmpfs on the work directory"))
        os.chown(workdir, uid, gid)
        os.chmod(workdir, 0o700)
    for real in hidden:
        flags = MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
        if lib.mount(None, real.encode(), None, flags, None) != 0:
            ok = False
            notes.append(errno_text("read-only remount of " + real))
    if not ok:
        notes.append("filesystem only partly isolated")
    return ok


def drop_privileges(uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise RuntimeError("could not switch to uid %d" % uid)
    try:
        os.setuid(0)
    except OSError:
        return
    raise RuntimeError("root could be regained after dropping privileges")


def describe(where, exc):
    try:
        lines = traceback.format_exception_only(type(exc), exc)
        text = lines[-1].strip() if lines else type(exc).__name__
    except BaseException:
        text = type(exc).__name__
    location = ""
    try:
        if isinstance(exc, SyntaxError) and exc.lineno:
            location = " at %s line %s" % (exc.filename, exc.lineno)
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename in ("<program>", "<tests>"):
                location = " at %s line %s" % (frame.filename, frame.lineno)
                if frame.line:
                    location += ": " + frame.line.strip()
                break
    except BaseException:
        pass
    message = "%s: %s%s" % (where, text, location)
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE - 3] + "..."


def compile_source(source, filename):
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    return _compile(source, filename, "exec", dont_inherit=True)


def run_sample(program, tests):
    try:
        program_code = compile_source(program, "<program>")
    except BaseException as exc:
        return b"error", describe("program does not compile", exc)
    try:
        tests_code = compile_source(tests, "<tests>")
    except BaseException as exc:
        return b"error", describe("tests do not compile", exc)
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        _exec(program_code, namespace)
    except SystemExit as exc:
        return b"fail", "program exited with SystemExit(%r) before the tests ran" % (exc.code,)
    except BaseException as exc:
        return b"error", describe("program raised", exc)
    try:
        _exec(tests_code, namespace)
    except AssertionError as exc:
        return b"fail", describe("test failed", exc)
    except SystemExit as exc:
        return b"fail", "SystemExit(%r) raised while the tests ran" % (exc.code,)
    except MemoryError as exc:
        return b"error", describe("memory limit", exc)
    except BaseException as exc:
        return b"fail", describe("tests raised", exc)
    return b"pass", "all tests passed"


def main():
    cfg = read_config()
    result_fd = os.dup(cfg["result_fd"])  # write-only; the duplicate is not inherited
    os.close(cfg["result_fd"])
    report = make_reporter(result_fd, cfg.pop("nonce"))
    root = os.geteuid() == 0
    notes, network, filesystem, dropped = [], False, False, False
    try:
        lib = libc()
        set_limits(cfg, root, notes)
        if cfg["isolate_network"]:
            network = isolate_network(lib, root, notes)
        if root and cfg["uid"] is not None:
            filesystem = isolate_filesystem(lib, cfg, notes)
            drop_privileges(cfg["uid"], cfg["gid"])
            dropped = True
        if lib.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            notes.append(errno_text("PR_SET_NO_NEW_PRIVS"))
        os.chdir(cfg["workdir"])
        os.umask(0o077)
    except BaseException as exc:
        report(b"error", "sandbox setup failed: %s: %s" % (type(exc).__name__, exc))
        _exit(3)
    info = {"network_isolated": network, "filesystem_isolated": filesystem,
            "privileges_dropped": dropped, "notes": notes}
    report(b"setup", json.dumps(info))
    program, tests = cfg.pop("program"), cfg.pop("tests")
    status, message = run_sample(program, tests)
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except BaseException:
            pass
    report(status, message)
    _exit(0 if status == b"pass" else 1)


main()
'''


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
                [python, "-I", "-S", "-B", "-c", _HARNESS],
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


# ---------------------------------------------------------------------------------------------
# Code extraction
# ---------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL)


def extract_code(response: str) -> str:
    """The last ```python block of a markdown response, else its last fenced block, else all."""
    blocks = _FENCE.findall(response)
    python_blocks = [body for lang, body in blocks if lang.lower() in ("python", "python3", "py")]
    if python_blocks:
        return python_blocks[-1]
    if blocks:
        return blocks[-1][1]
    return response


def grade_code(response: str, tests: str, entry_point: str | None = None,
               timeout_s: float = 10.0) -> float:
    """1.0 if the program in `response` passes all `tests` in the sandbox, else 0.0."""
    result = run_code_tests(extract_code(response), tests, timeout_s, entry_point)
    return 1.0 if result.passed else 0.0


# ---------------------------------------------------------------------------------------------
# Math
# ---------------------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def extract_final_answer(text: str) -> str | None:
    """The content of the last \\boxed{...} (balanced braces), else the last number, else None."""
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed.strip()
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def last_boxed(text: str) -> str | None:
    """The content of the last complete \\boxed{...} / \\fbox{...}, nested braces included."""
    for match in reversed(list(_BOXED.finditer(text))):
        depth, index = 1, match.end()
        while index < len(text):
            char = text[index]
            if char == "\\":
                index += 2  # an escaped character such as \{ or \} is not a brace
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return text[match.end():index]
            index += 1
    return None


def grade_math(response: str, reference: str) -> float:
    """1.0 if the response's final answer equals the reference (math-verify), else 0.0.

    The reference is parsed as a boxed LaTeX answer, the response as free text (its last boxed
    answer first). When math-verify cannot parse either side, or says no, identical extracted
    answers (after light normalization) still count as correct.
    """
    from math_verify import parse, verify

    timeout = _math_verify_timeout()
    gold_text = reference.strip().strip("$").strip()
    if "\\boxed" not in gold_text:
        gold_text = "\\boxed{" + gold_text + "}"
    try:
        gold = parse(gold_text, parsing_timeout=timeout)
        pred = parse(response, parsing_timeout=timeout)
        if gold and pred and verify(gold, pred, timeout_seconds=timeout):
            return 1.0
    except Exception:  # math-verify raises on pathological input only when asked; be safe
        pass
    answer = extract_final_answer(response)
    expected = last_boxed(reference) or reference
    if answer is not None and _normalize(answer) == _normalize(expected):
        return 1.0
    return 0.0


def _math_verify_timeout() -> int | None:
    """math-verify's timeouts use SIGALRM, which only works in the main thread: None elsewhere."""
    return 5 if threading.current_thread() is threading.main_thread() else None


def _normalize(answer: str) -> str:
    text = answer.strip().strip("$").strip()
    text = re.sub(r"\\text\{(.*?)\}", r"\1", text)
    text = re.sub(r"\\[,;! ]|\s+", "", text)
    return text.rstrip(".")


# ---------------------------------------------------------------------------------------------
# Grading a generation folder on Ray Data (`lookahead-ray grade`)
# ---------------------------------------------------------------------------------------------

GRADE_BLOCK_ROWS = 8
"""Rows per Ray Data block of the grading map: small, so that workers share the code samples."""


def completion_body(text: str) -> str:
    """A raw completion of a function stub: its lines up to the first unindented line."""
    lines = []
    for line in text.splitlines():
        if line.strip() and not line[0].isspace():
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


def code_program(response: str, reference: dict) -> str:
    """The program to test: the response's code, completing the prompt's stub when it does not
    define the entry point itself, else preceded by the stub's imports."""
    code = extract_code(response)
    entry, prefix = reference.get("entry_point"), reference.get("prefix") or ""
    if not entry:
        return code
    if re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        imports = [line for line in prefix.splitlines() if line.startswith(("import ", "from "))]
        return "\n".join(imports + [code])
    return prefix + completion_body(code)


def grade_response(grader: str, reference: dict, response: str, timeout_s: float = 10.0) -> tuple[float, str, str]:
    """(score, status, message) of one response. grader: math | code | reasoning-gym."""
    if grader == "math":
        score = grade_math(response, str(reference["answer"]))
        found = extract_final_answer(response)
        return score, "pass" if score else "fail", f"answer {found!r}, expected {reference['answer']!r}"
    if grader == "code":
        result = run_code_tests(code_program(response, reference), reference["tests"], timeout_s,
                                reference.get("entry_point"))
        return (1.0 if result.passed else 0.0), result.status, result.message
    if grader == "reasoning-gym":
        import reasoning_gym

        lines = [line.strip() for line in response.strip().splitlines() if line.strip()]
        answer = lines[-1] if lines else ""
        score = float(reasoning_gym.get_score_answer_fn(reference["dataset"])(answer, reference["entry"]))
        return score, "pass" if score >= 1.0 else "fail", f"answer {answer[:100]!r}"
    raise ValueError(f"grader {grader!r} is not a rule-based grader (reward prompts need --reward-model)")


class GradeRows:
    """Ray Data stage: score, status and message for every row that is not graded by a reward model."""

    def __init__(self, timeout_s: float = 10.0):
        self.timeout_s = timeout_s

    def __call__(self, batch):
        scores, statuses, messages = [], [], []
        for grader, reference, response in zip(batch["grader"], batch["reference"], batch["response"]):
            if grader == "reward":
                score, status, message = float("nan"), "pending", "waits for the reward model"
            else:
                score, status, message = grade_response(grader, json.loads(reference), response, self.timeout_s)
            scores.append(score)
            statuses.append(status)
            messages.append(message)
        return batch.assign(score=scores, status=statuses, message=messages)


def reward_text(tokenizer, prompt: str, response: str) -> str:
    """The conversation the reward model reads: its chat template, else plain User/Assistant turns."""
    if getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return f"User: {prompt}\n\nAssistant: {response}"


class RewardModel:
    """An HF sequence-classification reward model (id, path or alias): one float per (prompt, response).

    The reward is the single logit of a one-label head, else the last label's logit minus the first's.
    """

    def __init__(self, model: str, batch_size: int = 8, max_length: int = 1024):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from lookahead_ray.backbones import resolve

        path = resolve(model)
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length

    def score(self, prompts: list[str], responses: list[str]) -> list[float]:
        texts = [reward_text(self.tokenizer, p, r) for p, r in zip(prompts, responses)]
        rewards = []
        for start in range(0, len(texts), self.batch_size):
            inputs = self.tokenizer(texts[start:start + self.batch_size], return_tensors="pt", padding=True,
                                    truncation=True, max_length=self.max_length)
            with self.torch.no_grad():
                logits = self.model(**inputs).logits  # (B, num_labels)
            reward = logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]  # (B,)
            rewards += [float(x) for x in reward]
        return rewards


class RewardScorer:
    """Ray Data stage: the reward model's score for the rows whose grader is `reward`."""

    def __init__(self, model: str):
        self.reward_model = RewardModel(model)

    def __call__(self, batch):
        todo = (batch["grader"] == "reward").to_numpy()
        if not todo.any():
            return batch
        batch = batch.copy()
        rewards = self.reward_model.score(list(batch.loc[todo, "prompt"]), list(batch.loc[todo, "response"]))
        batch.loc[todo, "score"] = rewards
        batch.loc[todo, "status"] = "scored"
        batch.loc[todo, "message"] = "reward model"
        return batch


def response_rows(prompts, responses, names: tuple[str, ...]):
    """One row per (prompt, candidate of the pool), with the prompt's grader and reference.

    Raises, naming an example, when a response is missing or duplicated: rerun generate first.
    """
    keys = ["benchmark", "prompt_id"]
    responses = responses[responses["candidate"].isin(names)]
    duplicated = responses.duplicated(subset=keys + ["candidate"])
    if duplicated.any():
        first = responses[duplicated].iloc[0]
        raise ValueError(f"duplicate response for ({first.benchmark}, {first.prompt_id}, {first.candidate})")
    rows = prompts.merge(responses, on=keys, how="left", indicator=False)
    have = rows.groupby(keys, sort=False)["candidate"].apply(lambda c: set(c.dropna()))
    missing = [(key, name) for key, got in have.items() for name in names if name not in got]
    if missing:
        (benchmark, prompt_id), name = missing[0]
        raise ValueError(f"{len(missing)} (prompt, candidate) responses are missing, e.g. ({benchmark}, "
                         f"{prompt_id}, {name}); rerun generate with the same --out to complete them")
    return rows.reset_index(drop=True)


def routing_frame(graded, prompts, names: tuple[str, ...], split_config):
    """The routing-dataset rows: one per prompt, responses and scores in pool order."""
    import pandas as pd

    from lookahead_ray.data.splits import assign_split

    by_key = {(r.benchmark, r.prompt_id, r.candidate): r for r in graded.itertuples(index=False)}
    rows = []
    for p in prompts.itertuples(index=False):
        graded_rows = [by_key[(p.benchmark, p.prompt_id, name)] for name in names]
        aux = {"grader": p.grader,
               "grades": [{"status": g.status, "message": g.message} for g in graded_rows],
               "output_tokens": [int(g.output_tokens) for g in graded_rows],
               "latency_s": [round(float(g.latency_s), 4) for g in graded_rows],
               "finish_reason": [g.finish_reason for g in graded_rows]}
        rows.append({"prompt_id": p.prompt_id, "benchmark": p.benchmark, "prompt": p.prompt,
                     "candidates": list(names), "responses": [g.response for g in graded_rows],
                     "scores": [float(g.score) for g in graded_rows],
                     "split": assign_split(p.benchmark, p.prompt_id, split_config), "aux": json.dumps(aux)})
    return pd.DataFrame(rows)


def grade_generation(in_dir, out_dir, config=None, reward_model: str | None = None, workers: int = 2,
                     timeout_s: float = 10.0):
    """Grade every response of a generation folder on Ray Data; write the routing dataset."""
    import dataclasses

    import ray.data

    from lookahead_ray.config import DataConfig, to_dict
    from lookahead_ray.data.generate import read_generation
    from lookahead_ray.data.schema import write_dataset

    config = config or DataConfig()
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    prompts, responses, pool = read_generation(in_dir)
    rows = response_rows(prompts, responses, pool.names)
    needs_reward = sorted(set(rows.loc[rows["grader"] == "reward", "benchmark"]))
    if needs_reward and reward_model is None:
        raise ValueError(f"--reward-model: the prompts of {needs_reward} are graded by a reward model; "
                         "pass --reward-model ID (an HF sequence-classification model)")
    blocks = [rows.iloc[i:i + GRADE_BLOCK_ROWS] for i in range(0, len(rows), GRADE_BLOCK_ROWS)]
    ds = ray.data.from_pandas(blocks).map_batches(
        GradeRows, fn_constructor_kwargs={"timeout_s": timeout_s}, batch_size=GRADE_BLOCK_ROWS,
        batch_format="pandas", concurrency=workers, num_cpus=0.5)
    if needs_reward:
        ds = ds.map_batches(RewardScorer, fn_constructor_kwargs={"model": reward_model}, batch_size=GRADE_BLOCK_ROWS,
                            batch_format="pandas", concurrency=1, num_cpus=0.5)
    frame = routing_frame(ds.to_pandas(), prompts, pool.names, config.split)
    data_config = DataConfig(candidates=pool.names, labels=config.labels, split=config.split)
    manifest = {"source": str(in_dir), **to_dict(data_config), "reward_model": reward_model,
                "pool": [dataclasses.asdict(c) for c in pool.candidates]}
    write_dataset(frame, out_dir, manifest)
    return frame


def mean_scores(frame):
    """Mean raw score per benchmark (rows) and candidate (columns) of a routing-dataset frame."""
    import pandas as pd

    names = list(frame["candidates"].iloc[0])
    table = pd.DataFrame([list(s) for s in frame["scores"]], columns=names)
    table["benchmark"] = frame["benchmark"].to_numpy()
    return table.groupby("benchmark", sort=False).mean()


def format_scores(frame) -> str:
    return mean_scores(frame).to_string(float_format=lambda x: f"{x:.3f}")
