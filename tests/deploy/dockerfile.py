"""Just enough of the Dockerfile and .dockerignore formats to replay deploy/Dockerfile.

`parse` splits a Dockerfile into stages of instructions (continuation lines joined, comments
and parser directives dropped, exec-form JSON decoded). `Ignore` decides which files of a
build context a .dockerignore lets through: patterns in order, the last match wins, `!`
re-includes, and a pattern that matches a directory matches everything under it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY ...
    text: str  # the rest of the line, continuations joined
    flags: dict[str, str] = field(default_factory=dict)  # --from=build etc.

    def words(self) -> list[str]:
        """The arguments: exec-form JSON when the text is a JSON array, else shell words."""
        if self.text.startswith("["):
            words: list[str] = json.loads(self.text)
            return words
        return shlex.split(self.text)


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None


_FLAG = re.compile(r"--([a-z-]+)=(\S+)\s+")


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile, in order."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue  # comments and parser directives (`# syntax=...`)
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        rest = rest.strip()
        flags: dict[str, str] = {}
        while m := _FLAG.match(rest):
            flags[m.group(1)] = m.group(2)
            rest = rest[m.end() :]
        ins = Instruction(keyword.upper(), rest, flags)
        if ins.keyword == "FROM":
            words = ins.words()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name, []))
        else:
            assert stages, f"{ins.keyword} before the first FROM"
            stages[-1].instructions.append(ins)
    return stages


def env_pairs(ins: Instruction, env: dict[str, str]) -> dict[str, str]:
    """The variables an `ENV K=V ...` sets, `$VAR`/`${VAR}` expanded from `env`."""
    out: dict[str, str] = {}
    for word in ins.words():
        name, eq, value = word.partition("=")
        assert eq, f"ENV {word!r}: only the KEY=VALUE form is supported"
        out[name] = expand(value, {**env, **out})
    return out


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: env.get(m.group(1), ""), value)


class Ignore:
    """A .dockerignore: which context paths (relative, with `/`) are left out."""

    def __init__(self, text: str) -> None:
        self.rules: list[tuple[bool, str, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negated = line.startswith("!")
            pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            self.rules.append((negated, pattern, re.compile(_regex(pattern))))

    def excluded(self, path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        result = False
        for negated, _, rx in self.rules:
            if any(rx.fullmatch(p) for p in prefixes):
                result = not negated
        return result

    def files(self, root: Path) -> list[str]:
        """Every file of the context under `root` that the rules let through."""
        out = []
        for dirpath, dirnames, filenames in os.walk(root):
            rel = Path(dirpath).relative_to(root).as_posix()
            base = "" if rel == "." else rel + "/"
            # Skip a left-out directory unless a `!` rule might bring something under it back.
            dirnames[:] = [
                d for d in dirnames if not self.excluded(base + d) or self._may_reinclude(base + d)
            ]
            out += [base + f for f in filenames if not self.excluded(base + f)]
        return sorted(out)

    def _may_reinclude(self, directory: str) -> bool:
        return any(
            neg and (raw.startswith(directory + "/") or raw.startswith("**"))
            for neg, raw, _ in self.rules
        )


def _regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
