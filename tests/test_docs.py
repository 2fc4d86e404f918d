"""The documentation's own promises: every shipped regime is in docs/regimes.md's table, every relative link of
README.md, BENCHMARKS.md and docs/*.md points at a file that exists, and README keeps the two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_regimes_table_lists_every_shipped_regime():
    shipped = yaml.safe_load((ROOT / "mai_aug" / "configs" / "regimes.yaml").read_text())["regimes"]
    table = {m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", (ROOT / "docs" / "regimes.md").read_text(), re.M)}
    assert table == set(shipped)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_makefile_robustness_time_agrees_with_analyses_md():
    low, high = map(int, re.search(r"robustness demo \((\d+) to (\d+) minutes", (ROOT / "Makefile").read_text()).groups())
    measured = re.findall(r"(\d+) min \d+ s", (ROOT / "docs" / "analyses.md").read_text().split("## The robustness demo")[1])
    assert measured and all(low <= int(m) < high for m in measured), measured


def test_regimes_yaml_points_at_pages_that_exist():
    text = (ROOT / "mai_aug" / "configs" / "regimes.yaml").read_text()
    pages = re.findall(r"see (docs/[\w.-]+\.md)", text)
    assert pages and all((ROOT / page).is_file() for page in pages)
    assert "see README" not in text  # the mirror guard moved to docs/regimes.md


def test_readme_keeps_the_set_up_commands():
    text = (ROOT / "README.md").read_text()
    assert "make demo   #" in text and "make test   #" in text
