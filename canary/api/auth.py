"""Bearer-token authentication. The token comes from a file or the environment and is
never logged or echoed; comparisons are constant-time."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from canary.input_error import InputError

TOKEN_ENV = "CANARYCTL_API_TOKEN"


def load_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(str(token_file), "", f"cannot read the API token file "
                             f"({exc.strerror or exc})") from exc
        if not token:
            raise InputError(str(token_file), "", "expected an API token, the file is empty")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise InputError("--token-file", "", f"give --token-file or set {TOKEN_ENV}: the API "
                         "does not run without a token")
    return token


def bearer_matches(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())
