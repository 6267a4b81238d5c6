#!/usr/bin/env python3
"""`snakemake --lint`, failing only on lints the project has not accepted (docs/design.md §6).

Accepted, on purpose: rules use the variables PY (the interpreter running Snakemake)
and CHECKOUT (the folder whose commit the provenance records) directly, since as
params they would rerun every job whenever the venv or the checkout moves; and rules
carry no conda environment, since every rule runs that same interpreter.

Usage: python scripts/check_lint.py [WORKFLOW_FOLDER]   (default: the current folder)
"""

import re
import subprocess
import sys

ACCEPTED = [
    re.compile(r"Specify a conda environment or container for each rule\."),
    re.compile(r"Shell command directly uses variable (PY|CHECKOUT) from outside of the rule"),
]
LINT = re.compile(r"^\s+\* (.+?):?$")


def unaccepted(text: str) -> list:
    """(rule header, lint title) of every lint that is not accepted."""
    found, rule = [], None
    for line in text.splitlines():
        if line.startswith("Lints for "):
            rule = line.rstrip(":")
        match = LINT.match(line)
        if match and not any(pattern.search(match.group(1)) for pattern in ACCEPTED):
            found.append((rule, match.group(1)))
    return found


def main(folder: str = ".") -> int:
    done = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=folder, capture_output=True, text=True)
    text = done.stdout + done.stderr
    if "Lints for " not in text and done.returncode != 0:
        print(text, file=sys.stderr)
        print("check_lint: snakemake --lint failed before linting", file=sys.stderr)
        return 2
    found = unaccepted(text)
    for rule, title in found:
        print(f"{rule}: {title}")
    print(f"check_lint: {len(found)} lint(s) beyond the accepted ones", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
