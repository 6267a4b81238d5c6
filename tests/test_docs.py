"""Code comments cite the design document that is in the repository, by sections it has."""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ["Snakefile", "config.yaml", "lorasweep", "rules", "scripts", "tests", "schemas", "profiles"]
CITATION = re.compile(r"docs/design\.md §(\d+)")


def source_files():
    for name in SOURCES:
        path = ROOT / name
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" not in file.parts and file.suffix not in {".pyc", ".pt", ".safetensors"}:
                yield file


def design_sections():
    text = (ROOT / "docs" / "design.md").read_text()
    return {int(n) for n in re.findall(r"^## (\d+)\. ", text, flags=re.MULTILINE)}


def test_the_design_document_has_numbered_sections():
    assert design_sections() == set(range(1, 8))


def test_every_citation_names_an_existing_section_and_none_cites_an_outside_document():
    sections = design_sections()
    cited, outside = [], []
    for file in source_files():
        text = file.read_text(errors="replace")
        if file != Path(__file__).resolve() and "DESIGN" in text:
            outside.append(str(file.relative_to(ROOT)))
        cited += [(str(file.relative_to(ROOT)), int(n)) for n in CITATION.findall(text)]
    assert not outside, f"files citing a design document outside the repository: {outside}"
    assert cited, "no code comment cites docs/design.md"
    missing = [(file, n) for file, n in cited if n not in sections]
    assert not missing, f"citations of sections docs/design.md does not have: {missing}"


# ---- the README and the docs: links that resolve, commands that exist ----

DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
NUMBERS_CITATION = re.compile(r"docs/numbers\.md, definition (\d+)")


def markdown_files():
    return [ROOT / "README.md", *DOCS]


def test_the_readme_is_a_short_guide():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines"
    # the two commands come first, before any detail
    text = "\n".join(lines)
    assert text.index("make run") < text.index("## What you get") and "make test" in text.split("## What you get")[0]


def test_every_relative_link_in_the_readme_and_the_docs_resolves():
    broken = []
    for file in markdown_files():
        for target in LINK.findall(file.read_text()):
            if re.match(r"[a-z]+://", target) or target.startswith("#"):
                continue
            path = (file.parent / target.split("#")[0]).resolve()
            if not path.exists():
                broken.append(f"{file.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_the_readme_links_every_doc():
    readme = (ROOT / "README.md").read_text()
    assert {f"docs/{d.name}" for d in DOCS} <= set(LINK.findall(readme))


def readme_commands() -> list:
    """Shell lines of the README's code blocks and inline `...` spans that start with a command."""
    text = (ROOT / "README.md").read_text()
    lines = [line.strip() for block in re.findall(r"```(?:bash)?\n(.*?)```", text, flags=re.S)
             for line in block.splitlines()]
    lines += re.findall(r"`((?:make|python|\.venv/bin/|bash) [^`]+)`", text)
    lines = [line.split(" #")[0].strip() for line in lines]  # a command's trailing comment is not part of it
    return [line for line in lines if line and not line.startswith(("#", "-"))]


def make_targets() -> set:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def lorasweep_subcommands() -> set:
    return set(re.findall(r'add_parser\("([a-z-]+)"', (ROOT / "lorasweep" / "__main__.py").read_text()))


def test_each_command_in_the_readme_exists():
    commands = readme_commands()
    assert any(c.startswith("make run") for c in commands) and any(c.startswith("make test") for c in commands)
    targets, subcommands, missing = make_targets(), lorasweep_subcommands(), []
    for command in commands:
        words = command.split()
        if words[0] == "make":
            missing += [f"make {w}" for w in words[1:] if "=" not in w and w not in targets]
        inputs = re.sub(r"--out \S+", "", command)  # what a command writes need not exist yet
        for path in re.findall(r"((?:scripts|tests|profiles|docs|examples)/[\w./-]+)", inputs):
            if not (ROOT / path).exists():
                missing.append(path)
        if "-m lorasweep" in command:
            sub = command.split("-m lorasweep", 1)[1].split()[0]
            if sub not in subcommands:
                missing.append(f"python -m lorasweep {sub}")
    assert not missing, missing


def test_the_command_check_sees_a_missing_target_and_script(monkeypatch, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("```bash\nmake run\nmake test\nmake deploy\n.venv/bin/python scripts/nowhere.py\n```\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "Makefile").write_text("run:\n\ttrue\ntest:\n\ttrue\n")
    (tmp_path / "lorasweep").mkdir()
    (tmp_path / "lorasweep" / "__main__.py").write_text("")
    try:
        test_each_command_in_the_readme_exists()
    except AssertionError as error:
        assert "make deploy" in str(error) and "scripts/nowhere.py" in str(error)
    else:
        raise AssertionError("a README naming a missing make target and script passed the check")


def test_definitions_cited_in_the_code_exist():
    text = (ROOT / "docs" / "numbers.md").read_text()
    definitions = {int(n) for n in re.findall(r"^(\d+)\. \*\*", text.split("## Inference")[0], flags=re.M)}
    cited = [(str(f.relative_to(ROOT)), int(n)) for f in source_files() for n in NUMBERS_CITATION.findall(
        f.read_text(errors="replace"))]
    assert cited and all(n in definitions for _, n in cited), (sorted(definitions), cited)


def test_docs_cited_in_the_code_exist():
    missing = sorted({(str(f.relative_to(ROOT)), name) for f in source_files()
                      for name in re.findall(r"docs/([a-z_]+\.md)", f.read_text(errors="replace"))
                      if not (ROOT / "docs" / name).exists()})
    assert not missing, missing
