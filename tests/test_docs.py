"""The front page and the docs pages: every relative link resolves (a file that exists, an
anchor that is a heading there), every page is reachable from the README, the README stays
short and opens with its two commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```")


def prose(path: Path) -> str:
    """The page without its fenced code blocks (a `[x](y)` in a code sample is not a link)."""
    kept, fenced = [], False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(line.lstrip("#")) for line in prose(path).splitlines()
            if re.match(r"^#{1,6} ", line)}


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path)) if not re.match(r"^(https?|mailto):", t)]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not broken, f"{page.name}: {broken}"


def test_every_docs_page_is_reachable_from_the_readme():
    linked = {(ROOT / t.partition("#")[0]).resolve() for t in links(ROOT / "README.md")}
    missing = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not missing, missing


def test_the_readme_is_short_and_opens_with_its_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 250, len(lines)
    assert lines[2:6] == [
        "```bash",
        "bash scripts/setup.sh && .venv/bin/layerif demo      # set up, then the main job "
        "(offline, ~1.5 min)",
        "bash scripts/test.sh                                   # set up, then the tests (what "
        ".ci/run runs)",
        "```",
    ]


def test_the_link_checker_catches_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](missing.md) [bad anchor](#nope)\n"
                    "```\n[not a link](nowhere.md)\n```\n")
    assert links(page) == ["#title", "missing.md", "#nope"]
    assert anchors(page) == {"title"}


def test_committed_results_are_never_ignored_by_git():
    # a grid's saved cells (a search's checkpoint under cells/search-work/runs among them) must
    # reach the commit, or a run cannot resume across sessions; a pattern such as `runs/`
    # (any depth) silently dropped them
    import shutil
    import subprocess

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    paths = ["experiments/results/g/cells/search-work/runs/abc/state.json",
             "experiments/results/g/cells/eval/abc/eval.json", "experiments/results/g/plots/a.png"]
    ignored = subprocess.run(["git", "check-ignore", *paths], cwd=ROOT, capture_output=True,
                             text=True).stdout.split()
    assert ignored == []
    assert subprocess.run(["git", "check-ignore", "-q", "runs/exp/x/cells/a.json"],
                          cwd=ROOT).returncode == 0  # the live runs stay out
