"""JSON parsing that turns every way a text can fail to parse into one `JSONProblem`.

`json.loads` raises more than `JSONDecodeError`: nesting deeper than the interpreter's recursion limit
raises `RecursionError`, and an integer of more than 4,300 digits raises a bare `ValueError`. Either would
stop a whole ingestion run; callers catch `JSONProblem` and report the file (and line) instead.
"""

from __future__ import annotations

import json


class JSONProblem(ValueError):
    """Text that is not usable JSON; `line` and `column` are known for syntax errors only."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None) -> None:
        super().__init__(reason)
        self.reason, self.line, self.column = reason, line, column


def loads(text: str) -> object:
    """The parsed value of `text`, or `JSONProblem` saying why it has none."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise JSONProblem(f"not valid JSON: {error.msg}", error.lineno, error.colno) from None
    except RecursionError:
        raise JSONProblem("not usable JSON: nested too deeply") from None
    except ValueError as error:
        # CPython's guard against quadratic int parsing (sys.get_int_max_str_digits).
        if "integer string conversion" in str(error):
            raise JSONProblem("not usable JSON: a number has too many digits") from None
        raise JSONProblem(f"not usable JSON: {error}") from None
