"""The documentation keeps up with the program:

- every command, subcommand and option that `mergemount --help` and `mergemount <command> --help` show
  is in the man page (docs/mergemount.1), and the man page renders without warnings;
- no file of the repository points into the developers' shared notes (which users do not have);
- every relative link of README.md and docs/*.md leads to a file of the repository (and to a heading
  that exists, when it names one);
- `meson install` installs the command and the man page, and mm-mkmodel only with -Dinstall_mkmodel=true.

Environment: MERGEMOUNT_BIN (the binary whose help is read), else MM_BUILD_DIR/tools/mergemount, else
build/tools/mergemount of the repository.
"""

import os
import re
import shutil
import subprocess

import pytest

import mmtest

REPO = mmtest.REPO
MAN_PAGE = os.path.join(REPO, "docs", "mergemount.1")
# Written in two pieces so that this file does not contain what it looks for.
SHARED_NOTES = "../" + "shared"


def mergemount_bin():
    if os.environ.get("MERGEMOUNT_BIN"):
        return os.environ["MERGEMOUNT_BIN"]
    if os.environ.get("MM_BUILD_DIR"):
        return os.path.join(os.environ["MM_BUILD_DIR"], "tools", "mergemount")
    return mmtest.MERGEMOUNT


def help_text(*args):
    exe = mergemount_bin()
    if not os.access(exe, os.X_OK):
        pytest.fail(f"{exe} not found (build with `meson setup build && ninja -C build`, or set MERGEMOUNT_BIN)",
                    pytrace=False)
    r = subprocess.run([exe, *args, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"`mergemount {' '.join(args)} --help` exited {r.returncode}:\n{r.stderr}"
    return r.stdout


# ---- what the help shows --------------------------------------------------------------------------------

LONG_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*[a-z0-9]")
SHORT_OPTION = re.compile(r"(?<![\w-])-[a-zA-Z](?![\w-])")


def options_in(text):
    return set(LONG_OPTION.findall(text)) | set(SHORT_OPTION.findall(text))


def commands_in(main_help):
    """{command: [subcommands]} from the "commands:" list of the main help, where a line is
    "  NAME ARGS  description" and ARGS of the form a|b|c lists subcommands."""
    found, inside = {}, False
    for line in main_help.splitlines():
        if line.strip() == "commands:":
            inside = True
            continue
        if inside and not line.strip():
            break
        if inside:
            words = line.split()
            subs = words[1].split("|") if len(words) > 1 and re.fullmatch(r"[a-z]+(\|[a-z]+)+", words[1]) else []
            found[words[0]] = subs
    return found


def program_surface():
    """(commands as "cmd" or "cmd sub", options) over the main help and every command's help."""
    main = help_text()
    cmds = commands_in(main)
    names, options = [], options_in(main)
    for cmd, subs in cmds.items():
        names.append(cmd)
        options |= options_in(help_text(cmd))
        for sub in subs:
            names.append(f"{cmd} {sub}")
            options |= options_in(help_text(cmd, sub))
    return names, options


# ---- what the man page says -----------------------------------------------------------------------------

def man_plain(source):
    """The man page source with the escapes that can sit inside a word removed: \\- is a hyphen, font
    changes (\\fB, \\fI, \\fP, \\f(XX, \\f[X]) and \\& vanish."""
    text = source.replace("\\-", "-").replace("\\(hy", "-")
    text = re.sub(r"\\f(\(..|\[[^\]]*\]|.)", "", text)
    return text.replace("\\&", "").replace("\\e", "\\")


def missing_from_man(names, options, man):
    missing = [f"command `mergemount {n}`" for n in names
               if not re.search(r"mergemount\s+" + r"\s+".join(map(re.escape, n.split())) + r"(?![\w-])", man)]
    missing += [f"option {o}" for o in sorted(options)
                if not re.search(r"(?<![\w-])" + re.escape(o) + r"(?![\w-])", man)]
    return missing


def read_man():
    with open(MAN_PAGE, encoding="utf-8") as f:
        return man_plain(f.read())


def test_help_lists_what_the_man_page_must_cover():
    """The extraction itself works: otherwise the next test would pass on nothing."""
    names, options = program_surface()
    assert {"mount", "build", "plan", "stats", "cache", "cache stats", "cache clear", "cache prune"} <= set(names)
    assert {"--foreground", "-f", "-o", "--jobs", "-j", "--json", "--cache-dir", "--no-cache", "--help", "-h",
            "--version"} <= options


def test_man_page_covers_every_command_and_option():
    names, options = program_surface()
    missing = missing_from_man(names, options, read_man())
    assert not missing, "docs/mergemount.1 does not mention: " + ", ".join(missing)


def test_every_option_a_help_shows_is_taken():
    """A command's --help offers only options the command accepts: each long option it lists, given to
    that command (with a dummy value where the help names one), is never "unrecognized" (the options'
    values and the missing arguments may still be refused; that is another message)."""
    main = help_text()
    for cmd, subs in commands_in(main).items():
        text = help_text(cmd)
        for opt in sorted(o for o in options_in(text) if o.startswith("--") and o != "--help"):
            takes_value = re.search(re.escape(opt) + r"[ =]([A-Z][A-Z-]*)\b", text)
            argv = [mergemount_bin(), cmd, *(subs[:1]), opt] + (["1"] if takes_value else [])
            r = subprocess.run(argv, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
            assert "unrecognized option" not in r.stderr and "unknown option" not in r.stderr, \
                f"`mergemount {cmd} --help` lists {opt}, which it refuses: {r.stderr}"


def test_missing_option_is_reported():
    """The check fails when the man page lacks an option or a command."""
    names, options = program_surface()
    with open(MAN_PAGE, encoding="utf-8") as f:
        source = f.read()
    without = man_plain(source.replace("\\-\\-no\\-cache", "").replace("no_cache", ""))
    assert "option --no-cache" in missing_from_man(names, options, without)
    without = man_plain(source.replace("mergemount cache prune", "mergemount cache"))
    assert "command `mergemount cache prune`" in missing_from_man(names, options, without)
    assert "option --bogus-option" in missing_from_man(names, options | {"--bogus-option"}, read_man())


def test_man_page_renders_without_warnings():
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff is not installed (apt-get install groff-base)")
    r = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-z", MAN_PAGE], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


# ---- the repository's files and links -------------------------------------------------------------------

def repo_files():
    """Tracked files plus new ones that are not ignored, relative to the repository; None without git."""
    git = shutil.which("git")
    if git is None:
        return None
    r = subprocess.run([git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                       capture_output=True, timeout=60)
    if r.returncode != 0:
        return None
    return {p for p in r.stdout.decode("utf-8", "surrogateescape").split("\0") if p}


def test_no_file_points_into_the_shared_notes():
    files = repo_files()
    if files is None:
        pytest.skip("not a git checkout (or git is missing): cannot list the repository's files")
    offending = []
    for rel in sorted(files):
        path = os.path.join(REPO, rel)
        if not os.path.isfile(path) or os.path.islink(path):
            continue
        with open(path, "rb") as f:
            if SHARED_NOTES.encode() in f.read():
                offending.append(rel)
    assert not offending, f"these files mention {SHARED_NOTES}, which users do not have: {offending}"


def strip_fences(markdown):
    """Markdown without fenced code blocks (a `# comment` in a shell example is no heading)."""
    return re.sub(r"^(```|~~~).*?^\1", "", markdown, flags=re.MULTILINE | re.DOTALL)


def strip_code(markdown):
    """Markdown without fenced code blocks and code spans (their brackets are not links)."""
    return re.sub(r"`[^`\n]*`", "", strip_fences(markdown))


def link_targets(markdown):
    text = strip_code(markdown)
    inline = re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    reference = re.findall(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", text, flags=re.MULTILINE)
    return inline + reference


def heading_anchors(markdown):
    """GitHub's anchors of the headings of a Markdown file."""
    anchors, seen = set(), {}
    for line in strip_fences(markdown).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def markdown_pages():
    pages = [os.path.join(REPO, "README.md")]
    docs = os.path.join(REPO, "docs")
    pages += sorted(os.path.join(docs, n) for n in os.listdir(docs) if n.endswith(".md"))
    return pages


def test_markdown_links_lead_to_files_of_the_repository():
    files = repo_files()
    broken = []
    for page in markdown_pages():
        with open(page, encoding="utf-8") as f:
            text = f.read()
        rel_page = os.path.relpath(page, REPO)
        for target in link_targets(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, flags=re.IGNORECASE):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            rel = os.path.relpath(dest, REPO)
            inside = not rel.startswith("..") and not os.path.isabs(rel)
            known = os.path.exists(dest) and (files is None or rel == "." or rel in files
                                              or any(f.startswith(rel + "/") for f in files))
            if not (inside and known):
                broken.append(f"{rel_page}: {target} (no such file in the repository)")
                continue
            if anchor and dest.endswith(".md"):
                with open(dest, encoding="utf-8") as f:
                    if anchor not in heading_anchors(f.read()):
                        broken.append(f"{rel_page}: {target} (no heading with anchor #{anchor})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_link_check_reports_a_missing_file():
    assert link_targets("see [x](docs/nothing.md#a) and `[y](z)` and [w](https://example.org)") == \
        ["docs/nothing.md#a", "https://example.org"]
    anchors = heading_anchors("## Mounting with mount(8) and /etc/fstab\n### D22. Client state in `.cache/`\n"
                              "## Notes\n## Notes\n```sh\n# not a heading\n```\n")
    assert anchors == {"mounting-with-mount8-and-etcfstab", "d22-client-state-in-cache", "notes", "notes-1"}


# ---- meson install --------------------------------------------------------------------------------------

def installed(destdir):
    out = set()
    for root, _dirs, names in os.walk(destdir):
        for n in names:
            out.add(os.path.relpath(os.path.join(root, n), destdir))
    return out


@pytest.mark.timeout(900)
def test_meson_install(tmp_path):
    meson = shutil.which("meson")
    if meson is None:
        pytest.skip("meson is not installed: cannot check `meson install`")

    def run(*args):
        r = subprocess.run([meson, *args], cwd=tmp_path, capture_output=True, text=True, timeout=850)
        assert r.returncode == 0, f"meson {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}"

    build = str(tmp_path / "build")
    # A fresh build folder of the source tree: the caller's build folder keeps its own settings.
    run("setup", build, REPO, "--prefix", "/usr/local", "--buildtype", "plain")
    run("install", "-C", build, "--destdir", str(tmp_path / "dest"), "--quiet")
    files = installed(tmp_path / "dest")
    assert "usr/local/bin/mergemount" in files, sorted(files)
    assert os.access(tmp_path / "dest/usr/local/bin/mergemount", os.X_OK)
    assert "usr/local/share/man/man1/mergemount.1" in files, sorted(files)
    with open(tmp_path / "dest/usr/local/share/man/man1/mergemount.1", encoding="utf-8") as a, \
            open(MAN_PAGE, encoding="utf-8") as b:
        assert a.read() == b.read()
    binaries = {f for f in files if f.startswith("usr/local/bin/")}
    assert binaries == {"usr/local/bin/mergemount"}, f"installed programs: {sorted(binaries)}"

    run("configure", build, "-Dinstall_mkmodel=true")
    run("install", "-C", build, "--destdir", str(tmp_path / "dest2"), "--quiet")
    binaries = {f for f in installed(tmp_path / "dest2") if f.startswith("usr/local/bin/")}
    assert binaries == {"usr/local/bin/mergemount", "usr/local/bin/mm-mkmodel"}, \
        f"installed programs: {sorted(binaries)}"
