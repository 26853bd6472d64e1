"""The README's real-cluster recipe has the shape tests/e2e/test_readme_recipe.py runs: a set-up that copies the
example inventory (the test fills it in there, as a user does), then site, stop and delete. A README edit that
breaks the shape fails here, in the fast tier, before the end-to-end run."""

from __future__ import annotations

import pytest

from sandbox.sandbox import REPO
from tests.support.readme_recipe import SETUP, RecipeError, readme_steps, recipe_block, recipe_steps


def test_the_readme_recipe_is_a_setup_then_site_stop_delete() -> None:
    steps = readme_steps(REPO)
    assert [step.name for step in steps] == [SETUP, "site", "stop", "delete"]
    setup = steps[0].script.splitlines()
    assert any(line.startswith("cp -r inventory.example inventory") for line in setup), steps[0].script
    assert "purge_data=true" in steps[-1].script


def test_a_block_is_cut_before_each_playbook_and_keeps_its_lines() -> None:
    block = "python3 -m venv ~/v  # a comment\nmake x\n\nansible-playbook -i inv pai.monitoring.site  # go\n"
    steps = recipe_steps(block + "ansible-playbook -i inv pai.monitoring.delete -e purge_data=true\n")
    assert [(s.name, s.script) for s in steps] == [
        (SETUP, "python3 -m venv ~/v  # a comment\nmake x\n\n"),
        ("site", "ansible-playbook -i inv pai.monitoring.site  # go\n"),
        ("delete", "ansible-playbook -i inv pai.monitoring.delete -e purge_data=true\n"),
    ]


def test_only_the_real_cluster_section_counts() -> None:
    readme = "# x\n\n## Set up\n\n```bash\nmake demo\n```\n\n## Deploy on a real cluster\n\ntext\n\n```bash\nls\n```\n"
    assert recipe_block(readme) == "ls\n"
    with pytest.raises(RecipeError, match="has no ```bash block"):
        recipe_block("## Deploy on a real cluster\n\nno block\n\n## Next\n\n```bash\nls\n```\n")
    with pytest.raises(RecipeError, match="has no section"):
        recipe_block("## Set up\n")
