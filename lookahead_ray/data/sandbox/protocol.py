"""The protocol between the two cells: tagged-JSON plain data, the sample's side, the judge's side.

The sample cell runs the program (`run_program`) and answers calls; the judge runs the tests
(`run_tests`) with the program's functions replaced by proxies that make those calls. Only plain
data crosses: a value the judge decodes is a built-in None, bool, int, float, complex, str,
bytes, list, tuple, set, frozenset or dict (or an opaque `Handle`), so nothing the program
defines ever runs in the judge. The runner copies this file beside harness.py; it must stay
runnable on Python 3.8+ with the standard library only.
"""

import ast
import builtins
import json
import linecache
import os
import struct
import sys
import traceback
import types

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
        if name.startswith("__"):  # the judge decides which of the rest the tests may see
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


def tests_namespace(link, names, trusted, entry_point, tests=""):
    """Program names as proxies (functions), genuine modules of the same name, plain values.

    A program name that shadows a builtin is left out, unless it is a function under test
    (`functions_under_test`): the tests' own `abs` or `isinstance` stay the real ones.
    """
    namespace = {"__name__": "__tests__", "__builtins__": builtins}
    under_test = functions_under_test(tests, names) | {entry_point}
    for name, entry in names.items():
        if not isinstance(name, str) or not name.isidentifier() or not isinstance(entry, list) or not entry:
            continue
        if name.startswith("__"):  # `__builtins__` from the sample would replace the tests' builtins
            continue
        if name in BUILTIN_NAMES and not (entry[0] == "f" and name in under_test):
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


def functions_under_test(tests, names):
    """Program functions named like a builtin that the tests may call (MBPP asks for a `sum`).

    Such a name is shown to the tests only if every statement that mentions it mentions no other
    builtin or program name: then it is tested against constants (`assert sum(10, 15) == 6`) and
    cannot stand in for a helper that judges another call (`assert abs(add(2, 5) - 7) < 1e-9`).
    """
    candidates = {name for name, entry in names.items()
                  if name in BUILTIN_NAMES and isinstance(entry, list) and entry[:1] == ["f"]}
    if not candidates or not tests:
        return set()
    try:
        tree = ast.parse(tests)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return set()
    known = BUILTIN_NAMES | set(names)
    allowed, seen = set(candidates), set()
    for statement in ast.walk(tree):
        if not isinstance(statement, ast.stmt):
            continue
        mentioned = statement_names(statement) & known
        for name in mentioned & candidates:
            seen.add(name)
            if mentioned - {name}:
                allowed.discard(name)
    return allowed & seen


def statement_names(statement):
    """The names one statement mentions, not counting the statements nested in it."""
    found, stack = set(), list(ast.iter_child_nodes(statement))
    while stack:
        node = stack.pop()
        if isinstance(node, ast.stmt):
            continue
        if isinstance(node, ast.Name):
            found.add(node.id)
        stack.extend(ast.iter_child_nodes(node))
    return found


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
        namespace = tests_namespace(link, first["names"], cfg.get("trusted"), cfg.get("entry_point"), cfg["tests"])
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
