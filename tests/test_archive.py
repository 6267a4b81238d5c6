import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
from argparse import Namespace

import pytest

from lorasweep.study import archive
from lorasweep.errors import LorasweepError

INCLUDE = ["tables", "plots/*", "report*", "cells/*/*/steps/*.jsonl", "study/config.json", "logs"]


@pytest.fixture
def results(tmp_path):
    """A small results folder shaped like the pipeline's, with the bookkeeping it leaves."""
    root = tmp_path / "results"
    files = {
        "tables/lr_scaling.md": "| rank | bs |\n",
        "tables/lr_scaling.csv": "rank,bs\n4,8\n",
        "cells/lr_scaling/r4_bs8_lr1e-03_n2/steps/seed0.jsonl": '{"step": 1, "reward_mean": 0.5}\n',
        "cells/lr_scaling/r4_bs8_lr1e-03_n2/steps/seed1.jsonl": '{"step": 1, "reward_mean": 0.4}\n',
        "cells/lr_scaling/r4_bs8_lr1e-03_n2/steps/.snakemake_timestamp": "",
        "study/config.json": "{}\n",
        "logs/cells/launcher.log": "started\n",
        "logs/archive/archive.log": "being written while archiving\n",
        "logs/.launcher.log.abc.tmp": "an interrupted write\n",
        "unrelated.txt": "not included\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def build(results, out, exclude=("logs/archive",)):
    return archive.build_archive(results, out, INCLUDE, exclude)


def rebuild(src, dst, change=None, drop=None, add=None):
    """Copy an archive member by member, altering, dropping or adding one, keeping the old manifest."""
    with tarfile.open(src, "r:gz") as old, tarfile.open(dst, "w:gz") as new:
        for member in old:
            if member.name == drop:
                continue
            data = old.extractfile(member).read() if member.isfile() else None
            if member.name == change:
                data = data + b"tampered\n"
                member.size = len(data)
            new.addfile(member, io.BytesIO(data) if data is not None else None)
        if add:
            name, data = add
            info = tarfile.TarInfo(name)
            info.size = len(data)
            new.addfile(info, io.BytesIO(data))


def test_the_selection_is_sorted_skips_dotfiles_and_honours_exclude(results):
    files = archive.select_files(results, INCLUDE, ["logs/archive"])
    assert files == sorted(files)
    assert files == [
        "cells/lr_scaling/r4_bs8_lr1e-03_n2/steps/seed0.jsonl",
        "cells/lr_scaling/r4_bs8_lr1e-03_n2/steps/seed1.jsonl",
        "logs/cells/launcher.log",
        "study/config.json",
        "tables/lr_scaling.csv",
        "tables/lr_scaling.md",
    ]


def test_a_missing_literal_path_is_an_error_but_an_empty_glob_is_not(results):
    with pytest.raises(LorasweepError, match="study/provenance.json does not exist"):
        archive.select_files(results, ["study/provenance.json"])
    assert archive.select_files(results, ["plots/*"]) == []
    with pytest.raises(LorasweepError, match="inside the results folder"):
        archive.select_files(results, ["../outside"])


def test_the_same_results_give_identical_bytes_even_after_touching_them(results, tmp_path):
    first, second = tmp_path / "a.tar.gz", tmp_path / "elsewhere" / "b.tar.gz"
    build(results, first)
    for path in results.rglob("*"):
        os.utime(path, (1_900_000_000, 1_900_000_000))
        if path.is_file():
            path.chmod(0o600)
    build(results, second)
    assert first.read_bytes() == second.read_bytes()
    assert not list(first.parent.glob(".*.tmp"))  # atomic: no temp file left behind


def test_headers_carry_no_time_owner_or_name(results, tmp_path):
    out = tmp_path / "a.tar.gz"
    build(results, out)
    raw = out.read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip MTIME
    assert not raw[3] & 0x08  # gzip FNAME flag: no file name stored
    with tarfile.open(out, "r:gz") as tar:
        members = tar.getmembers()
    assert members[0].name == archive.MANIFEST
    names = [m.name for m in members[1:]]
    assert names == sorted(names)
    for m in members:
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)


def test_the_manifest_lists_every_other_file_in_sha256sum_format(results, tmp_path):
    out = tmp_path / "a.tar.gz"
    files = build(results, out)
    with tarfile.open(out, "r:gz") as tar:
        lines = tar.extractfile(archive.MANIFEST).read().decode().splitlines()
        contents = {m.name: tar.extractfile(m).read() for m in tar if m.isfile() and m.name != archive.MANIFEST}
    assert [line.split("  ", 1)[1] for line in lines] == files == sorted(contents)
    for line in lines:
        digest, rel = re.fullmatch(r"([0-9a-f]{64})  (\S+)", line).groups()
        assert digest == hashlib.sha256(contents[rel]).hexdigest()
    if shutil.which("sha256sum"):  # an extracted archive checks without Python
        with tarfile.open(out, "r:gz") as tar:
            tar.extractall(tmp_path / "x", filter="data")
        check = subprocess.run(["sha256sum", "--quiet", "-c", archive.MANIFEST], cwd=tmp_path / "x")
        assert check.returncode == 0


def test_a_good_archive_verifies(results, tmp_path, capsys):
    out = tmp_path / "a.tar.gz"
    files = build(results, out)
    assert archive.verify_archive(out) == []
    assert archive.main_verify(Namespace(archive=str(out))) == 0
    assert capsys.readouterr().out.strip() == f"OK: {len(files)} files verified"


def test_a_tampered_archive_names_exactly_the_altered_file(results, tmp_path, capsys):
    good, bad = tmp_path / "a.tar.gz", tmp_path / "bad.tar.gz"
    build(results, good)
    rebuild(good, bad, change="tables/lr_scaling.csv")
    problems = archive.verify_archive(bad)
    assert len(problems) == 1 and problems[0].startswith("tables/lr_scaling.csv: content differs")
    assert archive.main_verify(Namespace(archive=str(bad))) == 1
    assert capsys.readouterr().out.splitlines() == problems


def test_a_missing_member_is_named(results, tmp_path):
    good, bad = tmp_path / "a.tar.gz", tmp_path / "bad.tar.gz"
    build(results, good)
    rebuild(good, bad, drop="study/config.json")
    assert archive.verify_archive(bad) == [f"study/config.json: listed in {archive.MANIFEST}, missing from the archive"]


def test_a_member_the_manifest_does_not_list_is_named(results, tmp_path):
    good, bad = tmp_path / "a.tar.gz", tmp_path / "bad.tar.gz"
    build(results, good)
    rebuild(good, bad, add=("tables/extra.md", b"smuggled\n"))
    assert archive.verify_archive(bad) == [f"tables/extra.md: in the archive, not listed in {archive.MANIFEST}"]


def test_an_unreadable_file_is_one_problem_not_a_crash(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not an archive")
    problems = archive.verify_archive(junk)
    assert len(problems) == 1 and "not a readable .tar.gz archive" in problems[0]
