"""Bad user input, reported as one line that names the file, the field and what was expected."""

from __future__ import annotations


class InputError(Exception):
    """Invalid input from a user. `str()` is the one-line message the CLI prints (exit 2).

    `line` is the 1-based line in `file` where the field stands, when known.
    """

    def __init__(self, file: str, field: str, expected: str, line: int | None = None) -> None:
        self.file = file
        self.field = field
        self.expected = expected
        self.line = line
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {field}: {expected}" if field else f"{where}: {expected}")


class InputErrors(Exception):
    """Several problems in one input, one line each (validate reports them all at once)."""

    def __init__(self, errors: list[InputError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
