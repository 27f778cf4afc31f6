"""The GGUF view (`--gguf TYPE`): the mount holds one GGUF file whose bytes are what llama.cpp's
convert_hf_to_gguf.py --outtype TYPE writes for the merged folder, but for the naming keys.

Each family the view supports (llama: Llama 3 with a Llama 3 style byte-level BPE (and once with GPT-2's
ByteLevel pre-tokenizer, tokenizer.ggml.pre "gpt-2"), Llama 2 with a
sentencepiece model and float16 weights, Mistral; qwen2; gemma; gemma2; gemma3 text, and the text part
of a Gemma 3 vision model; phi3) is merged
from two tiny checkpoints with real tensor names (tests/fixtures/archs, --max-layers 2 as arch_fixture's
max_layers) and mounted with --gguf for several outtypes. The file read through the mount is parsed
(tests/reference/gguf_read.py: layout, alignment, size) and compared with the numpy reference
(tests/reference/gguf_ref.py) applied to the folder `mergemount build` writes for the same config: every
tensor (name, type, shape, bytes, order) and every key/value the reference models (name, type, value,
order); the only other keys allowed are the naming keys (general.name, general.size_label, ...).

Also: the file's name (`<config stem>-<size label>-<TYPE>.gguf`), range reads equal the same slices of
the whole file, `build --gguf` writes the same bytes, `--gguf-only` serves only the file, `plan --gguf`
and `plan --json --gguf` describe it, a union tokenizer's new tokens reach the GGUF, and the refusals
(unsupported family, unknown BPE pre-tokenizer, a bad TYPE, --gguf-only alone) exit non-zero before
anything is mounted or written.

test_real_converter_agrees runs llama.cpp's converter itself (tests/integration/llamacpp_gguf.py) and
compares byte for byte but the naming keys; it is skipped unless MM_LLAMACPP_SRC (or MM_LLAMA_CPP) and
MM_TRANSFORMERS_SRC are set.
"""

import json
import os
import random
import subprocess

import numpy as np
import pytest

import arch_fixture
import gguf_read
import gguf_ref
import llamacpp_gguf
import mmtest
import tok_fixture

ARCHS = os.path.join(mmtest.REPO, "tests", "fixtures", "archs")

# family -> (fixture folder, tokenizer kind, source dtype, merge method)
FAMILIES = {
    "llama3": ("llama3", "llama3-bpe", "bf16", "linear"),
    "llama3-gpt2": ("llama3", "base", "bf16", "linear"),   # GPT-2's ByteLevel pre-tokenizer: "gpt-2"
    "llama2": ("llama2", "spm-bpe", "f16", "linear"),
    "mistral": ("mistral", "spm-unigram", "bf16", "ties"),
    "qwen2.5": ("qwen2.5", "qwen2-bpe", "bf16", "linear"),
    "gemma": ("gemma", "spm-unigram", "bf16", "linear"),
    "gemma-f16": ("gemma", "spm-unigram", "f16", "linear"),
    "gemma2": ("gemma2", "spm-user", "bf16", "ties"),
    "gemma3-text": ("gemma3-text", "spm-unigram", "bf16", "linear"),
    "gemma3-vl": ("gemma3-vl", "spm-unigram", "bf16", "linear"),   # the text part of a vision model
    "phi3": ("phi3", "spm-bpe", "bf16", "linear"),
}
TORCH_DTYPE = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}

MAIN = ["llama3", "llama2", "mistral", "qwen2.5", "gemma", "gemma2", "gemma3-text", "phi3"]
CASES = ([(f, t) for f in MAIN for t in ("bf16", "q8_0")]
         + [("llama3", "f16"), ("gemma-f16", "f16"), ("qwen2.5", "f32"), ("gemma2", "f32"),
            ("llama2", "auto"), ("mistral", "AUTO"), ("phi3", "Q8_0"), ("gemma3-vl", "q8_0"),
            ("llama3-gpt2", "bf16")])


# ---- set-up ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gguf_option(binaries):
    """The build under test must offer --gguf (a build without it fails here, it is not skipped)."""
    r = mmtest.mergemount("mount", "--help", timeout=30)
    assert "--gguf" in r.stdout + r.stderr, "`mergemount mount --help` does not offer --gguf"


@pytest.fixture(scope="module")
def gguf_supported(gguf_option):
    """The tests that need a GGUF file (kept as a name: every family is supported now)."""


def make_source(root, family, seed, kind=None):
    fixture, tok, dtype, _ = FAMILIES[family]
    kind = kind or tok
    folder = arch_fixture.make(os.path.join(ARCHS, fixture), os.path.join(root, f"{family}-{kind}-s{seed}"),
                               seed=seed, dtype=dtype, max_layers=2)
    if kind in tok_fixture.STYLED:
        tok_fixture.apply_styled(folder, kind)
    else:
        tok_fixture.apply_variant(folder, kind, seed)
    return folder


def merge_config(family, a, b, **extra):
    _, _, dtype, method = FAMILIES[family]
    if method == "ties":
        cfg = {"merge_method": "ties", "base_model": a, "dtype": TORCH_DTYPE[dtype],
               "parameters": {"normalize": True},
               "models": [{"model": a}, {"model": b, "parameters": {"weight": 0.7, "density": 0.6}}]}
    else:
        cfg = {"merge_method": "linear", "base_model": a, "dtype": TORCH_DTYPE[dtype],
               "models": [{"model": a, "parameters": {"weight": 0.6}}, {"model": b, "parameters": {"weight": 0.4}}]}
    cfg.update(extra)
    return cfg


class Case:
    """A family's merge: config (merge.yml) and the folder `mergemount build` writes for it."""

    def __init__(self, root, family, cfg):
        self.dir = os.path.join(root, "case-" + family)
        os.makedirs(self.dir)
        self.config = mmtest.write_config(self.dir, cfg, "merge.yml")
        self.folder = mmtest.build(self.config, os.path.join(self.dir, "built"))
        self._expected = {}

    def expected(self, outtype):
        key = outtype.lower()
        if key not in self._expected:
            self._expected[key] = gguf_ref.expected(self.folder, key)
        return self._expected[key]


@pytest.fixture(scope="module")
def case(gguf_supported, tmp_path_factory):
    """case(family) -> Case, made once per module."""
    root = str(tmp_path_factory.mktemp("gguf"))
    made = {}

    def get(family):
        if family not in made:
            a, b = make_source(root, family, 1), make_source(root, family, 2)
            made[family] = Case(root, family, merge_config(family, a, b))
        return made[family]
    return get


def gguf_files(folder):
    return sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))


# ---- comparison -----------------------------------------------------------------------------------------

def _first_diffs(t, got, want_raw):
    """A description of where a tensor's values differ."""
    try:
        g = got.array(t.name).reshape(-1)
        w = gguf_read.decode(t.type, want_raw, t.shape).reshape(-1)
        idx = np.nonzero(~((g == w) | (np.isnan(g) & np.isnan(w))))[0]
        return f"{idx.size} of {g.size} values differ; " + ", ".join(f"[{i}] got {g[i]!r} want {w[i]!r}"
                                                                     for i in idx[:4])
    except Exception as e:  # noqa: BLE001 - only a message
        return f"({e})"


def assert_gguf_matches(data, exp, what=""):
    """The GGUF bytes `data` equal the reference `exp` (gguf_ref.Expected) in every tensor and every
    modelled key, with no key beyond those and the naming keys."""
    g = gguf_read.read(data)
    problems = []
    got_t = [(t.name, t.type, t.shape) for t in g.tensors]
    want_t = [(t.name, t.type, t.shape) for t in exp.tensors]
    if got_t != want_t:
        problems.append("tensor list (name, type, shape, order) differs:\n  got  " + repr(got_t) + "\n  want "
                        + repr(want_t))
    else:
        for t in exp.tensors:
            if g.data(t.name) != t.raw:
                problems.append(f"tensor {t.name} ({t.type} {list(t.shape)}): bytes differ: "
                                + _first_diffs(t, g, t.raw))
    got_k = [k for k in g.kv if not gguf_ref.is_naming_key(k)]
    want_k = list(exp.kv)
    if got_k != want_k:
        problems.append(f"keys differ: missing {[k for k in want_k if k not in got_k]}, unexpected "
                        f"{[k for k in got_k if k not in want_k]}; order got {got_k} want {want_k}")
    for k in want_k:
        if k not in g.kv or g.kv[k] == exp.kv[k]:
            continue
        gv, wv = g.kv[k], exp.kv[k]
        if gv.type == wv.type == "arr" and gv.elem == wv.elem and len(gv.value) == len(wv.value):
            d = [i for i, (x, y) in enumerate(zip(gv.value, wv.value)) if x != y]
            problems.append(f"key {k} (arr[{gv.elem}] of {len(gv.value)}): differs at {len(d)} indexes, first "
                            + ", ".join(f"[{i}] got {gv.value[i]!r} want {wv.value[i]!r}" for i in d[:4]))
        else:
            problems.append(f"key {k}: got {gv.type}{'[' + str(gv.elem) + ']' if gv.elem else ''} "
                            f"{str(gv.value)[:200]}, want {wv.type}{'[' + str(wv.elem) + ']' if wv.elem else ''} "
                            f"{str(wv.value)[:200]}")
    assert not problems, f"{what}: the GGUF differs from the reference in {len(problems)} places:\n" + \
        "\n".join(problems[:30])
    return g


# ---- the file's content ---------------------------------------------------------------------------------

@pytest.mark.parametrize("family,outtype", CASES, ids=[f"{f}-{t}" for f, t in CASES])
def test_gguf_matches_reference(case, mount, family, outtype):
    c = case(family)
    exp = c.expected(outtype)
    want_name = gguf_ref.file_name("merge", exp)
    with mount(c.config, "--gguf", outtype) as m:
        names = gguf_files(m.path)
        assert names == [want_name], f"GGUF files in the mount: {names}, want [{want_name!r}]"
        path = os.path.join(m.path, want_name)
        data = mmtest.read_file(path)
        assert os.path.getsize(path) == len(data)
        others = sorted(f for f in os.listdir(m.path) if not f.endswith(".gguf"))
    assert others == sorted(os.listdir(c.folder)), "the safetensors view must stay as without --gguf"
    assert_gguf_matches(data, exp, f"{family} --gguf {outtype}")


# ---- reads ----------------------------------------------------------------------------------------------

def _offsets(g):
    """Interesting offsets of a parsed GGUF: header parts, every tensor's start/end and padding."""
    pts = {0, 4, 8, 16, 24, g.header_end, g.data_start, g.size}
    for t in g.tensors:
        s = g.data_start + t.offset
        pts.update({s, s + t.nbytes, gguf_read.pad(s + t.nbytes, g.alignment)})
    return sorted(p for p in pts if 0 <= p <= g.size)


def test_range_reads_equal_slices_of_the_whole(case, mount):
    c = case("llama3")
    with mount(c.config, "--gguf", "q8_0") as m:
        path = os.path.join(m.path, gguf_files(m.path)[0])
        whole = mmtest.read_file(path)
        g = gguf_read.read(whole)
        rng = random.Random(7)
        pts = _offsets(g)
        ranges = [(0, 1), (0, 7), (3, 29), (g.header_end - 5, 40), (g.data_start - 3, 70)]
        for p in pts:                              # around every boundary, unaligned
            for d in (-33, -1, 0, 1, 17):
                for n in (1, 31, 34, 100, 4097):
                    ranges.append((max(0, p + d), n))
        for _ in range(300):                       # anywhere, any size
            off = rng.randrange(0, g.size)
            ranges.append((off, rng.choice([1, 2, 3, 13, 64, 255, 1000, 4096, 5000, 70000])))
        ranges += [(g.size - 1, 10), (g.size, 10), (g.size + 100, 10), (0, g.size + 50)]
        fd = os.open(path, os.O_RDONLY)
        try:
            bad = [(off, n) for off, n in ranges if os.pread(fd, n, off) != whole[off:off + n]]
        finally:
            os.close(fd)
        assert not bad, f"{len(bad)} of {len(ranges)} range reads differ from the whole file, e.g. {bad[:8]}"

        def reader(i):
            r = random.Random(100 + i)
            fd = os.open(path, os.O_RDONLY)
            try:
                wrong = []
                for _ in range(150):
                    off, n = r.randrange(0, g.size), r.randrange(1, 9000)
                    if os.pread(fd, n, off) != whole[off:off + n]:
                        wrong.append((i, off, n))
                return wrong
            finally:
                os.close(fd)
        errors = mmtest.in_threads(4, reader)
        assert not errors, f"concurrent range reads differ: {errors[:8]}"
        with open(path, "rb") as f:             # sequential small reads
            parts = []
            while True:
                b = f.read(777)
                if not b:
                    break
                parts.append(b)
        assert b"".join(parts) == whole


# ---- build and --gguf-only ---------------------------------------------------------------------------------

@pytest.mark.parametrize("family,outtype", [("gemma", "bf16"), ("qwen2.5", "q8_0")])
def test_build_writes_the_mounted_bytes(case, mount, tmp_path, family, outtype):
    c = case(family)
    with mount(c.config, "--gguf", outtype) as m:
        name = gguf_files(m.path)[0]
        mounted = mmtest.read_file(os.path.join(m.path, name))
    out = tmp_path / "out"
    mmtest.build(c.config, out, "--gguf", outtype)
    assert gguf_files(out) == [name]
    assert mmtest.read_file(out / name) == mounted, "build --gguf wrote other bytes than the mount serves"
    assert sorted(f for f in os.listdir(out) if f != name) == sorted(os.listdir(c.folder))
    only = tmp_path / "only"
    mmtest.build(c.config, only, "--gguf", outtype, "--gguf-only")
    assert sorted(os.listdir(only)) == [name], f"build --gguf-only wrote {sorted(os.listdir(only))}"
    assert mmtest.read_file(only / name) == mounted


def test_gguf_only_serves_only_the_file(case, mount):
    c = case("gemma2")
    exp = c.expected("q8_0")
    with mount(c.config, "--gguf", "q8_0", "--gguf-only") as m:
        names = sorted(os.listdir(m.path))
        assert names == [gguf_ref.file_name("merge", exp)], names
        data = mmtest.read_file(os.path.join(m.path, names[0]))
    assert_gguf_matches(data, exp, "gemma2 --gguf q8_0 --gguf-only")
    with mount(c.config, "-o", "gguf=q8_0,gguf_only") as m:    # the same as mount options (fstab)
        assert sorted(os.listdir(m.path)) == names
        assert mmtest.read_file(os.path.join(m.path, names[0])) == data


def test_gguf_after_safetensors_reads(case, mount, tmp_path):
    """The GGUF read after the safetensors files (the merged tensors then come from the block cache) and
    with a cache of its own read first give the same bytes."""
    c = case("qwen2.5")
    exp = c.expected("bf16")
    name = gguf_ref.file_name("merge", exp)
    with mount(c.config, "--gguf", "bf16") as m:
        mmtest.read_weights(m.path)
        after = mmtest.read_file(os.path.join(m.path, name))
    with mount(c.config, "--gguf", "bf16", "--cache-dir", tmp_path / "fresh") as m:
        first = mmtest.read_file(os.path.join(m.path, name))
        mmtest.read_weights(m.path)
    assert after == first
    assert_gguf_matches(first, exp, "qwen2.5 --gguf bf16")


# ---- plan -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("outtype", ["bf16", "auto", "q8_0"])
def test_plan_names_the_file(case, tmp_path, outtype):
    c = case("llama3")
    exp = c.expected(outtype)
    want = gguf_ref.file_name("merge", exp)
    r = mmtest.mergemount("plan", c.config, "--gguf", outtype, check=True)
    assert want in r.stdout, f"plan --gguf {outtype} does not name {want}:\n{r.stdout[:3000]}"
    r = mmtest.mergemount("plan", c.config, "--json", "--gguf", outtype, check=True)
    plan = json.loads(r.stdout)
    assert isinstance(plan.get("gguf"), dict), f"plan --json has no \"gguf\" object: {sorted(plan)}"
    gg = plan["gguf"]
    out = tmp_path / "out"
    mmtest.build(c.config, out, "--gguf", outtype, "--gguf-only")
    size = os.path.getsize(out / want)
    assert gg.get("file") == want, gg
    assert "type" in gg, f'plan --json: the "gguf" object has no "type" (the resolved TYPE): {sorted(gg)}'
    assert str(gg["type"]).upper() == exp.type_name, (gg["type"], exp.type_name)
    assert gg.get("size") == size, (gg, size)
    assert gg.get("tensors") == len(exp.tensors), (gg, len(exp.tensors))


# ---- tokenizers -----------------------------------------------------------------------------------------

def test_union_tokenizer_reaches_the_gguf(gguf_supported, mount, tmp_path):
    """A sentencepiece Llama merged with a fine-tune that added ChatML tokens, tokenizer_source union:
    the GGUF lists the union's tokens (the new ones at the ids the served tokenizer gives them) and the
    chat template, as the converter would for the built folder."""
    root = str(tmp_path)
    base = make_source(root, "llama3", 1, "spm-bpe")
    chat = make_source(root, "llama3", 2, "chatml")
    c = Case(root, "union", merge_config("llama3", base, chat, tokenizer_source="union", chat_template="chatml"))
    exp = c.expected("q8_0")
    with mount(c.config, "--gguf", "q8_0") as m:
        data = mmtest.read_file(os.path.join(m.path, gguf_ref.file_name("merge", exp)))
    g = assert_gguf_matches(data, exp, "union --gguf q8_0")
    tokens = g.value("tokenizer.ggml.tokens")
    for t in tok_fixture.CHATML:
        assert t in tokens and g.value("tokenizer.ggml.token_type")[tokens.index(t)] == gguf_ref.CONTROL, t
    with open(os.path.join(c.folder, "config.json")) as f:
        assert len(tokens) == json.load(f)["vocab_size"] > tok_fixture.VOCAB
    assert "<|im_start|>" in g.value("tokenizer.chat_template")


# ---- refusals -------------------------------------------------------------------------------------------

def mount_must_fail(config, mnt, *args):
    """`mergemount mount CONFIG MNT -f ARGS` must exit non-zero without mounting; returns stderr."""
    os.makedirs(mnt, exist_ok=True)
    p = subprocess.Popen([mmtest.MERGEMOUNT, "mount", str(config), str(mnt), "-f", *map(str, args)],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        if os.path.ismount(mnt):
            subprocess.run([mmtest.FUSERMOUNT, "-u", "-z", str(mnt)], capture_output=True)
        p.kill()
        p.communicate()
        raise AssertionError(f"mergemount mount {' '.join(map(str, args))} did not exit (it should refuse)")
    assert not os.path.ismount(mnt)
    assert p.returncode != 0, f"mount {' '.join(map(str, args))} exited 0; stderr:\n{err}"
    assert os.listdir(mnt) == []
    return err


def build_must_fail(config, out, *args):
    r = mmtest.mergemount("build", config, out, *args)
    assert r.returncode != 0, f"build {' '.join(map(str, args))} exited 0"
    assert not os.path.exists(out) or os.listdir(out) == [], f"build wrote {os.listdir(out)} before refusing"
    return r.stderr


def test_unsupported_family_is_refused(gguf_supported, tmp_path):
    a = arch_fixture.make(os.path.join(ARCHS, "gpt-neox"), str(tmp_path / "a"), seed=1, max_layers=2)
    b = arch_fixture.make(os.path.join(ARCHS, "gpt-neox"), str(tmp_path / "b"), seed=2, max_layers=2)
    config = mmtest.write_config(tmp_path, {"merge_method": "linear", "dtype": "bfloat16",
                                            "models": [{"model": a, "parameters": {"weight": 0.5}},
                                                       {"model": b, "parameters": {"weight": 0.5}}]})
    for err in (mount_must_fail(config, tmp_path / "mnt", "--gguf", "bf16"),
                build_must_fail(config, tmp_path / "out", "--gguf", "bf16")):
        assert "GPTNeoX" in err, err
        for fam in ("llama", "qwen2", "gemma", "gemma2", "gemma3", "phi3"):
            assert fam in err, f"the message does not list {fam}: {err}"
    assert mmtest.mergemount("build", config, tmp_path / "plain").returncode == 0   # without --gguf: fine


def _own_split(folder):
    """tokenizer.json's Split pattern replaced by one no published tokenizer has."""
    path = os.path.join(folder, "tokenizer.json")
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+|\s+"
    with open(path, "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    return folder


def test_unknown_pre_tokenizer_is_refused(case, tmp_path):
    """A Llama whose tokenizer.json splits with a pattern of its own: the converter cannot name it (its
    hash is unknown) and neither may we."""
    root = str(tmp_path)
    a, b = (_own_split(make_source(root, "llama3", s)) for s in (1, 2))
    config = mmtest.write_config(tmp_path, merge_config("llama3", a, b))
    for err in (mount_must_fail(config, tmp_path / "mnt", "--gguf", "q8_0"),
                build_must_fail(config, tmp_path / "out", "--gguf", "q8_0")):
        assert "pre-tokenizer" in err or "pre_tokenizer" in err, err


def test_bad_type_and_gguf_only_alone_are_refused(gguf_option, tmp_path):
    root = str(tmp_path)
    a, b = make_source(root, "gemma", 1), make_source(root, "gemma", 2)
    config = mmtest.write_config(tmp_path, merge_config("gemma", a, b))
    for bad in ("q4_k", "bf", "", "tq1_0"):
        for err in (mount_must_fail(config, tmp_path / "mnt", "--gguf", bad),
                    build_must_fail(config, tmp_path / "out", "--gguf", bad)):
            assert all(t in err for t in ("auto", "bf16", "f16", "f32", "q8_0")), f"--gguf {bad!r}: {err}"
        r = mmtest.mergemount("plan", config, "--gguf", bad)
        assert r.returncode != 0, f"plan --gguf {bad!r} exited 0"
    for err in (mount_must_fail(config, tmp_path / "mnt", "--gguf-only"),
                build_must_fail(config, tmp_path / "out", "--gguf-only"),
                mmtest.mergemount("plan", config, "--gguf-only").stderr):
        assert "--gguf" in err, err


# ---- llama.cpp's converter itself (optional) ----------------------------------------------------------------

@pytest.mark.timeout(600)
@pytest.mark.parametrize("family,outtype", [("llama3", "q8_0"), ("qwen2.5", "bf16"), ("gemma", "f16"),
                                            ("phi3", "auto"), ("llama2", "f16"), ("gemma3-text", "bf16"),
                                            ("mistral", "q8_0")])
def test_real_converter_agrees(case, mount, tmp_path, family, outtype):
    why = llamacpp_gguf.available()
    if why:
        pytest.skip("the comparison with llama.cpp's converter is optional: " + why)
    c = case(family)
    conv = tmp_path / "conv.gguf"
    rc, err = llamacpp_gguf.convert(c.folder, conv, outtype, tmp_path / "shim")
    assert rc == 0, err[-3000:]
    theirs = gguf_read.read(str(conv))
    with mount(c.config, "--gguf", outtype) as m:
        ours = gguf_read.read(mmtest.read_file(os.path.join(m.path, gguf_files(m.path)[0])))
    assert [(t.name, t.type, t.ne) for t in ours.tensors] == [(t.name, t.type, t.ne) for t in theirs.tensors]
    for t in theirs.tensors:
        assert ours.data(t.name) == theirs.data(t.name), f"tensor {t.name} differs from the converter's"
    k_ours = [(k, v) for k, v in ours.kv.items() if not gguf_ref.is_naming_key(k)]
    k_theirs = [(k, v) for k, v in theirs.kv.items() if not gguf_ref.is_naming_key(k)]
    assert [k for k, _ in k_ours] == [k for k, _ in k_theirs]
    diff = [k for (k, a), (_, b) in zip(k_ours, k_theirs) if a != b]
    assert not diff, f"keys whose values differ from the converter's: {diff}"
