"""A study's results as one deterministic ``.tar.gz``, and its verification.

The same results give the same bytes: entries are sorted, and everything a tar or
gzip header would otherwise take from the machine or the moment (mtimes, owners,
permissions, the archive's own file name) is fixed. So two archives can be compared
by their SHA-256 alone, and an archive rebuilt later from the same results matches.

The first member, ``MANIFEST.sha256``, lists the SHA-256 of every other file in
``sha256sum`` format ("<hex>  <path>"), so an extracted archive can also be checked
with ``sha256sum -c MANIFEST.sha256`` and no Python at all.
"""

import fnmatch
import gzip
import hashlib
import io
import sys
import tarfile
import zlib
from pathlib import Path, PurePosixPath

from .. import atomic
from ..errors import LorasweepError

MANIFEST = "MANIFEST.sha256"
FIXED_MTIME = 0
FILE_MODE = 0o644
DIR_MODE = 0o755
GLOB_CHARS = frozenset("*?[")


def _is_glob(entry: str) -> bool:
    return bool(GLOB_CHARS & set(entry))


def _relative(entry: str) -> str:
    """An include/exclude entry as a clean relative path; one that leaves results_dir is a mistake."""
    path = PurePosixPath(entry)
    if path.is_absolute() or ".." in path.parts:
        raise LorasweepError(f"include/exclude entry {entry!r} must be a path inside the results folder")
    return str(path)


def _excluded(rel: str, exclude) -> bool:
    for pattern in exclude:
        if rel == pattern or rel.startswith(pattern.rstrip("/") + "/") or fnmatch.fnmatchcase(rel, pattern):
            return True
    return False


def _hidden(rel: str) -> bool:
    # dotfiles are bookkeeping, not results: Snakemake's .snakemake_timestamp in
    # directory outputs, and the .tmp files an interrupted atomic write leaves
    return any(part.startswith(".") for part in PurePosixPath(rel).parts)


def select_files(results_dir, include, exclude=()) -> list:
    """Sorted relative POSIX paths of the regular files that ``include`` names under
    ``results_dir`` (a folder means everything in it), less ``exclude`` and dotfiles.

    A literal path that does not exist is an error (a typo must not silently drop
    results); a glob that matches nothing is not, so optional outputs can be globs.
    """
    root = Path(results_dir)
    exclude = [_relative(e) for e in exclude]
    chosen = set()
    for entry in include:
        entry = _relative(entry)
        if _is_glob(entry):
            matches = list(root.glob(entry))
        else:
            if not (root / entry).exists():
                raise LorasweepError(f"{root / entry} does not exist (named in the archive's include list)")
            matches = [root / entry]
        for match in matches:
            candidates = match.rglob("*") if match.is_dir() else [match]
            for path in candidates:
                # only regular files: links and sockets (MPS pipes) have no content to archive
                if path.is_file() and not path.is_symlink():
                    chosen.add(path.relative_to(root).as_posix())
    files = sorted(rel for rel in chosen if not _hidden(rel) and not _excluded(rel, exclude))
    for rel in files:
        if "\n" in rel or "\\" in rel:
            raise LorasweepError(f"file name {rel!r} cannot be listed in a sha256sum manifest")
    return files


def manifest_text(digests: dict) -> str:
    return "".join(f"{digests[rel]}  {rel}\n" for rel in sorted(digests))


def _tarinfo(name: str, kind: bytes, size: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.mtime = FIXED_MTIME
    info.mode = DIR_MODE if kind == tarfile.DIRTYPE else FILE_MODE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _parent_dirs(files) -> list:
    dirs = set()
    for rel in files:
        dirs.update(str(parent) for parent in PurePosixPath(rel).parents if str(parent) != ".")
    return sorted(dirs)


def archive_bytes(contents: dict) -> bytes:
    """The .tar.gz of {relative path: bytes}: manifest first, then folders and files in path order."""
    digests = {rel: hashlib.sha256(data).hexdigest() for rel, data in contents.items()}
    manifest = manifest_text(digests).encode()
    entries = [(d, None) for d in _parent_dirs(contents)] + [(rel, contents[rel]) for rel in contents]
    buffer = io.BytesIO()
    # mtime=0 and filename="" keep the moment and the output's name out of the gzip header
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="", compresslevel=9) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo(MANIFEST, tarfile.REGTYPE, len(manifest)), io.BytesIO(manifest))
            for name, data in sorted(entries, key=lambda entry: entry[0]):
                if data is None:
                    tar.addfile(_tarinfo(name, tarfile.DIRTYPE))
                else:
                    tar.addfile(_tarinfo(name, tarfile.REGTYPE, len(data)), io.BytesIO(data))
    return buffer.getvalue()


def build_archive(results_dir, out_path, include, exclude=()) -> list:
    """Write the deterministic archive of the selected results atomically; returns the archived paths."""
    files = select_files(results_dir, include, exclude)
    if not files:
        raise LorasweepError(f"nothing to archive in {results_dir} (include: {', '.join(include)})")
    root = Path(results_dir)
    if MANIFEST in files:
        raise LorasweepError(f"{root / MANIFEST} would clash with the archive's own manifest")
    # each file is read once, so the manifest describes exactly the bytes archived
    contents = {rel: (root / rel).read_bytes() for rel in files}
    atomic.write_bytes(out_path, archive_bytes(contents))
    return files


def _parse_manifest(text: str):
    """({path: sha256}, problems) of a manifest's text."""
    digests, problems = {}, []
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest) or not rel:
            problems.append(f"{MANIFEST} line {number}: expected '<sha256>  <path>', got {line!r}")
        elif rel in digests:
            problems.append(f"{rel}: listed twice in {MANIFEST}")
        else:
            digests[rel] = digest
    return digests, problems


def check_archive(path):
    """(problems, number of files whose content matches the manifest) of one archive."""
    digests, manifest, problems, seen = {}, None, [], {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                seen[member.name] = seen.get(member.name, 0) + 1
                if member.isdir():
                    continue
                if not member.isfile():
                    problems.append(f"{member.name}: not a regular file (this archive format holds none)")
                    continue
                data = tar.extractfile(member).read()
                if member.name == MANIFEST:
                    manifest = data.decode("utf-8", errors="replace")
                else:
                    digests[member.name] = hashlib.sha256(data).hexdigest()
    except (OSError, EOFError, zlib.error, tarfile.TarError) as error:
        return [f"{path}: not a readable .tar.gz archive ({error})"], 0
    if manifest is None:
        return [f"{MANIFEST}: missing from the archive"], 0
    expected, manifest_problems = _parse_manifest(manifest)
    problems += manifest_problems
    problems += [f"{name}: appears {count} times in the archive" for name, count in seen.items() if count > 1]
    problems += [f"{rel}: listed in {MANIFEST}, missing from the archive" for rel in expected if rel not in digests]
    problems += [f"{rel}: in the archive, not listed in {MANIFEST}" for rel in digests if rel not in expected]
    differing = [rel for rel in digests if rel in expected and digests[rel] != expected[rel]]
    problems += [f"{rel}: content differs from its SHA-256 in {MANIFEST}" for rel in differing]
    verified = sum(1 for rel in digests if expected.get(rel) == digests[rel])
    return sorted(problems), verified


def verify_archive(path) -> list:
    """Every problem of the archive, one line each naming its file; empty when it is intact."""
    return check_archive(path)[0]


def main_archive(args) -> int:
    """``archive --results-dir D --out F --include P... [--exclude P...]``."""
    files = build_archive(args.results_dir, args.out, args.include, getattr(args, "exclude", None) or ())
    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    print(f"wrote {args.out}: {len(files)} files, sha256 {digest}", flush=True)
    return 0


def main_verify(args) -> int:
    """``verify ARCHIVE``: exit 0 when every file matches the manifest, else 1 naming each problem."""
    problems, verified = check_archive(args.archive)
    if problems:
        for problem in problems:
            print(problem, flush=True)
        print(f"FAILED: {len(problems)} problem(s) in {args.archive}", file=sys.stderr, flush=True)
        return 1
    print(f"OK: {verified} files verified", flush=True)
    return 0
