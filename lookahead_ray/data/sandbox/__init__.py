"""The code sandbox: run one untrusted program against its tests and get a verdict it cannot forge.

`run_code_tests` runs one program plus its tests in a fresh, locked-down process and says
whether every test ran and passed.

How the code sandbox works
--------------------------
Each sample gets its own interpreter, started as `python -I -S -B harness.py` (harness.py copied
into the sample's directory) in a new session
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

from lookahead_ray.data.sandbox.runner import CODE_STATUSES, CodeResult, SandboxInfo, run_code_tests

__all__ = ["CODE_STATUSES", "CodeResult", "SandboxInfo", "run_code_tests"]
