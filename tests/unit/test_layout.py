"""The source layout keeps its include rules (docs/design.md, "Data flow" and "Source layout"):

- every project header is included by its path from the repository root, or by its bare name from
  its own folder; never through `../`;
- folders depend one way: each may include only the folders listed for it below, so a low folder
  (base/, formats/) never reaches up into the merge core, and the FUSE-free core never includes fs/
  or FUSE headers.

A new dependency between folders is a decision: make it here and in docs/design.md together."""
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
INCLUDE = re.compile(r'^\s*#\s*include\s+([<"])([^">]+)[">]', re.M)

# folder -> the other folders of ours it may include
ALLOWED = {
    "base": set(),
    "formats": {"base"},
    "config": {"base", "formats"},
    "cache": {"base"},
    "merge/plan": {"base", "formats", "config"},
    "merge/engine": {"base", "formats", "config", "merge/plan", "merge/gguf", "cache"},
    "merge/methods": {"base", "formats", "config", "merge/plan", "merge/engine", "cache"},
    "merge/moe": {"base", "formats", "merge/plan"},
    "merge/gguf": {"base", "formats", "config", "merge/plan"},
    "fs": {"base", "merge/engine"},  # the adapter sees only the virtual files
}
CORE = ["base", "formats", "config", "cache", "merge/plan", "merge/engine", "merge/methods", "merge/moe", "merge/gguf"]


def sources():
    out = subprocess.run(["git", "ls-files", "*.c", "*.h"], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.split()
    return [REPO / p for p in out if (REPO / p).exists()]


def folder_of(rel):
    parts = pathlib.PurePosixPath(rel).parts[:-1]
    for n in (2, 1):
        key = "/".join(parts[:n])
        if key in ALLOWED:
            return key
    return None


def includes(path):
    return INCLUDE.findall(path.read_text(encoding="utf-8", errors="replace"))


def test_no_upward_includes():
    bad = [f"{p.relative_to(REPO)}: {name}" for p in sources() for kind, name in includes(p)
           if kind == '"' and name.startswith("../")]
    assert not bad, "include project headers by their path from the repository root:\n" + "\n".join(bad)


def test_project_includes_resolve_from_the_root_or_the_own_folder():
    bad = []
    for p in sources():
        for kind, name in includes(p):
            if kind == '"' and not ((REPO / name).exists() or (p.parent / name).exists()):
                bad.append(f"{p.relative_to(REPO)}: {name}")
    assert not bad, "\n".join(bad)


def edges():
    """(from folder, to folder, file, header) for every include of one folder of ours by another."""
    for p in sources():
        rel = p.relative_to(REPO).as_posix()
        src = folder_of(rel)
        if src is None:
            continue
        for kind, name in includes(p):
            if kind != '"' or "/" not in name:
                continue
            dst = folder_of(name)
            if dst is not None and dst != src:
                yield src, dst, rel, name


def test_folders_depend_one_way():
    bad = [f"{rel} ({src}/) includes {name} ({dst}/)" for src, dst, rel, name in edges() if dst not in ALLOWED[src]]
    assert not bad, "\n".join(bad)


def test_the_rules_see_the_real_graph():
    """The edge finder is not blind: the dependencies the design relies on are found."""
    found = {(s, d) for s, d, _, _ in edges()}
    assert {("config", "formats"), ("merge/plan", "config"), ("merge/engine", "cache"), ("merge/methods", "merge/engine"),
            ("fs", "merge/engine"), ("merge/moe", "merge/plan")} <= found, found


@pytest.mark.parametrize("folder", CORE)
def test_core_has_no_fuse(folder):
    bad = [f"{p.relative_to(REPO)}: {name}" for p in sources() if folder_of(p.relative_to(REPO).as_posix()) == folder
           for kind, name in includes(p) if "fuse" in name.lower() or name.startswith("fs/")]
    assert not bad, "the core is tested without /dev/fuse; FUSE belongs in fs/:\n" + "\n".join(bad)
