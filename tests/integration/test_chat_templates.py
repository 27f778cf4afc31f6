"""Our built-in chat templates (merge/plan/chat.c, printed by the test-only program chat_dump) render
what mergekit's built-in templates of the same names render, under transformers' rules
(tokenizer_eval.render): checked against tokenizer_eval.render_builtin on SAMPLE_CONVERSATIONS, with
and without the generation prompt, for several bos/eos tokens; mistral refuses (raise_exception) the
same conversations.

When mergekit's sources are at hand (MM_MERGEKIT_SRC: a checkout, or a bare mirror read with git show;
default /work/.mirror/arcee-ai+mergekit/repo), mergekit's own files must render exactly as ours do;
skipped, saying so, otherwise. Needs jinja2."""

import os
import subprocess

import pytest

import mmtest  # noqa: F401  (puts tests/reference on sys.path)
import tokenizer_eval as te

jinja2 = pytest.importorskip("jinja2", reason="jinja2 is not installed")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MM_BUILD_DIR", os.path.join(REPO, "build"))
CHAT_DUMP = os.path.join(BUILD, "tests", "chat_dump")
MERGEKIT = os.environ.get("MM_MERGEKIT_SRC", "/work/.mirror/arcee-ai+mergekit/repo")

TOKENS = [("<s>", "</s>"), ("", ""), ("<|begin_of_text|>", "<|end_of_text|>"), ("[BOS]", "[EOS]")]

# More conversations for the comparison with mergekit's files: a system message last or in the middle,
# empty contents, one message of each role alone, whitespace-only contents, non-ASCII text.
EXTRA_CONVERSATIONS = [
    [{"role": "system", "content": "only"}],
    [{"role": "user", "content": "q"}, {"role": "system", "content": " late "}],
    [{"role": "user", "content": ""}, {"role": "assistant", "content": ""}],
    [{"role": "user_context", "content": "ctx"}, {"role": "user", "content": "q"}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "q"}, {"role": "assistant", "content": " \n"}],
    [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}],
    [{"role": "user", "content": "\u00a0grüße 日本\u3000"}, {"role": "assistant", "content": "\t😀\n"}],
    [{"role": "tool", "content": "out"}],
]


def ours(name):
    assert os.access(CHAT_DUMP, os.X_OK), f"{CHAT_DUMP} not built (run: ninja -C {BUILD})"
    r = subprocess.run([CHAT_DUMP, name], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout.decode("utf-8")


def outcome(text, conv, agp, bos, eos):
    """The rendering, or ("refused", message) where the template raises."""
    try:
        return te.render(text, conv, agp, bos, eos)
    except jinja2.TemplateError as e:
        return ("refused", str(e))


def test_chat_dump_unknown_name():
    for args in (["ChatML"], [], ["chatml", "x"]):
        r = subprocess.run([CHAT_DUMP, *args], capture_output=True, timeout=30)
        assert r.returncode == 1 and r.stdout == b"" and b"usage" in r.stderr


@pytest.mark.parametrize("name", te.BUILTIN)
@pytest.mark.parametrize("bos,eos", TOKENS)
def test_builtin_renders_as_mergekit(name, bos, eos):
    problems = te.check_builtin_template(ours(name), name, bos, eos)
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("name", te.BUILTIN)
def test_refusals_are_raise_exception(name):
    """Where render_builtin refuses, ours raises through raise_exception (a message of ours, not a
    Jinja error such as an undefined name); elsewhere it renders."""
    text = ours(name)
    refused = 0
    for conv in te.SAMPLE_CONVERSATIONS:
        try:
            te.render_builtin(name, conv)
        except te.TemplateRefused:
            got = outcome(text, conv, False, "<s>", "</s>")
            assert isinstance(got, tuple) and got[1].startswith(f"{name}: "), (conv, got)
            refused += 1
        else:
            assert isinstance(outcome(text, conv, False, "<s>", "</s>"), str), conv
    # only mistral refuses, and the sample conversations exercise that
    assert (refused > 0) == (name == "mistral")


def mergekit_template(name):
    """mergekit's mergekit/_data/chat_templates/NAME.jinja as read_text() gives it, or None."""
    rel = f"mergekit/_data/chat_templates/{name}.jinja"
    path = os.path.join(MERGEKIT, rel)
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            return f.read()
    r = subprocess.run(["git", "-C", MERGEKIT, "show", f"HEAD:{rel}"], capture_output=True, timeout=60)
    return r.stdout.decode("utf-8") if r.returncode == 0 else None


@pytest.mark.parametrize("name", te.BUILTIN)
def test_mergekit_files_render_identically(name):
    if not os.path.isdir(MERGEKIT):
        pytest.skip(f"mergekit's sources are not at {MERGEKIT} (set MM_MERGEKIT_SRC to a checkout or mirror)")
    theirs = mergekit_template(name)
    if theirs is None:
        pytest.skip(f"{MERGEKIT} has no mergekit/_data/chat_templates/{name}.jinja")
    mine = ours(name)
    assert mine != theirs
    # the reference itself describes mergekit's file
    assert te.check_builtin_template(theirs, name) == []
    for conv in te.SAMPLE_CONVERSATIONS + EXTRA_CONVERSATIONS:
        for agp in (False, True):
            for bos, eos in TOKENS:
                want = outcome(theirs, conv, agp, bos, eos)
                got = outcome(mine, conv, agp, bos, eos)
                if isinstance(want, tuple):   # both refuse; the messages are each template's own
                    assert isinstance(got, tuple), (conv, agp, got, want)
                else:
                    assert got == want, (conv, agp, bos, eos)
