"""Where a platform keeps a failed version: the quarantine layout its manifest declares.

The default, `{version}.failed_{utc}`, renames version folder N beside the others; platforms
also quarantine elsewhere in the model's folder (`_quarantine/failed_v{version}_{utc}`). A
layout is a path relative to the model's folder with the placeholders `{version}` and `{utc}`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

from suite.errors import PlatformError

DEFAULT_LAYOUT = "{version}.failed_{utc}"
PLACEHOLDERS = ("version", "utc")
# UTC stamps as platforms write them: the seed's 20261129T081323, with a Z, ISO 8601 with
# separators, or epoch seconds; a collision suffix (`_2`) may follow.
_UTC = (
    r"(?:\d{8}T\d{6}(?:\.\d+)?Z?|\d{4}-\d{2}-\d{2}T\d{2}[:-]?\d{2}[:-]?\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?|\d{10})"
)
_SUFFIX = r"(?:[._-]\d+)?"
# Triton reads a version folder's name as a number with its leading digits (measured on 2.51:
# a folder `3.failed_<ts>` is taken as version 3 when the config has no version_policy).
_LEADING_NUMBER = re.compile(r"^\d+(?=\D)")


class QuarantineLayout:
    """A declared quarantine layout: builds the path of a failed version and finds existing ones."""

    def __init__(self, template: str = DEFAULT_LAYOUT):
        self.template = template
        self._check()
        parts = re.split(r"\{(version|utc)\}", template)
        pattern = ""
        for i, part in enumerate(parts):
            if i % 2 == 0:
                pattern += re.escape(part)
            else:
                pattern += r"(?P<version>\d+)" if part == "version" else f"(?P<utc>{_UTC})"
        self._regex = re.compile(pattern + _SUFFIX + "$")

    def _check(self) -> None:
        named = re.findall(r"\{([^{}]*)\}", self.template)
        unknown = [n for n in named if n not in PLACEHOLDERS]
        problems = []
        if unknown:
            problems.append(f"unknown placeholders {unknown}")
        for placeholder in PLACEHOLDERS:
            if named.count(placeholder) != 1:
                problems.append(f"{{{placeholder}}} must appear exactly once")
        path = Path(self.template)
        if path.is_absolute() or ".." in path.parts or not self.template.strip():
            problems.append("it must be a path inside the model's folder (relative, no '..')")
        first = self.template.split("/")[0]
        if first == "{version}":
            problems.append("the first folder cannot be the bare version number: Triton would serve it")
        if problems:
            raise PlatformError(
                f"quarantine layout {self.template!r} is invalid: {'; '.join(problems)}. Expected a path "
                f"relative to the model's folder with {{version}} and {{utc}}, e.g. {DEFAULT_LAYOUT!r} "
                f"or '_quarantine/failed_v{{version}}_{{utc}}'."
            )

    def path(self, model_folder: Path, version: int, utc: str) -> Path:
        return Path(model_folder) / self.template.format(version=version, utc=utc)

    def entries(self, model_folder: Path, version: Optional[int] = None) -> List[Path]:
        """Quarantined entries under the model's folder (of `version`, or of every version)."""
        model_folder = Path(model_folder)
        depth = self.template.count("/")
        found = []
        for path in _paths_at_depth(model_folder, depth):
            match = self._regex.match(path.relative_to(model_folder).as_posix())
            if match and (version is None or int(match.group("version")) == version):
                found.append(path)
        return sorted(found)

    @property
    def top_folder(self) -> Optional[str]:
        """The folder that holds the quarantine when it is not the model's folder itself."""
        return self.template.split("/")[0] if "/" in self.template else None

    def beside_versions(self) -> bool:
        """Whether quarantined entries sit among the version folders with a leading number."""
        return "/" not in self.template and self.template.startswith("{version}")

    def __repr__(self) -> str:
        return f"QuarantineLayout({self.template!r})"


def _paths_at_depth(root: Path, depth: int) -> List[Path]:
    level = [root]
    for _ in range(depth + 1):
        following = []
        for folder in level:
            try:
                following.extend(p for p in folder.iterdir())
            except (FileNotFoundError, NotADirectoryError):
                continue
        level = following
    return level


def read_as_versions(names: List[str]) -> List[str]:
    """Entries Triton would take for a version although they are not one (`3.failed_x` -> 3)."""
    return sorted(n for n in names if _LEADING_NUMBER.match(n))
