"""A small Dockerfile reader: enough of the syntax to check Dockerfile.gpu's policy
and to run its entrypoint outside Docker (no Docker engine on the test machines).

Handles comments, parser directives, line continuations, heredocs (``<<EOF``,
``<<-EOF``, quoted delimiters), exec and shell forms, ``ENV`` in both spellings with
``$VAR`` / ``${VAR}`` substitution, and stages that build on earlier stages.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile.gpu"

_HEREDOC = re.compile(r"<<(-?)(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\2")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class Instruction:
    keyword: str  # upper case
    args: str  # everything after the keyword, continuation lines joined
    line: int  # 1-based line of the keyword
    heredocs: list[tuple[str, str]] = field(default_factory=list)  # (delimiter, body)

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        return exec_form(self.args)


def exec_form(text: str) -> list[str] | None:
    text = text.strip()
    if not text.startswith("["):
        return None
    value = json.loads(text)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not an exec-form array: {text}")
    return value


@dataclass
class Stage:
    base: str  # the FROM image or the name of an earlier stage
    name: str | None
    parent: Stage | None  # the earlier stage this one builds on
    instructions: list[Instruction] = field(default_factory=list)

    def chain(self) -> list[Stage]:
        """This stage and the stages it builds on, the first ``FROM image`` first."""
        stages: list[Stage] = []
        stage: Stage | None = self
        while stage is not None:
            stages.insert(0, stage)
            stage = stage.parent
        return stages

    @property
    def image(self) -> str:
        """The registry image at the bottom of this stage's chain."""
        return self.chain()[0].base

    def all_instructions(self, keyword: str | None = None) -> list[Instruction]:
        """Instructions of the chain (what the final image is made of), in order."""
        found = [i for stage in self.chain() for i in stage.instructions]
        return [i for i in found if keyword is None or i.keyword == keyword]

    def env(self, initial: dict[str, str] | None = None) -> dict[str, str]:
        """The environment ``ENV`` gives the image, substituted in order."""
        env = dict(initial or {})
        for instruction in self.all_instructions("ENV"):
            env.update(parse_env(instruction.args, env))
        return env

    def last(self, keyword: str) -> Instruction | None:
        found = self.all_instructions(keyword)
        return found[-1] if found else None


def substitute(text: str, env: dict[str, str]) -> str:
    """``$VAR`` and ``${VAR}`` from ``env`` (unknown ones become empty, as in Docker)."""
    return _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def parse_env(args: str, env: dict[str, str]) -> dict[str, str]:
    """``ENV a=1 b="x y"`` or the legacy ``ENV a 1``; values substituted from ``env``."""
    words = shlex.split(args, posix=True)
    if words and "=" not in words[0]:
        return {words[0]: substitute(args.strip()[len(words[0]):].strip(), env)}
    values: dict[str, str] = {}
    for word in words:
        name, sep, value = word.partition("=")
        if not sep:
            raise ValueError(f"ENV word without '=': {word!r} in {args!r}")
        values[name] = substitute(value, env)
    return values


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile, in order."""
    lines = text.splitlines()
    instructions: list[Instruction] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        parts: list[str] = []
        while True:
            current = lines[i].rstrip()
            i += 1
            if current.endswith("\\"):
                parts.append(current[:-1])
                # comment and empty lines inside a continued instruction are skipped
                while i < len(lines) and (
                    not lines[i].strip() or lines[i].lstrip().startswith("#")
                ):
                    i += 1
                if i < len(lines):
                    continue
            else:
                parts.append(current)
            break
        full = " ".join(p.strip() for p in parts)
        keyword, _, args = full.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), start + 1)
        if instruction.keyword in ("RUN", "COPY", "ADD"):
            for strip_tabs, _quote, delimiter in _HEREDOC.findall(args):
                body: list[str] = []
                while i < len(lines):
                    candidate = lines[i].lstrip("\t") if strip_tabs else lines[i]
                    i += 1
                    if candidate == delimiter:
                        break
                    body.append(candidate)
                else:
                    raise ValueError(f"line {start + 1}: heredoc {delimiter} is never closed")
                instruction.heredocs.append((delimiter, "\n".join(body) + "\n"))
        instructions.append(instruction)

    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            base = words[0]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            parent = next((s for s in stages if s.name == base), None)
            stages.append(Stage(base, name, parent))
        elif stages:
            stages[-1].instructions.append(instruction)
        elif instruction.keyword != "ARG":
            raise ValueError(f"line {instruction.line}: {instruction.keyword} before FROM")
    if not stages:
        raise ValueError("no FROM instruction")
    return stages


@dataclass
class Healthcheck:
    options: dict[str, str]
    command: list[str]  # exec form


def healthcheck(instruction: Instruction) -> Healthcheck:
    options: dict[str, str] = {}
    rest = instruction.args
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.strip()
    keyword, _, command = rest.partition(" ")
    if keyword.upper() != "CMD":
        raise ValueError(f"line {instruction.line}: HEALTHCHECK {keyword} (expected CMD)")
    form = exec_form(command)
    return Healthcheck(options, form if form is not None else ["/bin/sh", "-c", command])


def copied_heredoc(stage: Stage, destination: str) -> str:
    """The text a ``COPY <<EOF destination`` in ``stage``'s chain writes into the image."""
    for instruction in stage.all_instructions("COPY"):
        words = [w for w in instruction.args.split() if not w.startswith("--")]
        if instruction.heredocs and words and words[-1] == destination:
            return instruction.heredocs[0][1]
    raise LookupError(f"no COPY <<EOF ... {destination}")


def load(path: Path = DOCKERFILE) -> list[Stage]:
    return parse(path.read_text())
