"""The documentation: the MkDocs site builds with --strict (every page, link, anchor and API reference
resolves), every page of docs/ is in its navigation, and the README's links into docs/ land."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import yaml

from conftest import REPO


def test_the_site_builds_strictly_with_the_api_reference_and_the_readmes_tables(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (site / "reference" / "index.html").read_text()
    assert "genkit.load" in reference and "weights_only" in reference  # rendered from load's docstring
    assert "litdata" in (site / "dependencies" / "index.html").read_text()  # the README's table, included
    assert "Set-up: two commands" in (site / "index.html").read_text()


def test_every_page_is_in_the_navigation():
    def pages(node):
        if isinstance(node, str):
            return [node]
        if isinstance(node, list):
            return [page for item in node for page in pages(item)]
        return [page for value in node.values() for page in pages(value)]

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert sorted(pages(config["nav"])) == sorted(p.name for p in (REPO / "docs").glob("*.md"))


def slug(heading: str) -> str:
    """The anchor MkDocs (and GitHub) give a heading."""
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading.lower()).strip())


def test_the_readmes_links_into_the_guide_land():
    readme = (REPO / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)#]+)(?:#([^)]+))?\)", readme)
    assert len(links) > 10
    for path, anchor in links:
        target = REPO / path
        assert target.is_file(), f"README links to {path}, which does not exist"
        if anchor:
            headings = {slug(h) for h in re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)}
            assert anchor in headings, f"README links to {path}#{anchor}, a heading it does not have"
