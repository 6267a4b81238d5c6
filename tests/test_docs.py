"""Code comments cite the design document that is in the repository, by sections it has."""

import re
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
