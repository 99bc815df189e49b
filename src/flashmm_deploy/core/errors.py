"""Error types.  Every message here is built from paths, layer names and file names only: a
secret value can never reach one (see ``Issue.message``, which callers must build without it)."""

from __future__ import annotations

from dataclasses import dataclass, field


class FlashmmError(Exception):
    """Base of every error the toolkit raises on purpose; plugins turn it into Ansible's."""


@dataclass(frozen=True)
class Origin:
    """Where a value came from: the layer's name and the file (or description) behind it."""

    layer: str
    source: str

    def __str__(self) -> str:
        return f"layer '{self.layer}', {self.source}"


@dataclass(frozen=True)
class Issue:
    path: str                    # dotted key path, or an env var name for the env layer
    message: str                 # what is wrong and what is expected; never a secret value
    origin: Origin | None = None
    severity: str = "error"      # "error" | "warning"
    related: tuple[tuple[str, Origin | None], ...] = field(default_factory=tuple)

    def render(self) -> str:
        text = f"{self.path}: {self.message}"
        if self.origin is not None:
            text += f"\n      from {self.origin}"
        for path, origin in self.related:
            text += f"\n      ({path} from {origin if origin else 'unknown source'})"
        return text


class ConfigInvalid(FlashmmError):
    """One or more hosts' configurations are invalid.  ``issues`` maps host -> its issues."""

    def __init__(self, issues: dict[str, list[Issue]]):
        self.issues = issues
        super().__init__(self._format())

    def _format(self) -> str:
        return format_issues(self.issues, "FlashMM configuration invalid")


def format_issues(issues: dict[str, list[Issue]], title: str) -> str:
    """One entry per distinct issue, naming the hosts it applies to (an error in a shared group
    file is said once, not once per host)."""
    hosts_of: dict[str, list[str]] = {}
    for host, host_issues in sorted(issues.items()):
        for issue in host_issues:
            hosts_of.setdefault(issue.render(), []).append(host)
    lines = [f"{title}: {len(hosts_of)} problem(s) in {len(issues)} host(s)"]
    for text, hosts in hosts_of.items():
        lines.append("  - " + text)
        lines.append("      hosts: " + ", ".join(hosts))
    return "\n".join(lines)


class InventoryError(FlashmmError):
    """An inventory cannot be read (missing directory, unparsable YAML, unknown host)."""
