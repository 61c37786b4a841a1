"""The docs promise what CI runs, and their links lead somewhere."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci[[i for i, line in enumerate(ci) if "verbatim" in line][0] + 1].strip()
    assert command.startswith("python3 -m venv .venv") and "pytest" in command
    assert f"    {command}\n" in (ROOT / "README.md").read_text()


def test_relative_links_in_the_docs_exist():
    broken = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
