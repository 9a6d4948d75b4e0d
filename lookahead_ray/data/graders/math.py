"""The math grader: a response's final answer against the reference, by math-verify.

`grade_math` compares with math-verify and falls back to comparing the extracted answers as
strings when math-verify finds nothing to parse.
"""

from __future__ import annotations

import re
import threading

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

    The final answer is extracted first (the last \\boxed{}, else the last number) and only that is
    parsed: math-verify given the whole text evaluates any expression in it, so a response that
    restates the question ("5 * 33 = 155 ... to calculate 5 * 33") was graded right for 165. When
    math-verify cannot parse either side, or says no, identical extracted answers (after light
    normalization) still count as correct.
    """
    from math_verify import parse, verify  # heavy (sympy): loaded on the first math grade

    answer = extract_final_answer(response)
    if answer is None:
        return 0.0
    timeout = _math_verify_timeout()
    gold_text = reference.strip().strip("$").strip()
    if "\\boxed" not in gold_text:
        gold_text = "\\boxed{" + gold_text + "}"
    try:
        gold = parse(gold_text, parsing_timeout=timeout)
        pred = parse("\\boxed{" + answer + "}", parsing_timeout=timeout)
        if gold and pred and verify(gold, pred, timeout_seconds=timeout):
            return 1.0
    except Exception:  # math-verify raises on pathological input only when asked; be safe
        pass
    expected = last_boxed(reference) or reference
    if _normalize(answer) == _normalize(expected):
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
