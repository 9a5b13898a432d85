"""Redaction of credentials before anything is logged, printed or stored as an artifact.

Call `redact(obj)` on a config dict (or flattened params) before logging it to MLflow or
printing it, and `redact_text(text)` on free text (a YAML dump, a command line, an error).
What is masked, by the value's context:

- values under a secret-looking key: `password`, `db_password`, `AWS_SECRET_ACCESS_KEY`,
  `aws_access_key_id`, `token`, `api_key`, `client_secret`, `Authorization`, ...
  (not keys that only name where a secret lives: `token_path`, `secret_name`, `auth_mode`);
- the password of a URI with user:password@ (`postgresql://mlflow:***@db:5432/mlflow`);
- `key=value` / `key: value` pairs in text whose key is secret-looking, and `Bearer <token>`;
- AWS access key ids (`AKIA...`, `ASIA...`) and PEM private key blocks anywhere in text;
- the literal value of every secret-looking environment variable (AWS_SECRET_ACCESS_KEY,
  AWS_SESSION_TOKEN, MLFLOW_TRACKING_PASSWORD, RAY_AUTH_TOKEN, ...) wherever it appears,
  read at call time; values shorter than `MIN_LITERAL_LEN` are left to the rules above.
  Variables that hold a path, not a secret, are not literals: `PWD` and `OLDPWD` (the
  shell's working directories, whose name only looks like "password"), and any value that is
  an existing absolute path (`GOOGLE_APPLICATION_CREDENTIALS=/keys/sa.json` names where a
  secret lives). Redaction masks credentials, never paths.

`describe_error(err)` is what the entry points print instead of a traceback: one line per
exception of the chain (`raise ... from ...` and the context), each redacted.

The mask is `MASK` ("***"), so a redacted config still shows which keys were set.
"""
from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping, Optional

MASK = "***"
MIN_LITERAL_LEN = 8

# Words that make a key secret (keys are split into lower-case words on _ - . and camelCase).
_SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "secret", "token", "credential", "credentials", "passphrase",
    "apikey", "authorization", "cookie", "signature",
})
_SECRET_PAIRS = frozenset({
    ("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key"),
    ("signing", "key"), ("encryption", "key"), ("account", "key"),
})
# A key whose last word is one of these names a place or a setting, not the secret itself.
_NOT_SECRET_LAST = frozenset({
    "path", "file", "dir", "directory", "mode", "name", "ref", "type", "kind", "enabled",
    "length", "ttl", "seconds", "url", "endpoint",
})

_URI_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s\"']*):(?P<pw>[^@/?#\s\"']+)@"
)
_AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b")
_BEARER = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=\-]{8,}")
_PEM = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
_KEY_SEP = re.compile(r"(?<![A-Za-z0-9_.\-])(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>[\"']?\s*[=:]\s*)")
_VALUE = re.compile(r"\"(?P<dq>[^\"\n]*)\"|'(?P<sq>[^'\n]*)'|(?P<bare>[^\s\"',;&}\]]+)")


def key_words(key: str) -> list[str]:
    """`"awsSecretAccessKey"` / `"AWS_SECRET_ACCESS_KEY"` -> `["aws", "secret", "access", "key"]`."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", str(key))
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_secret_key(key: str) -> bool:
    """True when a value stored under `key` should be masked."""
    words = key_words(key)
    if not words or words[-1] in _NOT_SECRET_LAST:
        return False
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in zip(words, words[1:]))


# Environment variables whose name looks secret but whose value is a directory.
_PATH_VARIABLES = frozenset({"PWD", "OLDPWD"})


def env_secrets(environ: Optional[Mapping[str, str]] = None) -> list[str]:
    """Values of secret-looking environment variables, longest first (at least MIN_LITERAL_LEN);
    working directories and existing absolute paths are not secrets."""
    env = environ_snapshot() if environ is None else environ
    found = {
        v
        for k, v in env.items()
        if is_secret_key(k) and len(v) >= MIN_LITERAL_LEN and k not in _PATH_VARIABLES and not _is_path(v)
    }
    return sorted(found, key=len, reverse=True)


def environ_snapshot() -> dict[str, str]:
    """A copy of os.environ taken safely while other threads change it (MLflow's telemetry
    thread sets and unsets variables; iterating os.environ meanwhile raises KeyError). The
    copy of its underlying dict is one C-level operation under the GIL."""
    data = getattr(os.environ, "_data", None)
    if isinstance(data, dict):
        copied = dict(data)
        return {os.environ.decodekey(k): os.environ.decodevalue(v) for k, v in copied.items()}
    for _ in range(100):  # another platform's os.environ: retry the race
        try:
            return dict(os.environ)
        except (KeyError, RuntimeError):
            continue
    raise RuntimeError("the environment kept changing while it was read")


def _is_path(value: str) -> bool:
    return value.startswith("/") and os.path.exists(value)


def describe_error(err: BaseException) -> str:
    """`Type: message` for `err` and every exception it was raised from, one per line, redacted."""
    lines, seen = [], set()
    current: Optional[BaseException] = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = " ".join(str(current).split()) or "(no message)"
        prefix = "" if current is err else "  caused by "
        lines.append(f"{prefix}{type(current).__name__}: {redact_text(text)}")
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "\n".join(lines)


def redact_text(text: str, extra_secrets: Iterable[str] = ()) -> str:
    """`text` with every secret it contains replaced by MASK (see the module docstring)."""
    out = str(text)
    literals = sorted({s for s in extra_secrets if s} | set(env_secrets()), key=len, reverse=True)
    for literal in literals:
        out = out.replace(literal, MASK)
    out = _PEM.sub(MASK, out)
    out = _URI_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", out)
    out = _AWS_KEY_ID.sub(MASK, out)
    out = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", out)
    return _mask_assignments(out)


def redact(obj: Any, extra_secrets: Iterable[str] = ()) -> Any:
    """A copy of `obj` (dicts, lists, tuples, strings, scalars) with secrets masked.

    Dict values under secret-looking keys become MASK (None and booleans are kept, they
    carry no secret); every string is passed through `redact_text`.
    """
    extra = tuple(extra_secrets)
    if isinstance(obj, Mapping):
        return {k: _redact_item(k, v, extra) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        items = [redact(v, extra) for v in obj]
        return items if isinstance(obj, list) else tuple(items)
    if isinstance(obj, str):
        return redact_text(obj, extra)
    return obj


def _redact_item(key: Any, value: Any, extra: tuple[str, ...]) -> Any:
    if isinstance(key, str) and is_secret_key(key) and value is not None and not isinstance(value, bool):
        if isinstance(value, (Mapping, list, tuple)):
            return _mask_leaves(value)
        return MASK
    return redact(value, extra)


def _mask_leaves(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {k: _mask_leaves(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_mask_leaves(v) for v in obj]
    return obj if obj is None or isinstance(obj, bool) else MASK


def _mask_assignments(text: str) -> str:
    """Mask the value after every `secret_key=` / `secret_key: ` in `text`.

    Keys are matched without their values so that a non-secret key (`http:`) does not swallow
    a secret one later in the same token (`http://h/?X-Amz-Signature=...`).
    """
    parts, pos = [], 0
    for key in _KEY_SEP.finditer(text):
        if key.start() < pos or not is_secret_key(key.group("key")):
            continue
        value = _VALUE.match(text, key.end())
        group = value.lastgroup if value is not None else None
        if group is None or value.group(group) in ("", MASK):
            continue
        parts.append(text[pos : value.start(group)])
        parts.append(MASK)
        pos = value.end(group)
    parts.append(text[pos:])
    return "".join(parts)

__all__ = ["MASK", "describe_error", "env_secrets", "is_secret_key", "key_words", "redact", "redact_text"]
