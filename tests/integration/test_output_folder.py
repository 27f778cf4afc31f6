"""The output folder (docs/merge-contract.md D2, D15, D16): file set, config.json, donor tokenizer files,
mergekit_config.yml, README.md, index.json, shard names and splitting, shard bytes against the
independent Python writer."""

import json
import os
import shutil
import time

import pytest

import config_eval
import mmtest
import safetensors_io as st

TOKENIZER_FILES = ["generation_config.json", "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]


def linear_cfg(a, b, **top):
    cfg = {"merge_method": "linear",
           "models": [{"model": a, "parameters": {"weight": 0.5}}, {"model": b, "parameters": {"weight": 0.5}}]}
    cfg.update(top)
    return cfg


def marked_copy(src, dest, marker):
    """A copy of a model folder whose config.json and tokenizer_config.json carry a marker, so that
    the donor of the output files can be told apart."""
    shutil.copytree(src, dest)
    for fname in ("config.json", "tokenizer_config.json"):
        p = os.path.join(dest, fname)
        with open(p) as f:
            obj = json.load(f)
        obj["_test_marker"] = marker
        with open(p, "w") as f:
            json.dump(obj, f, indent=2)
    with open(os.path.join(dest, "tokenizer.json"), "a") as f:
        f.write("\n" * (1 + len(marker)))  # a byte-level difference in every donor file
    return str(dest)


def expected_shards(res, max_size):
    """D15 / B5.3-B5.4: tensors in mergekit's save order (by input tensor name), greedily packed:
    a new shard starts when the current one is non-empty and the next tensor would exceed max_size.
    Returns [[names of shard 1], ...]."""
    order = sorted(res.plan, key=lambda p: (p.input_label(), p.name))
    shards, current, size = [], [], 0
    for p in order:
        dtype, values = res.tensors[p.name]
        n = values.size * st.DTYPE_SIZE[dtype]
        if current and size + n > max_size:
            shards.append(current)
            current, size = [], 0
        current.append(p.name)
        size += n
    if current:
        shards.append(current)
    return shards


def shard_names(count):
    if count == 1:
        return ["model.safetensors"]
    return [f"model-{k:05d}-of-{count:05d}.safetensors" for k in range(1, count + 1)]


def front_matter(text):
    assert text.startswith("---\n"), "README.md must start with YAML front matter"
    end = text.index("\n---", 4)
    return text[4:end]


def front_matter_list(fm, key):
    """Values of `key` in simple front matter YAML: `key: [a, b]`, `key: a` or a block list."""
    lines = fm.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(key + ":"):
            rest = line[len(key) + 1:].strip()
            if rest.startswith("["):
                return [v.strip().strip("'\"") for v in rest.strip("[]").split(",") if v.strip()]
            if rest:
                return [rest.strip("'\"")]
            out = []
            for nxt in lines[i + 1:]:
                s = nxt.strip()
                if s.startswith("- "):
                    out.append(s[2:].strip().strip("'\""))
                elif s and not nxt.startswith((" ", "-")):
                    break
            return out
    return None


# ---- file set, config.json, donor files --------------------------------------------------------------

def test_file_set_single_shard(tmp_path, mount, models):
    cfg = linear_cfg(models[(1, "bf16")], models[(2, "bf16")])
    config = mmtest.write_config(tmp_path, cfg)
    with mount(config) as m:
        assert mmtest.files_of(m.path) == sorted(["config.json", "model.safetensors", "README.md",
                                                  "mergekit_config.yml"] + TOKENIZER_FILES)
        for name in mmtest.files_of(m.path):
            st_ = os.stat(os.path.join(m.path, name))
            assert st_.st_size == len(mmtest.read_file(os.path.join(m.path, name))), name


@pytest.mark.parametrize("dtype,out_dtype,want", [(None, None, "bfloat16"), ("float32", None, "float32"),
                                                  ("float32", "float16", "float16"), (None, "float32", "float32")])
def test_config_json_torch_dtype(tmp_path, mount, models, dtype, out_dtype, want):
    cfg = linear_cfg(models[(1, "bf16")], models[(2, "bf16")])
    if dtype:
        cfg["dtype"] = dtype
    if out_dtype:
        cfg["out_dtype"] = out_dtype
    config = mmtest.write_config(tmp_path, cfg)
    with mount(config) as m:
        with open(os.path.join(m.path, "config.json")) as f:
            out = json.load(f)
        got = mmtest.read_weights(m.path)
    assert out["torch_dtype"] == want and out["dtype"] == want  # older and transformers >= 5 name
    assert {t.dtype for t in got.values()} == {st.config_dtype(want)}
    with open(os.path.join(models[(1, "bf16")], "config.json")) as f:
        donor = json.load(f)
    donor["torch_dtype"] = donor["dtype"] = want
    assert out == donor


def test_config_json_layer_count_for_slices(tmp_path, mount, models):
    a = models[(1, "f16")]
    cfg = {"merge_method": "passthrough",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]},
                      {"sources": [{"model": a, "layer_range": [1, 2]}]},
                      {"sources": [{"model": a, "layer_range": [0, 2]}]}]}
    config = mmtest.write_config(tmp_path, cfg)
    with mount(config) as m:
        with open(os.path.join(m.path, "config.json")) as f:
            out = json.load(f)
        got = mmtest.read_weights(m.path)
    assert out["num_hidden_layers"] == 5
    assert {config_eval.layer_index(n) for n in got} - {None} == set(range(5))


def test_donor_is_first_model_without_base(tmp_path, mount, models):
    a = marked_copy(models[(1, "bf16")], tmp_path / "a", "a")
    b = marked_copy(models[(2, "bf16")], tmp_path / "b", "bb")
    config = mmtest.write_config(tmp_path, linear_cfg(b, a))
    with mount(config) as m:
        for name in TOKENIZER_FILES:
            assert mmtest.read_file(os.path.join(m.path, name)) == mmtest.read_file(os.path.join(b, name)), name
        with open(os.path.join(m.path, "config.json")) as f:
            assert json.load(f)["_test_marker"] == "bb"


def test_donor_is_base_model(tmp_path, mount, models):
    a = marked_copy(models[(1, "bf16")], tmp_path / "a", "a")
    b = marked_copy(models[(2, "bf16")], tmp_path / "b", "bb")
    cfg = {"merge_method": "task_arithmetic", "base_model": b,
           "models": [{"model": a, "parameters": {"weight": 0.5}}]}
    config = mmtest.write_config(tmp_path, cfg)
    with mount(config) as m:
        for name in TOKENIZER_FILES:
            assert mmtest.read_file(os.path.join(m.path, name)) == mmtest.read_file(os.path.join(b, name)), name
        with open(os.path.join(m.path, "config.json")) as f:
            assert json.load(f)["_test_marker"] == "bb"


def test_donor_without_tokenizer(tmp_path, mount, make_model, models):
    a = make_model(1, "bf16", tokenizer=False)
    config = mmtest.write_config(tmp_path, linear_cfg(a, models[(2, "bf16")]))
    with mount(config) as m:
        names = mmtest.files_of(m.path)
    assert not set(TOKENIZER_FILES) & set(names)


def test_no_copy_tokenizer_no_model_card(tmp_path, mount, models):
    config = mmtest.write_config(tmp_path, linear_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    with mount(config, "--no-copy-tokenizer", "--no-write-model-card") as m:
        assert mmtest.files_of(m.path) == ["config.json", "model.safetensors"]
    out = mmtest.build(config, tmp_path / "out", "--no-copy-tokenizer", "--no-write-model-card")
    assert mmtest.files_of(out) == ["config.json", "model.safetensors"]


# ---- model card and config copy (D16) ----------------------------------------------------------------

def test_mergekit_config_verbatim_and_readme(tmp_path, mount, models):
    # Hub references (resolved in the local HF cache, D14): the card's base_model lists them
    a = mmtest.hf_cache_model(models[(1, "bf16")], "cardtest/tiny-a")
    b = mmtest.hf_cache_model(models[(2, "bf16")], "cardtest/tiny-b", revision="v1")
    c = mmtest.hf_cache_model(models[(3, "bf16")], "cardtest/tiny-c")
    text = ("# a hand-written recipe, kept byte for byte\n"
            "merge_method:   task_arithmetic   # trailing comment\n"
            "base_model: 'cardtest/tiny-c'\n"
            "models:\n"
            "  - model: \"cardtest/tiny-a\"\n"
            "    parameters: {weight: 0.5}\n"
            "  - model: cardtest/tiny-b@v1\n"
            "    parameters:\n"
            "      weight: 0.25\n"
            "\n"
            "parameters:\n"
            "  lambda: 0.5\n"
            "dtype: bfloat16\n"
            "...\n")
    config = mmtest.write_config(tmp_path, text)
    with mount(config) as m:
        assert mmtest.read_file(os.path.join(m.path, "mergekit_config.yml")) == text.encode()
        readme = mmtest.read_file(os.path.join(m.path, "README.md")).decode("utf-8")
        got = mmtest.read_weights(m.path)
    fm = front_matter(readme)
    assert set(front_matter_list(fm, "base_model") or []) == {"cardtest/tiny-a", "cardtest/tiny-b",
                                                               "cardtest/tiny-c"}, fm
    tags = front_matter_list(fm, "tags")
    assert tags and {"merge", "mergekit", "mergemount"} <= set(tags), tags
    assert front_matter_list(fm, "library_name") == ["transformers"], fm
    assert "task_arithmetic" in readme.lower() or "task arithmetic" in readme.lower()
    # the values follow the same config, with the references resolved in the cache
    cfg = {"merge_method": "task_arithmetic", "base_model": "cardtest/tiny-c",
           "models": [{"model": "cardtest/tiny-a", "parameters": {"weight": 0.5}},
                      {"model": "cardtest/tiny-b@v1", "parameters": {"weight": 0.25}}],
           "parameters": {"lambda": 0.5}, "dtype": "bfloat16"}
    where = {"cardtest/tiny-a": a, "cardtest/tiny-b@v1": b, "cardtest/tiny-c": c}
    expected = config_eval.evaluate(cfg, resolve=where.get).tensors
    assert set(got) == set(expected)
    assert all(got[n].raw == st.encode(*expected[n]) for n in got)


def test_readme_local_models(tmp_path, mount, models):
    config = mmtest.write_config(tmp_path, linear_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    with mount(config) as m:
        readme = mmtest.read_file(os.path.join(m.path, "README.md")).decode("utf-8")
    fm = front_matter(readme)
    tags = front_matter_list(fm, "tags")
    assert tags and {"merge", "mergekit", "mergemount"} <= set(tags), tags
    assert mmtest.to_yaml(linear_cfg(models[(1, "bf16")], models[(2, "bf16")])) in readme


def test_hub_refs_by_revision_and_commit(tmp_path, mount, models):
    a = mmtest.hf_cache_model(models[(1, "f16")], "reftest/model-a", revision="main")
    commit = "0123456789abcdef0123456789abcdef01234567"
    b = mmtest.hf_cache_model(models[(2, "f16")], "reftest/model-b", revision="dev", commit=commit)
    cfg = linear_cfg("reftest/model-a", f"reftest/model-b@{commit}")
    config = mmtest.write_config(tmp_path, cfg)
    expected = config_eval.evaluate(cfg, resolve={"reftest/model-a": a, f"reftest/model-b@{commit}": b}.get)
    with mount(config) as m:
        mmtest.assert_matches_reference(m.path, expected.tensors)
    cfg = linear_cfg("reftest/model-a@main", "reftest/model-b@dev")
    config = mmtest.write_config(tmp_path, cfg, "by-branch.yml")
    with mount(config) as m:
        mmtest.assert_matches_reference(m.path, expected.tensors)


def test_stat_times_are_sane(tmp_path, mount, models):
    """Every file's times are real times (seconds), not later than now and not before the inputs
    existed (docs/design.md: the latest mtime of the inputs)."""
    a, b = models[(1, "bf16")], models[(2, "bf16")]
    config = mmtest.write_config(tmp_path, linear_cfg(a, b))
    inputs = [config] + [os.path.join(d, f) for d in (a, b) for f in os.listdir(d)]
    oldest = min(os.stat(p).st_mtime for p in inputs)
    with mount(config) as m:
        now = time.time()
        for name in [""] + mmtest.files_of(m.path):
            s = os.stat(os.path.join(m.path, name))
            for what in ("st_mtime", "st_ctime", "st_atime"):
                v = getattr(s, what)
                assert oldest - 1 <= v <= now + 1, f"{name or '.'} {what} = {v}, want a time in [{oldest}, {now}]"


# ---- shards and index (D15, B5.3, B5.4) -----------------------------------------------------------------

@pytest.mark.parametrize("size_arg,max_bytes", [("1", 1), ("9000", 9000), ("20K", 20000), ("30K", 30000),
                                                ("1M", 10 ** 6), ("5B", 5 * 10 ** 9)])
def test_out_shard_size(tmp_path, mount, models, size_arg, max_bytes):
    cfg = linear_cfg(models[(1, "bf16")], models[(2, "bf16", "sharded")])
    res = config_eval.evaluate(cfg)
    plan = expected_shards(res, max_bytes)
    names = shard_names(len(plan))
    config = mmtest.write_config(tmp_path, cfg)
    with mount(config, "--out-shard-size", size_arg) as m:
        weight_files = sorted(f for f in mmtest.files_of(m.path) if f.endswith(".safetensors"))
        assert weight_files == sorted(names)
        index_path = os.path.join(m.path, "model.safetensors.index.json")
        if len(plan) == 1:
            assert not os.path.exists(index_path)
        else:
            text = mmtest.read_file(index_path).decode()
            index = json.loads(text)
            total = sum(values.size * st.DTYPE_SIZE[d] for d, values in res.tensors.values())
            want_map = {n: fname for fname, shard in zip(names, plan) for n in shard}
            assert index == {"metadata": {"total_size": total}, "weight_map": want_map}
            assert text == st.index_json_text(want_map, total), "index.json: indent 2, sorted keys, newline"
        # every shard is exactly what the independent writer makes of the reference tensors
        for fname, shard in zip(names, plan):
            want = st.safetensors_bytes({n: (res.tensors[n][0], res.tensors[n][1].shape,
                                             st.encode(*res.tensors[n])) for n in shard})
            got = mmtest.read_file(os.path.join(m.path, fname))
            head, _ = st.header_bytes([(n, res.tensors[n][0], res.tensors[n][1].shape) for n in shard])
            assert got[:len(head)] == head, f"{fname}: header differs from the reference writer's"
            assert got == want, f"{fname}: data differs"


def test_shard_headers_frankenmerge(tmp_path, mount, models):
    """Shard headers of a 12-layer frankenmerge (names where "layers.10" sorts before "layers.2")
    equal the independent writer's bytes for the tensors each shard holds."""
    a = models[(1, "bf16")]
    cfg = {"merge_method": "passthrough", "out_dtype": "float16",
           "slices": [{"sources": [{"model": a, "layer_range": [0, 2]}]} for _ in range(6)]}
    config = mmtest.write_config(tmp_path, cfg)
    res = config_eval.evaluate(cfg)
    with mount(config, "--out-shard-size", "40K") as m:
        got = mmtest.read_weights(m.path)
        assert set(got) == set(res.tensors)
        for fname in mmtest.files_of(m.path):
            if not fname.endswith(".safetensors"):
                continue
            data = mmtest.read_file(os.path.join(m.path, fname))
            header, start = st.read_header(data)
            header.pop("__metadata__")
            head, placed = st.header_bytes([(n, i["dtype"], i["shape"]) for n, i in header.items()])
            assert data[:start] == head, fname
            assert len(data) == start + placed[-1][4]


def test_build_matches_mount_and_reference(tmp_path, mount, models):
    cfg = linear_cfg(models[(1, "f16", "sharded")], models[(2, "f16")], dtype="float32", out_dtype="bfloat16")
    config = mmtest.write_config(tmp_path, cfg)
    out = mmtest.build(config, tmp_path / "out", "--out-shard-size", "25K")
    mmtest.assert_matches_reference(out, config_eval.evaluate(cfg).tensors)
    with mount(config, "--out-shard-size", "25K") as m:
        assert mmtest.files_of(m.path) == mmtest.files_of(out)
        for name in mmtest.files_of(out):
            assert mmtest.read_file(os.path.join(m.path, name)) == mmtest.read_file(os.path.join(out, name)), name


def test_build_force_overwrites(tmp_path, models):
    config = mmtest.write_config(tmp_path, linear_cfg(models[(1, "bf16")], models[(2, "bf16")]))
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    mmtest.build(config, out, "--force")
    assert "model.safetensors" in mmtest.files_of(str(out))
    leftovers = [f for f in os.listdir(tmp_path) if f not in ("out", "merge.yml")]
    assert not leftovers, leftovers
