"""The documentation stays true to the code: the generated CLI reference matches the parsers, every relative
link in README.md and docs/*.md reaches a file (and a heading, by GitHub's anchor rules), and the pointers
into docs/ that docstrings, configs and unit files carry name pages and headings that exist."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def _generator():
    spec = importlib.util.spec_from_file_location("generate_cli_reference", DOCS / "generate_cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_generated_from_the_parsers():
    expected = _generator().generate()
    assert (DOCS / "cli.md").read_text(encoding="utf-8") == expected, (
        "docs/cli.md is out of date: run .venv/bin/python docs/generate_cli_reference.py")


def test_the_help_of_every_entry_point_is_built_without_torch():
    """inspectd, inspectd-export and inspectd-train print their help (and read their configs) without loading
    torch or transformers: seconds saved at every call, and the settings are read where no GPU stack is."""
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('g', {str(DOCS / 'generate_cli_reference.py')!r})\n"
            "g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)\n"
            "assert g.inspectd_sections() and g.export_sections() and g.train_sections()\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# --- links and anchors -------------------------------------------------------------------------------------

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def github_slug(heading: str) -> str:
    """GitHub's heading anchor: the rendered text, lower-cased, punctuation dropped, spaces -> hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # \w is Unicode letters, digits and the underscore, as on GitHub
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = github_slug(match.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")  # repeated headings: -1, -2, ...
    return found


def headings(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {" ".join(m.group(2).replace("`", "").split()) for m in HEADING.finditer(text)}


def links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return [m.group(1) for m in LINK.finditer(text)]


def test_github_slugs():
    assert github_slug("Training (CGRO)") == "training-cgro"
    assert github_slug("The console's unit") == "the-consoles-unit"
    assert github_slug("From a downloaded Qwen2.5-VL-7B-Instruct to a running service") == (
        "from-a-downloaded-qwen25-vl-7b-instruct-to-a-running-service")
    assert github_slug("What `make` installs") == "what-make-installs"
    assert github_slug("inspectd-export seal") == "inspectd-export-seal"


def test_the_pages_are_there():
    assert len(PAGES) > 10 and (DOCS / "cli.md").exists()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_heading(page):
    broken = []
    for target in links(page):
        if SCHEME.match(target) or target.startswith("/"):
            continue  # http(s), mailto, absolute: not the repository's
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target}: no heading with anchor #{anchor} in {file.name}")
    assert not broken, f"{page.name}:\n" + "\n".join(broken)


POINTER = re.compile(r"docs/([\w.-]+\.md)(?:#([\w-]+))?(?:,\s*\"([^\"]+)\")?")


def _pointer_files():
    for folder, pattern in (("inspectd", "**/*.py"), ("config", "*.yaml"), ("systemd", "*.service"),
                            ("tests", "*.py"), ("benchmarks", "*.py"), ("models/recipes", "*.yaml")):
        yield from (p for p in (REPO / folder).glob(pattern) if p.name != Path(__file__).name)
    yield REPO / "Makefile"


def test_pointers_into_docs_name_existing_pages_and_headings():
    """A docstring's `docs/training.md, "Training (CGRO)"` must keep pointing at a page and heading."""
    broken = []
    for source in _pointer_files():
        text = source.read_text(encoding="utf-8", errors="replace")
        for match in POINTER.finditer(text):
            page, anchor, heading = match.groups()
            where = f"{source.relative_to(REPO)}: {match.group(0)!r}"
            if not (DOCS / page).exists():
                broken.append(f"{where}: no docs/{page}")
                continue
            if anchor and anchor not in anchors(DOCS / page):
                broken.append(f"{where}: no #{anchor}")
            if heading:
                wanted = " ".join(heading.replace("#", "").split())
                if wanted not in headings(DOCS / page):
                    broken.append(f"{where}: no heading {wanted!r}")
    assert not broken, "\n".join(broken)
