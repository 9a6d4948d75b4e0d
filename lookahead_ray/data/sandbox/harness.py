"""The sandbox harness: the first code a sample's interpreter runs (see lookahead_ray.data.sandbox).

The runner copies this file into the sample's directory and starts `python -I -S -B harness.py`.
It must stay runnable on any Python 3.8+ and import nothing outside the standard library.
"""

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


if __name__ == "__main__":
    main()
