"""mergekit-moe configs (issue 13, D20): a base model plus dense experts mounted as one mixture-of-experts
checkpoint. Every tensor but the routers and noisy experts is compared bit for bit with the reference
(tests/reference/moe_eval.py, written from mergekit/moe/*.py): base tensors, each expert's MLP under
the output architecture's names (byte copies cast to the output dtype, residual_scale on down_proj),
shared experts, Qwen2-MoE's zero attention biases, and config.json for each output architecture. The
random router weights and noise come from our counter-based generator (D6): checked for shape,
distribution, determinism and the seed. Models are tiny checkpoints with real tensor names and configs
(mm-mkmodel's Llama, tests/fixtures/archs' Mistral, Qwen2.5 and Qwen3). The first test mounts for real.
"""

import json
import os

import numpy as np
import pytest

import arch_fixture
import mmtest
import moe_eval
import safetensors_io as st

ARCHS = os.path.join(mmtest.REPO, "tests", "fixtures", "archs")


@pytest.fixture(scope="session")
def model(tmp_path_factory):
    """model(family, seed) -> a 2-layer checkpoint: family "llama" (mm-mkmodel) or a fixture family."""
    root = tmp_path_factory.mktemp("moe-models")
    made = {}

    def make(family="llama", seed=0, dtype="bf16"):
        key = (family, seed, dtype)
        if key not in made:
            d = str(root / f"{family}-{seed}-{dtype}")
            if family == "llama":
                mmtest.run([mmtest.MKMODEL, d, "--seed", str(seed), "--layers", "2", "--hidden", "32",
                            "--intermediate", "48", "--dtype", dtype], check=True)
            else:
                arch_fixture.make(os.path.join(ARCHS, family), d, seed=seed, dtype=dtype, max_layers=2)
            made[key] = d
        return made[key]
    return make


def expert(m, prompts=("p",), **kw):
    return dict(source_model=m, positive_prompts=list(prompts), **kw)


def moe_cfg(base, experts, **top):
    cfg = {"base_model": base, "gate_mode": "random", "experts": experts}
    cfg.update(top)
    return cfg


def check(tmp_path, mount, cfg, via_mount=False, name="run", args=()):
    """Builds (or mounts) cfg; compares with moe_eval; returns (reference, tensors, config.json, folder)."""
    expected = moe_eval.evaluate(cfg)
    d = tmp_path / name
    d.mkdir()
    path = mmtest.write_config(d, cfg)
    if via_mount:
        with mount(path, *args) as m:
            got = mmtest.read_weights(m.path)
            with open(os.path.join(m.path, "config.json")) as f:
                out_cfg = json.load(f)
            folder = m.path
    else:
        folder = mmtest.build(path, d / "out", *args)
        got = mmtest.read_weights(folder)
        with open(os.path.join(folder, "config.json")) as f:
            out_cfg = json.load(f)
    assert sorted(got) == sorted(set(expected.tensors) | set(expected.routers) | set(expected.noisy))
    mmtest.assert_bitwise({n: got[n] for n in expected.tensors}, expected.tensors)
    for n, (dt, shape) in expected.routers.items():
        assert got[n].dtype == dt and got[n].shape == shape, n
    assert out_cfg == expected.config, f"config.json differs:\n{out_cfg}\n{expected.config}"
    return expected, got, out_cfg, folder


def test_mixtral_mounted(tmp_path, mount, model):
    base = model("llama", 0)
    cfg = moe_cfg(base, [expert(model("llama", 1), ["a"]), expert(model("llama", 2), ["b"], residual_scale=0.5),
                         expert(model("llama", 3), ["c"])], dtype="bfloat16", experts_per_token=2)
    expected, got, out_cfg, _ = check(tmp_path, mount, cfg, via_mount=True)
    assert expected.arch == "mixtral" and out_cfg["num_local_experts"] == 3
    assert "model.layers.1.block_sparse_moe.experts.2.w3.weight" in got


@pytest.mark.parametrize("mode", ["random", "uniform_random"])
def test_router_distribution_and_seed(tmp_path, mount, model, mode):
    """Router rows: standard normal (random) or uniform in [-1/sqrt(H), 1/sqrt(H)) (uniform_random), the
    same for the same --random-seed, others for another seed."""
    base = model("llama", 0)
    cfg = moe_cfg(base, [expert(model("llama", i), [str(i)]) for i in (1, 2, 3, 4)], gate_mode=mode)
    cfg["dtype"] = "float32"
    _, a, _, _ = check(tmp_path, mount, cfg, name="a")
    _, b, _, _ = check(tmp_path, mount, cfg, name="b")
    _, c, _, _ = check(tmp_path, mount, cfg, name="c", args=("--random-seed", "7"))
    gates = [n for n in a if n.endswith("gate.weight")]
    assert len(gates) == 2
    v = np.concatenate([a[n].f32().ravel() for n in gates])
    assert all(a[n].raw == b[n].raw for n in gates)
    assert all(a[n].raw != c[n].raw for n in gates)
    assert a[gates[0]].raw != a[gates[1]].raw   # layers differ
    if mode == "random":
        assert abs(v.mean()) < 0.2 and 0.8 < v.std() < 1.2
    else:
        bound = 1 / np.sqrt(32)
        assert v.min() >= -bound and v.max() < bound and v.std() > bound / 3


def test_noise_scale(tmp_path, mount, model):
    """noise_scale adds normal noise of that scale to every tensor of the expert (mergekit's
    noise_and_scale), then residual_scale scales down_proj."""
    base, e1 = model("llama", 0), model("llama", 1)
    cfg = moe_cfg(base, [expert(e1, ["a"], noise_scale=0.01, residual_scale=2.0), expert(model("llama", 2), ["b"])],
                  dtype="float32")
    expected, got, _, _ = check(tmp_path, mount, cfg)
    assert expected.noisy
    for name, (dt, src, noise, residual) in expected.noisy.items():
        diff = got[name].f32() / np.float32(residual or 1.0) - src
        assert 0.007 < diff.std() < 0.013 and abs(diff.mean()) < 0.003, (name, diff.std())


def test_output_dtype_from_base(tmp_path, mount, model):
    """Without dtype:, the base's torch_dtype; a float32 expert is cast to it."""
    base = model("llama", 0, "f16")
    cfg = moe_cfg(base, [expert(model("llama", 1, "f32"), ["a"]), expert(model("llama", 2, "f16"), ["b"],
                                                                          residual_scale=0.3)])
    expected, got, out_cfg, _ = check(tmp_path, mount, cfg)
    assert expected.dtype == "F16" and {t.dtype for t in got.values()} == {"F16"}


@pytest.mark.parametrize("family,arch,shared", [
    ("mistral", "deepseek", 0), ("mistral", "deepseek", 1), ("qwen2.5", "qwen", 1), ("llama", "qwen", 1),
    ("qwen3", None, 0), ("mistral", None, 0)])
def test_output_architectures(tmp_path, mount, model, family, arch, shared):
    base = model(family, 0)
    experts = [expert(model(family, 1), ["a"]), expert(model(family, 2), ["b"])]
    cfg = moe_cfg(base, experts)
    if arch:
        cfg["architecture"] = arch
    if shared:
        cfg["shared_experts"] = [dict(source_model=model(family, 3))]
        if arch == "qwen":
            cfg["shared_experts"][0]["positive_prompts"] = ["s"]
    expected, got, out_cfg, _ = check(tmp_path, mount, cfg)
    want = {"deepseek": "deepseek moe", "qwen": "qwen moe"}.get(arch) or \
        ("qwen3 moe" if family == "qwen3" else "mixtral")
    assert expected.arch == want
    plan = json.loads(mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg), "--json", check=True).stdout)
    assert plan["moe"]["architecture"] == want and plan["moe"]["experts"] == 2


# ---- bad input: refused before anything is mounted --------------------------------------------------

def refused(tmp_path, cfg):
    with pytest.raises(moe_eval.MoEError):
        moe_eval.evaluate(cfg)
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg))
    assert r.returncode != 0, r.stdout[:400]
    return r.stderr


def test_error_fewer_experts_than_per_token(tmp_path, model):
    err = refused(tmp_path, moe_cfg(model("llama", 0), [expert(model("llama", 1))], experts_per_token=2))
    assert "1 experts but experts_per_token 2" in err and "merge.yml" in err


def test_error_no_prompts(tmp_path, model):
    cfg = moe_cfg(model("llama", 0), [expert(model("llama", 1), []), expert(model("llama", 2), ["b"])],
                  gate_mode="uniform_random")
    assert "has no positive_prompts" in refused(tmp_path, cfg)


def test_error_same_prompts(tmp_path, model):
    cfg = moe_cfg(model("llama", 0), [expert(model("llama", 1), ["x"]), expert(model("llama", 2), ["x"])],
                  gate_mode="uniform_random")
    assert "same positive and negative prompts" in refused(tmp_path, cfg)


def test_error_architecture_cannot_take_models(tmp_path, model):
    cfg = moe_cfg(model("llama", 0), [expert(model("llama", 1), ["a"]), expert(model("llama", 2), ["b"])],
                  architecture="qwen3")
    err = refused(tmp_path, cfg)
    assert "no MoE output architecture takes these models" in err and "Qwen3 models only" in err


def test_error_mixed_architectures(tmp_path, model):
    cfg = moe_cfg(model("llama", 0), [expert(model("qwen2.5", 1), ["a"]), expert(model("llama", 2), ["b"])])
    assert "all of one type" in refused(tmp_path, cfg)


def test_error_expert_shapes(tmp_path, model):
    other = str(tmp_path / "wide")
    mmtest.run([mmtest.MKMODEL, other, "--seed", "5", "--layers", "2", "--hidden", "32", "--intermediate", "64"],
               check=True)
    cfg = moe_cfg(model("llama", 0), [expert(model("llama", 1), ["a"]), expert(other, ["b"])])
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg))
    assert r.returncode != 0 and "experts must have the base's architecture and sizes" in r.stderr


def bpe_encode_fn():
    import bpe_encode
    encoders = {}

    def encode(folder, text):
        if folder not in encoders:
            encoders[folder] = bpe_encode.Encoder(folder)
        return encoders[folder].encode(text)
    return encode


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_cheap_embed(tmp_path, mount, model, dtype):
    """cheap_embed: each router row is the normalised sum of the base's embedding rows of the expert's
    prompt tokens (bos text in front), minus that of its negative prompts, normalised; the same at every
    layer. Compared with the reference (tokenizing with tests/reference/bpe_encode.py) to within float32
    sums (float32 output) or bfloat16 rounding (cosine >= 0.999)."""
    base = model("llama", 0)
    cfg = moe_cfg(base, [expert(model("llama", 1), ["ab cd", "the cat"], negative_prompts=["zz"]),
                         expert(model("llama", 2), ["hello world"]),
                         expert(model("llama", 3), ["x y z", "qq"], negative_prompts=["ab"])],
                  gate_mode="cheap_embed", dtype=dtype)
    want = moe_eval.cheap_embed_gates(cfg, bpe_encode_fn())
    _, got, _, _ = check(tmp_path, mount, cfg)
    for name, w in want.items():
        g = got[name].f32().astype(np.float64)
        cos = (g * w).sum(axis=1) / np.linalg.norm(g, axis=1) / np.linalg.norm(w, axis=1)
        assert cos.min() >= 0.999, (name, cos)
        if dtype == "float32":
            assert np.allclose(g, w, atol=1e-6), name


def test_cheap_embed_sentencepiece_base(tmp_path, mount, model):
    """The same with a sentencepiece-only base (tokenized by sentencepiece itself, spaces as ▁ and no
    dummy prefix, the way transformers 5 encodes a tokenizer.model alone)."""
    import shutil
    import tok_fixture
    from spm_encode import SpmReference
    base = str(tmp_path / "spm-base")
    shutil.copytree(model("mistral", 0), base)
    tok_fixture.apply_variant(base, "spm-bpe", 0)
    with open(os.path.join(base, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>"}, f)
    with open(os.path.join(base, "tokenizer.model"), "rb") as f:
        ref = SpmReference(f.read())

    def encode(folder, text):
        return ref.encode(text)

    cfg = moe_cfg(base, [expert(model("mistral", 1), ["the river"]), expert(model("mistral", 2), ["old mill"])],
                  gate_mode="cheap_embed", dtype="float32")
    want = moe_eval.cheap_embed_gates(cfg, encode)
    _, got, _, _ = check(tmp_path, mount, cfg)
    for name, w in want.items():
        assert np.allclose(got[name].f32(), w, atol=1e-6), name


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen3", "qwen2.5"])
@pytest.mark.parametrize("mode", ["hidden", "hidden_avg"])
def test_hidden_gates(tmp_path, mount, model, family, mode):
    """hidden (the default) and hidden_avg: router rows from the base model's hidden states at every
    layer input for each expert's prompts (left-padded batches of different lengths), against the numpy
    forward pass of tests/reference/forward_eval.py with the same tokenization; float32 output agrees
    to float32 rounding, and every row's cosine is >= 0.999 (the issue's bar against mergekit's bfloat16
    run)."""
    import shutil
    import forward_eval
    import tok_fixture
    base = model(family, 0)
    if family != "llama":               # the fixture families come without a tokenizer: give the base one
        copy = str(tmp_path / "base")
        shutil.copytree(base, copy)
        base = copy
        tok_fixture.write_base_tokenizer(base)
    cfg = moe_cfg(base, [expert(model(family, 1), ["the river runs", "old"], negative_prompts=["mill"]),
                         expert(model(family, 2), ["when the water is low"])],
                  gate_mode=mode, dtype="float32")
    if mode == "hidden":
        del cfg["gate_mode"]            # the default
    if family == "qwen2.5":             # Qwen MoE: one shared expert, with its own router row
        cfg["shared_experts"] = [expert(model(family, 3), ["the children of the village"])]
    want = moe_eval.hidden_gates(cfg, bpe_encode_fn(), forward_eval.hidden_states)
    _, got, _, _ = check(tmp_path, mount, cfg)
    bf16 = moe_eval.hidden_gates(cfg, bpe_encode_fn(), forward_eval.hidden_states_bf16)
    for name, w in want.items():
        g = got[name].f32().astype(np.float64)
        assert np.allclose(g, w, atol=2e-5), (name, np.abs(g - w).max())
        # against a run with bfloat16 intermediates, as mergekit-moe's transformers run has them
        b = bf16[name]
        cos = (g * b).sum(axis=1) / np.linalg.norm(g, axis=1) / np.linalg.norm(b, axis=1)
        assert cos.min() >= 0.999, (name, cos)


@pytest.mark.parametrize("family,arch", [("llama", None), ("qwen2.5", "qwen"), ("qwen3", None)])
def test_packed_layout_same_bytes(tmp_path, mount, model, family, arch):
    """--moe-layout packed: transformers 5's experts.gate_up_proj [E, 2I, H] (each expert's gate rows then
    its up rows) and experts.down_proj [E, H, I], router mlp.gate.weight; every byte equals the per-expert
    layout's, noise and residual_scale included."""
    base = model(family, 0)
    experts = [expert(model(family, 1), ["a"], noise_scale=0.02), expert(model(family, 2), ["b"], residual_scale=0.5),
               expert(model(family, 3), ["c"])]
    cfg = moe_cfg(base, experts, experts_per_token=2)
    if arch:
        cfg["architecture"] = arch
        cfg["shared_experts"] = [dict(source_model=model(family, 4), positive_prompts=["s"])]
    expected, per, _, _ = check(tmp_path, mount, cfg)
    path = mmtest.write_config(tmp_path, cfg, "packed.yml")
    packed = mmtest.read_weights(mmtest.build(path, tmp_path / "packed", "--moe-layout", "packed"))
    block = "block_sparse_moe" if expected.arch == "mixtral" else "mlp"
    names = ("w1", "w3", "w2") if expected.arch == "mixtral" else ("gate_proj", "up_proj", "down_proj")
    for layer in range(2):
        gu = packed[f"model.layers.{layer}.mlp.experts.gate_up_proj"]
        dn = packed[f"model.layers.{layer}.mlp.experts.down_proj"]
        g0 = per[f"model.layers.{layer}.{block}.experts.0.{names[0]}.weight"]
        assert gu.shape == (3, 2 * g0.shape[0], g0.shape[1])
        want_gu = b"".join(per[f"model.layers.{layer}.{block}.experts.{e}.{names[k]}.weight"].raw
                           for e in range(3) for k in (0, 1))
        want_dn = b"".join(per[f"model.layers.{layer}.{block}.experts.{e}.{names[2]}.weight"].raw for e in range(3))
        assert gu.raw == want_gu and dn.raw == want_dn
        assert packed[f"model.layers.{layer}.mlp.gate.weight"].raw == per[f"model.layers.{layer}.{block}.gate.weight"].raw
    per_only = {n for n in per if ".experts." in n and "shared" not in n}
    assert not per_only & set(packed)
    assert {n for n in per if n not in per_only and not n.endswith("gate.weight")} <= set(packed)


def test_error_all_experts_one_model_unless_told(tmp_path, model):
    """mergekit-moe refuses experts that are all one model unless given its
    --i-understand-this-is-not-useful-without-training flag; so do we."""
    one = model("llama", 1)
    cfg = moe_cfg(model("llama", 0), [expert(one, ["a"]), expert(one, ["b"])])
    path = mmtest.write_config(tmp_path, cfg)
    r = mmtest.mergemount("plan", path)
    assert r.returncode != 0 and "every expert is the model" in r.stderr
    ok = mmtest.mergemount("plan", path, "--i-understand-this-is-not-useful-without-training")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("second", ["ab cd ef gh ab cd ef gh ij", "zz yy"])
def test_degenerate_routing_warning(tmp_path, mount, model, second):
    """mergekit's warn_degenerate_gates: a layer whose router matrix has a condition number above 5 gets
    the warning (here: two experts with nearly the same prompts), and only then; the reference decides
    with numpy's cond."""
    base = model("llama", 0)
    cfg = moe_cfg(base, [expert(model("llama", 1), ["ab cd ef gh ab cd ef gh"]),
                         expert(model("llama", 2), [second])], gate_mode="cheap_embed", dtype="float32")
    want = moe_eval.cheap_embed_gates(cfg, bpe_encode_fn())
    degenerate = any(np.linalg.cond(w) > 5 for w in want.values())
    assert degenerate == (second != "zz yy")
    path = mmtest.write_config(tmp_path, cfg)
    r = mmtest.mergemount("build", path, str(tmp_path / "out"), "--no-cache", check=True)
    assert ("degenerate routing parameters" in r.stderr) == degenerate, r.stderr
