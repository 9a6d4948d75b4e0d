"""The code grader: the program in a model's response, run against its tests in the sandbox."""

from __future__ import annotations

import re

from lookahead_ray.data.sandbox import run_code_tests

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
