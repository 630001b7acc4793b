"""The documentation stays true to the code: the generated CLI reference matches the parsers, the key tables
of docs/configuration.md match the settings models (and every setting has a description), every relative
link in README.md and docs/*.md reaches a file (and a heading, by GitHub's anchor rules), and the pointers
into docs/ that docstrings, configs and unit files carry name pages and headings that exist."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import types
import typing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = [REPO / "README.md", *sorted(DOCS.glob("*.md"))]


def _generator(name: str = "generate_cli_reference"):
    spec = importlib.util.spec_from_file_location(name, DOCS / f"{name}.py")
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


# --- the configuration reference ---------------------------------------------------------------------------


def test_the_configuration_reference_is_generated_from_the_settings():
    expected = _generator("generate_config_reference").generate()
    assert (DOCS / "configuration.md").read_text(encoding="utf-8") == expected, (
        "the key tables of docs/configuration.md are out of date (a setting was added, changed or described "
        "anew): run .venv/bin/python docs/generate_config_reference.py")


def _unwrapped(annotation):
    """(type, metadata) of ``Annotated[type, ...]``; the alternatives of a union; the item of a list."""
    metadata = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *more = typing.get_args(annotation)
        metadata += more
    return annotation, metadata


def _setting_keys(model, prefix=""):
    """(key as the reference spells it, field) for every key a config file can hold under ``model``: walked
    here, apart from the generator, through sections, optional sections, lists of sections, dicts of sections
    and unions discriminated by a field (the alert channels: ``alerts.channels[type=webhook].url``)."""
    from pydantic import BaseModel

    from inspectd.config import RealOverrides

    def is_model(t):
        return isinstance(t, type) and issubclass(t, BaseModel)

    for name, info in model.model_fields.items():
        if info.exclude:  # Settings.source: set by the loader, not a key of the file
            continue
        key = prefix + name
        annotation, _ = _unwrapped(info.annotation)
        if annotation is RealOverrides:  # one row, real.*; the parameters have a table of their own
            yield f"{key}.*", info
            continue
        yield key, info
        members = [m for m in typing.get_args(annotation) if m is not type(None)] \
            if typing.get_origin(annotation) in (typing.Union, types.UnionType) else [annotation]
        for member in members:
            origin = typing.get_origin(member)
            if is_model(member):
                yield from _setting_keys(member, f"{key}.")
            elif origin in (tuple, list, set, frozenset):
                item, metadata = _unwrapped(typing.get_args(member)[0])
                discriminator = next((m.discriminator for m in metadata if getattr(m, "discriminator", None)), None)
                if discriminator:
                    for kind in typing.get_args(item):
                        kind = _unwrapped(kind)[0]
                        label = typing.get_args(kind.model_fields[discriminator].annotation)[0]
                        kind_key = f"{key}[{discriminator}={label}]"
                        for sub, sub_info in _setting_keys(kind, f"{kind_key}."):
                            yield (kind_key if sub == f"{kind_key}.{discriminator}" else sub), sub_info
                elif is_model(item):
                    yield from _setting_keys(item, f"{key}[].")
            elif origin is dict and is_model(_unwrapped(typing.get_args(member)[1])[0]):
                yield from _setting_keys(_unwrapped(typing.get_args(member)[1])[0], f"{key}.<name>.")


def _all_settings():
    from inspectd.config import Settings
    from inspectd.real.params import RealParams

    return list(_setting_keys(Settings)) + [(f"real:{k}", info) for k, info in _setting_keys(RealParams)]


def test_every_setting_has_a_description():
    """The reference's meaning column is the fields' descriptions: a key added without one is caught here."""
    keys = _all_settings()
    assert len(keys) > 100  # the walk reached the sections, the lists and the channels
    missing = [key for key, info in keys if not (info.description or "").strip()]
    assert not missing, ("settings without a description (Field(description=...) in inspectd/config.py or "
                         f"inspectd/real/params.py): {missing}")


def _reference_keys(block: str) -> list[str]:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    start = page.index(f"<!-- generated by docs/generate_config_reference.py ({block})")
    table = page[start:page.index("<!-- end generated -->", start)]
    return re.findall(r"^\| `([^`]+)` \|", table, re.M)


def test_the_configuration_reference_has_a_row_for_every_key():
    """Walked apart from the generator: a kind of field it does not know (and leaves out) fails here."""
    keys = [key for key, _ in _all_settings()]
    assert sorted(_reference_keys("settings")) == sorted(k for k in keys if not k.startswith("real:"))
    assert sorted(_reference_keys("real")) == sorted(k[len("real:"):] for k in keys if k.startswith("real:"))
    for key in ("model.promotion.margin", "model.challenger.mode", "alerts.channels[type=webhook].url",
                "alerts.channels[type=mqtt].topic", "watch.folders[].camera", "real.*"):
        assert key in keys


def test_the_configuration_reference_is_generated_without_torch():
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('g', {str(DOCS / 'generate_config_reference.py')!r})\n"
            "g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)\n"
            "assert g.generate()\n"
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
