"""The README's "Deploy on a real cluster" recipe, read from README.md as written, cut into the steps a user runs.

The recipe is one bash block. A user runs its lines in order, and between them does what the comments say (fill in
the inventory) and looks at the result of each playbook. :func:`recipe_steps` cuts the block before each
``ansible-playbook`` line: the first step is everything up to the first playbook (controller virtualenv, collection,
inventory copy, wheelhouse), then one step per playbook, named after it (``site``, ``stop``, ``delete``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SECTION = "## Deploy on a real cluster"
SETUP = "setup"
_PLAYBOOK = re.compile(r"^ansible-playbook\b.*\bpai\.monitoring\.(?P<name>[a-z_]+)\b")


class RecipeError(ValueError):
    """README.md has no recipe in the shape the test runs; the message says what is missing."""


@dataclass(frozen=True)
class Step:
    name: str
    """``setup``, or the playbook the step runs (``site``, ``stop``, ``delete``)."""
    script: str
    """The step's lines of the block, verbatim."""


def recipe_block(readme: str) -> str:
    """The first ``bash`` code block of the README's real-cluster section."""
    heading = re.search(rf"^{re.escape(SECTION)}$", readme, flags=re.MULTILINE)
    if heading is None:
        raise RecipeError(f"README.md has no section {SECTION!r}")
    section = re.split(r"^## ", readme[heading.end() :], maxsplit=1, flags=re.MULTILINE)[0]
    match = re.search(r"^```bash\n(?P<body>.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    if match is None:
        raise RecipeError(f"the section {SECTION!r} of README.md has no ```bash block")
    return match["body"]


def recipe_steps(block: str) -> list[Step]:
    """The block cut before each ``ansible-playbook ... pai.monitoring.NAME`` line."""
    steps: list[Step] = []
    name, lines = SETUP, list[str]()
    for line in block.splitlines():
        playbook = _PLAYBOOK.match(line.strip())
        if playbook:
            steps.append(Step(name, "\n".join(lines) + "\n"))
            name, lines = playbook["name"], []
        lines.append(line)
    steps.append(Step(name, "\n".join(lines) + "\n"))
    return [step for step in steps if step.script.strip()]


def readme_steps(repo: Path) -> list[Step]:
    return recipe_steps(recipe_block((repo / "README.md").read_text()))
