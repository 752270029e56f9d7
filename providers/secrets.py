"""Credentials for providers: read from environment variables or files, never from a spec.

Every value read here is remembered so `redact()` can scrub it from any text before that
text reaches a log line, an exception, a report or a terminal. Providers wrap the
messages they raise in `redact()`; `Secret` keeps the value out of reprs.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

REDACTED = "***"

# Shorter values would scrub innocent text ("a", "10") out of messages; nobody's API key
# is this short.
_MIN_SECRET_LENGTH = 4

_known: set[str] = set()
_known_lock = threading.Lock()


class SecretError(ValueError):
    """A credential could not be read; the message names where it was looked for."""


class Secret:
    """A credential whose repr and str never show the value."""

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source
        remember(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source or 'value'}={REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def remember(value: str) -> None:
    """Registers a value that `redact()` must scrub from now on."""
    value = value.strip()
    if len(value) >= _MIN_SECRET_LENGTH:
        with _known_lock:
            _known.add(value)


def redact(text: str) -> str:
    """`text` with every known secret value replaced by ***."""
    with _known_lock:
        values = sorted(_known, key=len, reverse=True)
    for value in values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def read_secret(*, env: str | None = None, file: str | Path | None = None, what: str) -> Secret:
    """The credential named `what`, from the env var `env` or else the file `file`.

    An env var that is set but empty counts as missing: an empty key would only produce
    a confusing 403 later.
    """
    if env:
        value = os.environ.get(env, "")
        if value.strip():
            return Secret(value.strip(), f"env:{env}")
        if not file:
            raise SecretError(f"{what}: environment variable {env} is not set or empty")
    if file:
        path = Path(file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{what}: cannot read file {path}: {exc.strerror}") from None
        if not value:
            raise SecretError(f"{what}: file {path} is empty")
        return Secret(value, f"file:{path}")
    raise SecretError(f"{what}: no environment variable or file given")


def read_optional_secret(
    *, env: str | None = None, file: str | Path | None = None, what: str
) -> Secret | None:
    """Like `read_secret`, but None when neither source is configured."""
    if not env and not file:
        return None
    return read_secret(env=env, file=file, what=what)
