"""Keep secrets (notification URLs, tokens, passwords) out of everything the gate writes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, List, Set

import yaml

MASK = "<redacted>"

# Keys whose values are secrets in Alertmanager, Prometheus and Grafana configs.
SECRET_KEYS = re.compile(
    r"(api_url|webhook_url|url_file|password|passwd|token|secret|api_key|apikey|routing_key|service_key"
    r"|credentials|authorization|bearer)",
    re.IGNORECASE,
)

# Secrets recognised by their shape wherever they appear, even when no config named them.
PATTERNS = [
    # Slack incoming webhooks: the path is the credential.
    (re.compile(r"(https://hooks\.slack\.com/)[^\s'\"<>]+"), r"\1" + MASK),
    # user:password@ in any URL.
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s:@'\"]+:[^/\s@'\"]+@", re.IGNORECASE), r"\1" + MASK + "@"),
    # key=value / key: value / "key": "value" for secret-looking keys.
    (
        re.compile(
            r"""(?P<key>["']?\b[\w.-]*(?:password|passwd|token|secret|api[_-]?key|credentials)["']?\s*[:=]\s*)"""
            r"""(?P<quote>["']?)(?P<value>[^\s'",}]+)""",
            re.IGNORECASE,
        ),
        r"\g<key>\g<quote>" + MASK,
    ),
    # HTTP Authorization headers.
    (re.compile(r"(\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}"), r"\1" + MASK),
]

# Values too short or too common to be worth masking as literals (they would mangle text).
MIN_LITERAL = 6


SEPARATORS = re.compile(r"[/:@?&=#,;\s]+")


def fragments(secret: str) -> Set[str]:
    """The secret, its distinctive parts, and their heads and tails.

    pytest shortens long strings in assertion messages ('https://hook...RET/xyzSECRET'), so the
    whole value may never appear: the parts that carry the secret must be masked on their own.
    Host names, schemes and short lowercase words ('services', 'https') are not secret.
    """
    found = {secret}
    for part in SEPARATORS.split(secret):
        if len(part) < MIN_LITERAL or "." in part or (part.isalpha() and part.islower() and len(part) < 10):
            continue
        found.add(part)
        found.update(part[:n] for n in range(MIN_LITERAL, len(part)))
        found.update(part[-n:] for n in range(MIN_LITERAL, len(part)))
    return found


class Redactor:
    """Masks known secret values (taken from the platform's configs) and secret-shaped text."""

    def __init__(self, secrets: Iterable[str] = ()):
        literals: Set[str] = set()
        for secret in secrets:
            if isinstance(secret, str) and len(secret) >= MIN_LITERAL:
                literals |= fragments(secret)
        # Longest first, so a secret that contains another is masked whole.
        self.literals: List[str] = sorted(literals, key=len, reverse=True)

    def text(self, value: str) -> str:
        for literal in self.literals:
            value = value.replace(literal, MASK)
        for pattern, replacement in PATTERNS:
            value = pattern.sub(replacement, value)
        return value

    def data(self, value: Any) -> Any:
        """The same structure with every string redacted (dicts, lists, tuples)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: (MASK if _is_secret_key(k, v) else self.data(v)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.data(v) for v in value)
        return value


def _is_secret_key(key: Any, value: Any) -> bool:
    return isinstance(key, str) and isinstance(value, str) and bool(SECRET_KEYS.search(key)) and bool(value)


def secrets_in(data: Any) -> List[str]:
    """Every string value stored under a secret-looking key, at any depth."""
    found: List[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if _is_secret_key(key, value):
                found.append(value)
            else:
                found += secrets_in(value)
    elif isinstance(data, list):
        for value in data:
            found += secrets_in(value)
    return found


def secrets_in_files(paths: Iterable[Path]) -> List[str]:
    """Secrets in YAML/JSON config files; files that are missing or unreadable add none."""
    found: List[str] = []
    for path in paths:
        try:
            found += secrets_in(yaml.safe_load(Path(path).read_text()))
        except (OSError, yaml.YAMLError):
            continue
    return found
