"""Which Spark conf values are secrets: never logged, never put where others can read them."""

from __future__ import annotations

import re

# s3a keys, tokens, passwords: matched on the conf key, whatever the value looks like
_SENSITIVE_KEY = re.compile(r"secret|password|passwd|token|credential|access\.?key|api\.?key", re.IGNORECASE)


def is_sensitive(key: str) -> bool:
    return bool(_SENSITIVE_KEY.search(key))


def redacted(args: list[str]) -> list[str]:
    """``key=value`` arguments with the values of secret-looking keys shown as ***."""
    out = []
    for arg in args:
        key, sep, _ = arg.partition("=")
        out.append(f"{key}=***" if sep and is_sensitive(key) else arg)
    return out
