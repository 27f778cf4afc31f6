"""Bad input: every case exits non-zero with a message naming the file (and line:col for YAML
problems), mounts nothing and writes nothing (docs/merge-contract.md D11-D14).
Each config problem runs through both `mount` and `build`."""

import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time

import pytest

import mmtest
import safetensors_io as st

MODES = ["mount", "build"]


# ---- running a bad case ------------------------------------------------------------------------------

def expect_mount_failure(config, mnt, *args, already_mounted=False):
    """`mergemount mount CONFIG MNT -f` must exit non-zero without ever mounting. Returns stderr.
    already_mounted: MNT is a mount point before the call, so only the exit tells."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([mmtest.MERGEMOUNT, "mount", str(config), str(mnt), "-f", *map(str, args)],
                                stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        deadline = time.monotonic() + 30
        mounted = False
        while proc.poll() is None and time.monotonic() < deadline:
            if not already_mounted and os.path.isdir(str(mnt)) and os.path.ismount(str(mnt)):
                mounted = True
                break
            time.sleep(0.02)
        still_running = proc.poll() is None
        if mounted or still_running:
            subprocess.run([mmtest.FUSERMOUNT, "-u", "-z", str(mnt)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            proc.kill()
            proc.wait()
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    assert not mounted, f"mergemount mounted a bad config:\n{text}"
    assert not still_running, f"mergemount mount neither failed nor mounted within 30 s:\n{text}"
    assert proc.returncode != 0, f"mergemount mount exited 0 on bad input:\n{text}"
    return text


def run_bad(mode, config, tmp_path, *args):
    """Runs a bad config through `mount` or `build`; checks the exit status and that nothing was
    mounted or written. Returns stderr."""
    if mode == "build":
        parent = tmp_path / "build-parent"
        parent.mkdir(exist_ok=True)
        before = sorted(os.listdir(parent))
        out = parent / "out"
        r = mmtest.mergemount("build", config, out, *args, timeout=60)
        text = r.stderr
        assert r.returncode != 0, f"build exited 0 on bad input:\n{text}"
        assert not out.exists(), f"build left {out} behind"
        assert sorted(os.listdir(parent)) == before, f"build left files behind: {os.listdir(parent)}"
    else:
        mnt = tmp_path / "mnt"
        mnt.mkdir(exist_ok=True)
        text = expect_mount_failure(config, mnt, *args)
        assert not os.path.ismount(str(mnt))
        assert os.listdir(mnt) == []
    print(f"[{mode}] {text}")  # shown for failing tests, and with -s
    assert "error" in text.lower(), f"no error message on stderr:\n{text}"
    assert not re.search(r"Sanitizer|runtime error", text), text
    return text


def positions(text, config):
    """(line, col) pairs of "<config>:<line>:<col>" in a message."""
    name = re.escape(os.path.basename(str(config)))
    return [(int(a), int(b)) for a, b in re.findall(name + r":(\d+):(\d+)", text)]


def assert_position(text, config, line=None):
    pos = positions(text, config)
    assert pos, f"message does not name {os.path.basename(str(config))}:<line>:<col>:\n{text}"
    if line is not None:
        assert line in [p[0] for p in pos], f"message does not point at line {line}:\n{text}"


def write(tmp_path, text, name="merge.yml"):
    return mmtest.write_config(tmp_path, text, name)


def good_cfg(a, b, **top):
    cfg = {"merge_method": "linear",
           "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}]}
    cfg.update(top)
    return cfg


# ---- YAML and config problems --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_yaml_syntax_error(tmp_path, mode):
    config = write(tmp_path, 'merge_method: linear\ndtype: "bfloat16\nmodels: []\n')
    assert_position(run_bad(mode, config, tmp_path), config)


@pytest.mark.parametrize("mode", MODES)
def test_top_level_not_a_mapping(tmp_path, mode):
    config = write(tmp_path, "- merge_method: linear\n- models: []\n")
    assert_position(run_bad(mode, config, tmp_path), config, line=1)


@pytest.mark.parametrize("mode", MODES)
def test_unknown_method_suggests(tmp_path, models, mode):
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    config = write(tmp_path, f'merge_method: linaer\nmodels:\n  - model: "{a}"\n    parameters: {{weight: 1}}\n'
                             f'  - model: "{b}"\n    parameters: {{weight: 1}}\n')
    text = run_bad(mode, config, tmp_path)
    assert_position(text, config, line=1)
    assert "linaer" in text and "linear" in text.replace("linaer", ""), text


SPEC_METHODS = {
    "slerp": lambda a, b, c: {"base_model": a, "models": [{"model": a}, {"model": b}], "parameters": {"t": 0.5}},
    "nuslerp": lambda a, b, c: {"models": [{"model": a, "parameters": {"weight": 0.5}},
                                           {"model": b, "parameters": {"weight": 0.5}}]},
    "multislerp": lambda a, b, c: {"models": [{"model": a, "parameters": {"weight": 0.5}},
                                              {"model": b, "parameters": {"weight": 0.5}}]},
    "karcher": lambda a, b, c: {"models": [{"model": a}, {"model": b}]},
    "model_stock": lambda a, b, c: {"base_model": a, "models": [{"model": b}, {"model": c}]},
    "arcee_fusion": lambda a, b, c: {"base_model": a, "models": [{"model": b}]},
    "nearswap": lambda a, b, c: {"base_model": a, "models": [{"model": b}], "parameters": {"t": 0.001}},
    "sce": lambda a, b, c: {"base_model": a, "models": [{"model": b}, {"model": c}],
                            "parameters": {"select_topk": 0.5}},
    "ram": lambda a, b, c: {"base_model": a, "models": [{"model": b}, {"model": c}]},
    "ramplus_tl": lambda a, b, c: {"base_model": a, "models": [{"model": b}, {"model": c}]},
}
for _m in ("ties", "dare_ties", "dare_linear", "breadcrumbs", "breadcrumbs_ties", "della", "della_linear"):
    SPEC_METHODS[_m] = lambda a, b, c, m=_m: {
        "base_model": a, "models": [{"model": b, "parameters": {"weight": 0.5, "density": 0.5}},
                                    {"model": c, "parameters": {"weight": 0.5, "density": 0.5}}],
        "parameters": {"epsilon": 0.1} if m.startswith("della") else {}}


@pytest.mark.parametrize("method", sorted(SPEC_METHODS))
def test_spec_method_is_known(tmp_path, models, method):
    """Every method of the spec (mergekit's 20 names) plans (never "unknown", never "not implemented")."""
    a, b, c = models[(1, "bf16")], models[(2, "bf16")], models[(3, "bf16")]
    cfg = {"merge_method": method, **SPEC_METHODS[method](a, b, c)}
    config = mmtest.write_config(tmp_path, cfg)
    r = mmtest.mergemount("plan", config, timeout=60)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("mode", MODES)
def test_both_models_and_slices(tmp_path, models, mode):
    a = models[(1, "bf16")]
    config = write(tmp_path, f'merge_method: passthrough\nmodels:\n  - model: "{a}"\n'
                             f'slices:\n  - sources:\n      - model: "{a}"\n        layer_range: [0, 2]\n')
    assert_position(run_bad(mode, config, tmp_path), config)


@pytest.mark.parametrize("mode", MODES)
def test_neither_models_nor_slices(tmp_path, mode):
    config = write(tmp_path, "merge_method: passthrough\ndtype: bfloat16\n")
    assert_position(run_bad(mode, config, tmp_path), config)


@pytest.mark.parametrize("mode", MODES)
def test_model_not_found(tmp_path, models, mode):
    a = models[(1, "bf16")]
    config = write(tmp_path, f'merge_method: linear\nmodels:\n  - model: someorg/not-a-model\n'
                             f'    parameters: {{weight: 1}}\n  - model: "{a}"\n    parameters: {{weight: 1}}\n')
    text = run_bad(mode, config, tmp_path)
    assert_position(text, config, line=3)
    assert "someorg/not-a-model" in text and "hf download" in text, text


@pytest.mark.parametrize("mode", MODES)
def test_layer_range_out_of_bounds(tmp_path, models, mode):
    a = models[(1, "bf16")]
    config = write(tmp_path, f'merge_method: passthrough\nslices:\n  - sources:\n      - model: "{a}"\n'
                             f'        layer_range: [0, 5]\n')
    assert_position(run_bad(mode, config, tmp_path), config, line=5)


@pytest.mark.parametrize("mode", MODES)
def test_slice_sources_with_different_layer_counts(tmp_path, models, mode):
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    config = write(tmp_path, f'merge_method: linear\nparameters: {{weight: 1}}\nslices:\n  - sources:\n'
                             f'      - model: "{a}"\n        layer_range: [0, 2]\n'
                             f'      - model: "{b}"\n        layer_range: [0, 1]\n')
    assert_position(run_bad(mode, config, tmp_path), config)


@pytest.mark.parametrize("mode", MODES)
def test_missing_required_parameter(tmp_path, models, mode):
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    config = write(tmp_path, f'merge_method: linear\nmodels:\n  - model: "{a}"\n  - model: "{b}"\n'
                             f'    parameters: {{weight: 1}}\n')
    text = run_bad(mode, config, tmp_path)
    assert "weight" in text, text
    assert_position(text, config)


@pytest.mark.parametrize("mode", MODES)
def test_base_model_needs_weight_in_linear(tmp_path, models, mode):
    a, b, c = models[(1, "bf16")], models[(2, "bf16")], models[(3, "bf16")]
    config = write(tmp_path, f'merge_method: linear\nbase_model: "{c}"\nmodels:\n  - model: "{a}"\n'
                             f'    parameters: {{weight: 1}}\n  - model: "{b}"\n    parameters: {{weight: 1}}\n')
    text = run_bad(mode, config, tmp_path)
    assert "weight" in text, text
    assert os.path.basename(config) in text


@pytest.mark.parametrize("mode", MODES)
def test_parameter_of_wrong_type(tmp_path, models, mode):
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    config = write(tmp_path, f'merge_method: linear\nmodels:\n  - model: "{a}"\n    parameters:\n'
                             f'      weight: "abc"\n  - model: "{b}"\n    parameters:\n      weight: 1\n')
    text = run_bad(mode, config, tmp_path)
    assert_position(text, config, line=5)


@pytest.mark.parametrize("mode", MODES)
def test_empty_gradient(tmp_path, models, mode):
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    config = write(tmp_path, f'merge_method: linear\nmodels:\n  - model: "{a}"\n    parameters:\n'
                             f'      weight: []\n  - model: "{b}"\n    parameters:\n      weight: 1\n')
    text = run_bad(mode, config, tmp_path)
    assert_position(text, config, line=5)


@pytest.mark.parametrize("mode", MODES)
def test_weights_sum_to_zero_with_normalize(tmp_path, models, mode):
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    config = write(tmp_path, f'merge_method: linear\nmodels:\n  - model: "{a}"\n    parameters: {{weight: 0.5}}\n'
                             f'  - model: "{b}"\n    parameters: {{weight: -0.5}}\n')
    text = run_bad(mode, config, tmp_path)
    assert os.path.basename(config) in text, text


@pytest.mark.parametrize("mode", MODES)
def test_bad_dtype(tmp_path, models, mode):
    config = write(tmp_path, mmtest.to_yaml(good_cfg(models[(1, "bf16")], models[(2, "bf16")], dtype="float64")))
    text = run_bad(mode, config, tmp_path)
    lines = open(config).read().splitlines()
    assert_position(text, config, line=[i for i, ln in enumerate(lines, 1) if ln.startswith("dtype:")][0])


# ---- model folder problems ------------------------------------------------------------------------------

def bad_model_case(tmp_path, models, bad_folder, mode):
    """A linear merge of a good model and `bad_folder`; returns the error text."""
    config = mmtest.write_config(tmp_path, good_cfg(models[(1, "bf16")], str(bad_folder)))
    return run_bad(mode, config, tmp_path)


@pytest.mark.parametrize("mode", MODES)
def test_folder_without_weights(tmp_path, models, mode):
    folder = tmp_path / "no_weights_model"
    folder.mkdir()
    shutil.copy(os.path.join(models[(2, "bf16")], "config.json"), folder)
    text = bad_model_case(tmp_path, models, folder, mode)
    assert "no_weights_model" in text, text


@pytest.mark.parametrize("mode", MODES)
def test_folder_with_only_pytorch_bin(tmp_path, models, mode):
    folder = tmp_path / "pickle_model"
    folder.mkdir()
    shutil.copy(os.path.join(models[(2, "bf16")], "config.json"), folder)
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 not really a pickle")
    text = bad_model_case(tmp_path, models, folder, mode)
    assert "pickle_model" in text and "safetensors" in text.lower(), text


def corrupt(src, dest, fname, fn):
    shutil.copytree(src, dest)
    p = os.path.join(dest, fname)
    with open(p, "rb") as f:
        data = f.read()
    with open(p, "wb") as f:
        f.write(fn(data))
    return str(dest)


def rewrite_header(edit):
    """A corruption that edits the parsed header dict and keeps the data bytes."""
    def fn(data):
        header, start = st.read_header(data)
        edit(header)
        text = json.dumps(header, separators=(",", ":")).encode()
        text += b" " * ((8 - len(text) % 8) % 8)
        return struct.pack("<Q", len(text)) + text + data[start:]
    return fn


def by_offset(header):
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def _overlap(h):
    names = by_offset(h)
    b, e = h[names[1]]["data_offsets"]
    h[names[1]]["data_offsets"] = [b - 2, e - 2]


def _past_end(h):
    # the last tensor grows (shape and offsets consistent) beyond the end of the file
    last = h[by_offset(h)[-1]]
    b, e = last["data_offsets"]
    last["shape"] = [last["shape"][0] * 2] + last["shape"][1:]
    last["data_offsets"] = [b, b + 2 * (e - b)]


def _size_mismatch(h):
    h["model.embed_tokens.weight"]["shape"] = [64, 31]


def _junk_header(junk):
    def fn(data):
        (n,) = struct.unpack("<Q", data[:8])
        return data[:8] + junk + b" " * (n - len(junk)) + data[8 + n:]
    return fn


def _shape(name, shape):
    def edit(h):
        h[name]["shape"] = shape
    return rewrite_header(edit)


def _deep_header(data):
    """The header replaced by valid JSON nested far beyond any parser's sane depth."""
    text = b'{"__metadata__":' + b"[" * 100000 + b"]" * 100000 + b"}"
    (n,) = struct.unpack("<Q", data[:8])
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


CORRUPTIONS = {
    "truncated": ("model-00002-of-00003.safetensors", lambda d: d[:-10]),
    # hostile input (issue 6): clear errors, never a crash
    "header_over_limit": ("model.safetensors", lambda d: struct.pack("<Q", 100_000_001) + d[8:]),
    "shape_numel_overflows": ("model.safetensors", _shape("model.norm.weight", [2 ** 52, 2 ** 52])),
    "shape_bytes_overflow": ("model.safetensors", _shape("model.norm.weight", [2 ** 52, 2 ** 11])),
    "header_deeply_nested": ("model.safetensors", _deep_header),
    "header_not_utf8": ("model.safetensors", _junk_header(b'{"model.norm.weight\xff": {}}')),
    "header_past_eof": ("model.safetensors", lambda d: struct.pack("<Q", len(d) + 100) + d[8:]),
    "header_not_json": ("model.safetensors", _junk_header(b"this is not JSON {")),
    "header_bad_json": ("model.safetensors", _junk_header(b'{"model.norm.weight": {"dtype": "BF16", "sha')),
    "header_not_object": ("model.safetensors", _junk_header(b'["model.norm.weight"]')),
    "offsets_overlap": ("model.safetensors", rewrite_header(_overlap)),
    "offsets_past_end": ("model.safetensors", rewrite_header(_past_end)),
    "size_not_dtype_times_shape": ("model.safetensors", rewrite_header(_size_mismatch)),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_safetensors(tmp_path, models, mode, kind):
    fname, fn = CORRUPTIONS[kind]
    src = models[(2, "bf16", "sharded")] if fname.startswith("model-") else models[(2, "bf16")]
    folder = corrupt(src, tmp_path / f"corrupt_{kind}", fname, fn)
    text = bad_model_case(tmp_path, models, folder, mode)
    assert f"corrupt_{kind}" in text and fname in text, f"the message must name {folder}/{fname}:\n{text}"


CORRUPTION_MESSAGES = {
    "header_over_limit": "exceeds the 100000000-byte limit",
    "shape_numel_overflows": "element count overflows",
    "shape_bytes_overflow": "byte size",
    "header_deeply_nested": "nested more than 1000 levels deep",
    "header_not_utf8": "not valid UTF-8",
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(CORRUPTION_MESSAGES))
def test_hostile_safetensors_message(tmp_path, models, mode, kind):
    """The hostile-header cases say what is wrong, after the file name."""
    fname, fn = CORRUPTIONS[kind]
    folder = corrupt(models[(2, "bf16")], tmp_path / f"hostile_{kind}", fname, fn)
    text = bad_model_case(tmp_path, models, folder, mode)
    assert re.search(re.escape(f"{folder}/{fname}") + r": .*" + re.escape(CORRUPTION_MESSAGES[kind]), text), text


# ---- hostile model folders (issue 6) ---------------------------------------------------------------------

def edit_index(src, dest, edit):
    """A copy of sharded model `src` whose index.json is rewritten by edit(index dict) (or replaced by the
    bytes edit returns)."""
    shutil.copytree(src, dest)
    p = os.path.join(dest, "model.safetensors.index.json")
    with open(p) as f:
        index = json.load(f)
    out = edit(index)
    with open(p, "wb") as f:
        f.write(out if isinstance(out, bytes) else json.dumps(index, indent=2).encode())
    return str(dest)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shard", ["../outside/model-00001-of-00003.safetensors", "ABSOLUTE",
                                   "sub/model-00001-of-00003.safetensors", ".."])
def test_index_shard_outside_folder(tmp_path, models, mode, shard):
    """A weight_map naming a shard by a path — one that leads to a valid shard outside the folder, or
    into a subfolder — is refused: a model folder may only name files in itself."""
    src = models[(2, "bf16", "sharded")]
    shutil.copytree(src, tmp_path / "outside")  # valid shards the paths would reach
    if shard == "ABSOLUTE":
        shard = str(tmp_path / "outside" / "model-00001-of-00003.safetensors")

    def edit(index):
        wm = index["weight_map"]
        for name, f in wm.items():
            if f == "model-00001-of-00003.safetensors":
                wm[name] = shard
    folder = edit_index(src, tmp_path / "evil", edit)
    os.makedirs(os.path.join(folder, "sub"))
    shutil.copy(os.path.join(src, "model-00001-of-00003.safetensors"), os.path.join(folder, "sub"))
    text = bad_model_case(tmp_path, models, folder, mode)
    assert f"{folder}/model.safetensors.index.json: weight_map entry" in text, text
    assert f"names the shard '{shard}', which is not a plain file name in the model folder" in text, text
    assert "(a shard name may not contain '/'" in text, text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("fname", ["model.safetensors.index.json", "config.json"])
def test_deeply_nested_json_files(tmp_path, models, mode, fname):
    """JSON nested 100000 levels deep in the index or config.json: an error naming the file."""
    src = models[(2, "bf16", "sharded")]
    folder = tmp_path / "deep_json"
    shutil.copytree(src, folder)
    with open(folder / fname, "w") as f:
        f.write('{"metadata": ' + "[" * 100000 + "]" * 100000 + ', "weight_map": {}}')
    text = bad_model_case(tmp_path, models, folder, mode)
    assert f"{folder}/{fname}: JSON nested more than 1000 levels deep at byte " in text, text


@pytest.mark.parametrize("mode", MODES)
def test_deeply_nested_yaml(tmp_path, mode):
    config = write(tmp_path, "merge_method: linear\nmodels:\n  - model: " + "{model: " * 100000 + "\n")
    text = run_bad(mode, config, tmp_path)
    assert_position(text, config, line=3)
    assert "nested more than 256 levels deep" in text, text


def test_symlinked_model_folder(tmp_path, models):
    """Model folders made of symbolic links (the Hugging Face cache's layout: relative links into blobs/,
    and here absolute links too) are read like the files they point at."""
    a, b = models[(1, "bf16")], models[(2, "bf16", "sharded")]
    links = {}
    for name, src in (("a", a), ("b", b)):
        blobs = tmp_path / f"{name}_blobs"
        shutil.copytree(src, blobs)
        folder = tmp_path / f"{name}_links"
        folder.mkdir()
        for i, fname in enumerate(sorted(os.listdir(blobs))):
            target = os.path.join("..", f"{name}_blobs", fname) if i % 2 else str(blobs / fname)
            os.symlink(target, folder / fname)
        links[name] = str(folder)
    want = mmtest.read_weights(mmtest.build(mmtest.write_config(tmp_path, good_cfg(a, b), "plain.yml"),
                                            tmp_path / "out_plain"))
    got = mmtest.read_weights(mmtest.build(mmtest.write_config(tmp_path, good_cfg(links["a"], links["b"]),
                                                               "links.yml"), tmp_path / "out_links"))
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].raw == want[name].raw, name


def test_only_known_files_served_from_donor(tmp_path, mount, make_model, models):
    """The donor's folder lends only the fixed tokenizer and generation file names: other files in it
    (or next to it) are never served, whatever their names."""
    donor = tmp_path / "donor"
    shutil.copytree(models[(1, "bf16")], donor)
    (donor / "secret.txt").write_text("do not serve")
    (donor / "tokenizer.json.bak").write_text("nor this")
    (donor / "x").write_text("nor this")
    (tmp_path / "x").write_text("outside")
    os.symlink("../x", donor / "..x")
    os.makedirs(donor / "sub")
    (donor / "sub" / "tokenizer.json").write_text("{}")
    config = mmtest.write_config(tmp_path, good_cfg(str(donor), models[(2, "bf16")]))
    tokenizer = sorted(f for f in os.listdir(models[(1, "bf16")]) if "token" in f or f.startswith("generation"))
    want = sorted(["config.json", "model.safetensors", "README.md", "mergekit_config.yml"] + tokenizer)
    with mount(config) as m:
        assert sorted(os.listdir(m.path)) == want
        for name in ("secret.txt", "tokenizer.json.bak", "x", "..x", "sub"):
            assert not os.path.lexists(os.path.join(m.path, name)), name
    out = mmtest.build(config, tmp_path / "out")
    assert sorted(os.listdir(out)) == want


def test_donor_links_outside_the_model_are_not_served(tmp_path, mount, models):
    """A donor file that is a link is served only when it resolves inside the model folder (or, for a
    Hugging Face cache snapshot, inside its repository folder): a downloaded folder must not make the
    mount serve any file the user can read."""
    src = models[(1, "bf16")]
    private = tmp_path / "private.txt"
    private.write_text("not for the mount")
    donor = tmp_path / "donor"
    shutil.copytree(src, donor)
    os.remove(donor / "tokenizer.json")
    os.symlink(str(private), donor / "tokenizer.json")                   # absolute, outside
    os.remove(donor / "tokenizer_config.json")
    os.symlink("../private.txt", donor / "tokenizer_config.json")        # relative, outside
    os.makedirs(donor / "extra")
    shutil.move(str(donor / "special_tokens_map.json"), donor / "extra" / "map.json")
    os.symlink("extra/map.json", donor / "special_tokens_map.json")      # inside: served
    config = mmtest.write_config(tmp_path, good_cfg(str(donor), models[(2, "bf16")]))
    with mount(config) as m:
        names = os.listdir(m.path)
        assert "tokenizer.json" not in names and "tokenizer_config.json" not in names, names
        assert mmtest.read_file(os.path.join(m.path, "special_tokens_map.json")) == \
            mmtest.read_file(os.path.join(src, "special_tokens_map.json"))
        log = m.stderr()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert re.search(re.escape(str(donor / name)) + r" is a link to a file outside the model folder", log), log
    # The Hugging Face cache's own links (snapshot -> ../../blobs) are inside the repository: served.
    snap = mmtest.hf_cache_model(src, "linktest/donor")
    config = mmtest.write_config(tmp_path, good_cfg(snap, models[(2, "bf16")]))
    with mount(config) as m:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            assert mmtest.read_file(os.path.join(m.path, name)) == mmtest.read_file(os.path.join(src, name))
        assert "outside the model folder" not in m.stderr()


@pytest.mark.parametrize("mode", MODES)
def test_tensor_missing_in_one_model(tmp_path, models, mode):
    folder = tmp_path / "missing_tensor_model"
    shutil.copytree(models[(2, "bf16")], folder)
    tensors, _ = st.read_safetensors(folder / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    st.write_safetensors(folder / "model.safetensors",
                         {n: (t.dtype, t.shape, t.raw) for n, t in tensors.items()})
    text = bad_model_case(tmp_path, models, folder, mode)
    assert "model.layers.1.mlp.up_proj.weight" in text and "missing_tensor_model" in text, text


@pytest.mark.parametrize("mode", MODES)
def test_shape_mismatch_between_models(tmp_path, models, make_model, mode):
    other = make_model(2, "bf16", intermediate=40)
    text = bad_model_case(tmp_path, models, other, mode)
    assert re.search(r"mlp\.(up|gate|down)_proj", text), text


# ---- mountpoint and output folder problems ---------------------------------------------------------------

def test_mountpoint_missing(tmp_path, models):
    config = mmtest.write_config(tmp_path, good_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    mnt = tmp_path / "does-not-exist"
    text = expect_mount_failure(config, mnt)
    assert "does-not-exist" in text, text
    assert not mnt.exists()


def test_mountpoint_not_a_directory(tmp_path, models):
    config = mmtest.write_config(tmp_path, good_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    mnt = tmp_path / "a-file"
    mnt.write_text("x")
    text = expect_mount_failure(config, mnt)
    assert "a-file" in text, text
    assert mnt.read_text() == "x"


def test_mountpoint_already_mounted(tmp_path, models, mount):
    config = mmtest.write_config(tmp_path, good_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    with mount(config) as m:
        before = mmtest.files_of(m.path)
        text = expect_mount_failure(config, m.path, already_mounted=True)
        assert os.path.basename(m.path) in text, text
        assert os.path.ismount(m.path) and mmtest.files_of(m.path) == before
        mmtest.read_weights(m.path)


def test_build_outdir_not_empty(tmp_path, models):
    config = mmtest.write_config(tmp_path, good_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    out = tmp_path / "existing-out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    before = sorted(os.listdir(tmp_path))
    r = mmtest.mergemount("build", config, out)
    assert r.returncode != 0, r.stderr
    assert "existing-out" in r.stderr and "--force" in r.stderr, r.stderr
    assert os.listdir(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path)) == before
