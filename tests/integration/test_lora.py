"""LoRA references (/work/notes/lora.md): `model: BASE+ADAPTER` and `{model: BASE, lora: ADAPTER}` are
one model, the base's config.json and tensors with every targeted `<M>.weight` replaced on read by
W' = round_to(dtype(W), float32(W) + scaling * (B @ A)).

Bases are tiny checkpoints with real names (a 2-layer Llama 3 from tests/fixtures/archs, a GPT-2 with
Conv1D weights from lora_fixture.make_gpt2); adapters are PEFT folders written by
tests/reference/lora_fixture.py with values for which B @ A is exact in float32 in any order, so the
output must equal the numpy reference (tests/reference/lora_eval.py via config_eval.py) bit for bit;
one case with random values is compared within 1 ulp. The first test mounts for real, the others
use `mergemount build`. Bad adapters must be refused at `mergemount plan` time with an error that
names what is wrong.
"""

import json
import os
import re

import numpy as np
import pytest

import arch_fixture
import config_eval
import lora_eval
import lora_fixture
import mmtest
import safetensors_io as st

LLAMA3 = os.path.join(mmtest.REPO, "tests", "fixtures", "archs", "llama3")
LAYERS = 2
Q0 = "model.layers.0.self_attn.q_proj"
DTYPE_KEYS = ("dtype", "torch_dtype")


# ---- models and adapters ------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def llama(tmp_path_factory):
    """llama(seed=0, dtype="bf16") -> a 2-layer Llama 3 checkpoint (seed 0: the base; 1, 2: fine-tunes
    of it), made once per session. Shapes: q/o_proj [32, 32], k/v_proj [16, 32], gate/up [48, 32],
    down [32, 48], embed_tokens and lm_head [96, 32]."""
    root = tmp_path_factory.mktemp("lora-bases")
    made = {}

    def make(seed=0, dtype="bf16"):
        if (seed, dtype) not in made:
            made[(seed, dtype)] = arch_fixture.make(LLAMA3, str(root / f"llama3-s{seed}-{dtype}"), seed=seed,
                                                    dtype=dtype, max_layers=LAYERS)
        return made[(seed, dtype)]
    return make


@pytest.fixture(scope="session")
def gpt2(tmp_path_factory):
    """A 2-layer GPT-2 in bfloat16: `transformer.h.<i>.attn.c_attn.weight` [32, 96] etc., Conv1D [in, out]."""
    return lora_fixture.make_gpt2(str(tmp_path_factory.mktemp("lora-gpt2") / "gpt2"), dtype="BF16")


@pytest.fixture
def adapter(tmp_path):
    """adapter(base, targets, **lora_fixture.write_adapter options) -> a new adapter folder."""
    count = [0]

    def make(base, targets, **kw):
        count[0] += 1
        return lora_fixture.write_adapter(base, str(tmp_path / f"adapter{count[0]}"), targets, **kw)
    return make


def plus(base, adapter_dir):
    return f"{base}+{adapter_dir}"


def passthrough(ref):
    return {"merge_method": "passthrough", "models": [{"model": ref}]}


# ---- running and checking ----------------------------------------------------------------------------

def merge(tmp_path, mount, cfg, via_mount=False, name="run"):
    """Runs cfg through a real mount or `mergemount build` in tmp_path/name; returns ({name: StTensor},
    config.json)."""
    return mmtest.merge_folder(tmp_path, mount, cfg, via_mount, name)[:2]


def check(tmp_path, mount, cfg, via_mount=False, exact=True, resolve=None, name="run"):
    """Merges cfg and compares every tensor with the reference (bit for bit, or within 1 ulp of the
    stored dtype) and config.json with the reference's; returns (reference, got, config.json)."""
    expected = config_eval.evaluate(cfg, resolve=resolve)
    got, out_cfg = merge(tmp_path, mount, cfg, via_mount, name)
    if exact:
        mmtest.assert_bitwise(got, expected.tensors)
    else:
        mmtest.assert_within_ulp(got, expected.tensors, 1)
    assert out_cfg == expected.config, f"config.json differs from the reference's:\n{out_cfg}\n{expected.config}"
    return expected, got, out_cfg


def without_dtype(cfg):
    return {k: v for k, v in cfg.items() if k not in DTYPE_KEYS}


def assert_base_config(out_cfg, base):
    """The output config.json is the base's apart from dtype / torch_dtype."""
    with open(os.path.join(base, "config.json")) as f:
        want = json.load(f)
    assert without_dtype(out_cfg) == without_dtype(want)


def assert_lora_applied(got, base, adapter_dir):
    """The targeted tensors differ from the base's, every other tensor is the base's bytes."""
    targeted = {m + ".weight" for m in lora_eval.read_adapter(adapter_dir).modules}
    src = st.read_folder(base)
    assert targeted and targeted <= set(src)
    assert sorted(got) == sorted(src)
    same = [n for n in targeted if got[n].raw == src[n].raw]
    assert not same, f"targeted tensors equal to the base's: {same}"
    changed = [n for n in src if n not in targeted and got[n].raw != src[n].raw]
    assert not changed, f"tensors the adapter does not target changed: {changed}"


def direct_effective(base, adapter_dir, name):
    """One effective tensor computed here from the files, without lora_eval's code: B @ A in float64
    (exact for the fixture's values), times alpha / r, plus W in float32, rounded to W's dtype."""
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        cfg = json.load(f)
    tensors, _ = st.read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    module = name[:-len(".weight")]
    a = tensors[f"base_model.model.{module}.lora_A.weight"].f32().astype(np.float64)
    b = tensors[f"base_model.model.{module}.lora_B.weight"].f32().astype(np.float64)
    d = (b @ a * (cfg["lora_alpha"] / cfg["r"])).astype(np.float32)
    w = st.read_folder(base)[name]
    return w.dtype, st.round_to(w.dtype, w.f32() + d)


# ---- values ----------------------------------------------------------------------------------------------

def test_passthrough_string_form_mounted(tmp_path, mount, llama, adapter):
    base = llama()
    ad = adapter(base, ["q_proj", "v_proj"], r=4, alpha=8)
    _, got, out_cfg = check(tmp_path, mount, passthrough(plus(base, ad)), via_mount=True)
    assert_lora_applied(got, base, ad)
    assert_base_config(out_cfg, base)
    assert {t.dtype for t in got.values()} == {"BF16"}
    for name in (Q0 + ".weight", "model.layers.1.self_attn.v_proj.weight"):
        dtype, want = direct_effective(base, ad, name)
        assert got[name].raw == st.encode(dtype, want), name


def test_concurrent_first_reads(tmp_path, mount, llama, adapter):
    """Eight readers at once on a cold, uncached mount: the factors of each changed tensor are loaded by
    whichever read comes first while others wait or compute (the ThreadSanitizer run includes this
    test); every byte equals `mergemount build`'s."""
    base = llama()
    ad = adapter(base, ["q_proj", "k_proj", "v_proj", "o_proj", "embed_tokens"], r=4, alpha=8)
    path = mmtest.write_config(tmp_path, passthrough(plus(base, ad)))
    want = st.read_folder(mmtest.build(path, tmp_path / "out"))
    files = {n: mmtest.read_file(os.path.join(tmp_path, "out", n)) for n in os.listdir(tmp_path / "out")
             if n.endswith(".safetensors")}
    with mount(path, "--no-cache") as m:
        def reader(seed):
            names = sorted(files)[seed % len(files):] + sorted(files)[:seed % len(files)]
            errors = []
            for name in names:
                data, step = files[name], 4096 + 512 * seed
                with open(os.path.join(m.path, name), "rb") as f:
                    got = b"".join(os.pread(f.fileno(), step, off) for off in range(0, len(data), step))
                if got != data:
                    errors.append(name)
            return errors

        errors = mmtest.in_threads(8, reader)
    assert not errors, errors[:10]
    assert want, "the build wrote no tensors"


@pytest.mark.parametrize("form", ["strings", "paths"])
def test_passthrough_dict_form(tmp_path, mount, llama, adapter, form):
    base = llama()
    ad = adapter(base, ["q_proj", "v_proj", "down_proj"], r=8, alpha=16, seed=3)
    ref = {"model": base, "lora": ad} if form == "strings" else {"model": {"path": base}, "lora": {"path": ad}}
    _, got, out_cfg = check(tmp_path, mount, passthrough(ref))
    assert_lora_applied(got, base, ad)
    assert_base_config(out_cfg, base)
    # the same model as the string form
    string_form, _ = merge(tmp_path, mount, passthrough(plus(base, ad)), name="string")
    assert all(got[n].raw == string_form[n].raw for n in got)


def test_string_and_dict_forms_are_one_model(tmp_path, mount, llama, adapter):
    # linear appends base_model to the inputs unless it is listed: the mapping form in models: and the
    # string form as base_model are the same model, so there are two inputs, not three
    base, other = llama(), llama(1)
    ad = adapter(base, ["q_proj", "o_proj"], r=4, alpha=8)
    cfg = {"merge_method": "linear", "base_model": plus(base, ad),
           "models": [{"model": {"model": base, "lora": ad}, "parameters": {"weight": 0.25}},
                      {"model": other, "parameters": {"weight": 0.75}}]}
    expected, _, _ = check(tmp_path, mount, cfg)
    assert [len(p.sources) for p in expected.plan] == [2] * len(expected.plan)


def test_linear_with_another_model(tmp_path, mount, llama, adapter):
    base, other = llama(), llama(1)
    ad = adapter(base, ["q_proj", "k_proj", "gate_proj"], r=4, alpha=8)
    cfg = mmtest.method_config("linear", [(plus(base, ad), {"weight": 0.6}), (other, {"weight": 0.4})])
    _, _, out_cfg = check(tmp_path, mount, cfg)
    assert_base_config(out_cfg, base)


def test_task_arithmetic_base_and_two_adapters(tmp_path, mount, llama, adapter):
    # a common recipe: two LoRA fine-tunes of one base merged as task vectors over that base
    base = llama()
    ad1 = adapter(base, ["q_proj", "v_proj"], r=4, alpha=8, seed=1)
    ad2 = adapter(base, ["v_proj", "o_proj", "up_proj"], r=8, alpha=4, seed=2)
    cfg = mmtest.method_config("task_arithmetic", [(plus(base, ad1), {"weight": 1.0}),
                                                   (plus(base, ad2), {"weight": 0.5})], base=base)
    expected, got, out_cfg = check(tmp_path, mount, cfg)
    assert_base_config(out_cfg, base)
    assert len(expected.models) == 3
    # what neither adapter targets is the base
    src = st.read_folder(base)
    assert got["model.layers.0.mlp.down_proj.weight"].raw == src["model.layers.0.mlp.down_proj.weight"].raw
    assert got[Q0 + ".weight"].raw != src[Q0 + ".weight"].raw


def test_rslora(tmp_path, mount, llama, adapter):
    # scaling alpha / sqrt(r): 4 / sqrt(4) = 2 (q_proj), 4 / sqrt(1) = 4 (v_proj, rank_pattern); without
    # rslora it would be 1 and 4: the output tells them apart
    base = llama()
    ad = adapter(base, ["q_proj", "v_proj"], r=4, alpha=4, rslora=True, rank_pattern={"v_proj": 1})
    expected, got, _ = check(tmp_path, mount, passthrough(plus(base, ad)))
    assert_lora_applied(got, base, ad)
    plain = adapter(base, ["q_proj", "v_proj"], r=4, alpha=4, rank_pattern={"v_proj": 1})
    wrong = config_eval.evaluate(passthrough(plus(base, plain))).tensors
    assert not np.array_equal(wrong[Q0 + ".weight"][1], expected.tensors[Q0 + ".weight"][1])


def test_rank_and_alpha_patterns(tmp_path, mount, llama, adapter):
    # per module (first matching key in file order): layer 1 v_proj r 1 (scaling 8), layer 0 v_proj r 2
    # (4), q_proj r 8 in both layers (the later, more specific key never applies; scaling 1), o_proj
    # alpha 2 (0.5), layer 0 up_proj alpha 32 (8), layer 1 up_proj the defaults (2); a key matches whole
    # name components: p_proj is no module's (not up_proj's)
    base = llama()
    ad = adapter(base, ["q_proj", "v_proj", "o_proj", "up_proj"], r=4, alpha=8,
                 rank_pattern={"layers.1.self_attn.v_proj": 1, "v_proj": 2, "q_proj": 8,
                               "layers.1.self_attn.q_proj": 1},
                 alpha_pattern={"p_proj": 64, "o_proj": 2, "layers.0.mlp.up_proj": 32})
    parsed = lora_eval.read_adapter(ad)
    scalings = {m: parsed.scaling(m) for m in parsed.modules}
    assert scalings == {"model.layers.0.self_attn.q_proj": 1.0, "model.layers.1.self_attn.q_proj": 1.0,
                        "model.layers.0.self_attn.v_proj": 4.0, "model.layers.1.self_attn.v_proj": 8.0,
                        "model.layers.0.self_attn.o_proj": 0.5, "model.layers.1.self_attn.o_proj": 0.5,
                        "model.layers.0.mlp.up_proj": 8.0, "model.layers.1.mlp.up_proj": 2.0}
    _, got, _ = check(tmp_path, mount, passthrough(plus(base, ad)))
    assert_lora_applied(got, base, ad)


def test_fan_in_fan_out_gpt2_conv1d(tmp_path, mount, gpt2, adapter):
    # Conv1D weights are stored [in, out] (c_attn [32, 96], c_fc [32, 128], mlp.c_proj [128, 32]):
    # A is [r, in], B [out, r], and the delta is transposed
    ad = adapter(gpt2, ["c_attn", "c_proj", "c_fc"], r=4, alpha=8, fan_in_fan_out=True)
    _, got, out_cfg = check(tmp_path, mount, passthrough(plus(gpt2, ad)))
    assert_lora_applied(got, gpt2, ad)
    assert_base_config(out_cfg, gpt2)
    assert got["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)


def test_embedding_and_lm_head(tmp_path, mount, llama, adapter):
    # embed_tokens is an nn.Embedding (lora_embedding_A [r, 96], lora_embedding_B [32, r], delta
    # transposed); lm_head is a Linear [96, 32]
    base = llama()
    ad = adapter(base, ["embed_tokens", "lm_head", "q_proj"], r=4, alpha=8)
    names = lora_fixture.read_adapter_tensors(ad)
    assert names["base_model.model.model.embed_tokens.lora_embedding_A"][1] == (4, 96)
    _, got, out_cfg = check(tmp_path, mount, passthrough(plus(base, ad)))
    assert_lora_applied(got, base, ad)
    assert_base_config(out_cfg, base)


@pytest.mark.parametrize("base_dtype,adapter_dtype", [("bf16", "F32"), ("bf16", "F16"), ("bf16", "BF16"),
                                                      ("f16", "F32"), ("f32", "BF16")])
def test_base_and_adapter_dtypes(tmp_path, mount, llama, adapter, base_dtype, adapter_dtype):
    # the effective tensors keep the base's stored dtype, whatever the adapter's
    base = llama(0, base_dtype)
    ad = adapter(base, ["q_proj", "v_proj", "down_proj"], r=4, alpha=8, dtype=adapter_dtype)
    _, got, out_cfg = check(tmp_path, mount, passthrough(plus(base, ad)))
    assert {t.dtype for t in got.values()} == {arch_fixture.DTYPES[base_dtype]}
    assert_lora_applied(got, base, ad)
    assert_base_config(out_cfg, base)


@pytest.mark.parametrize("base_dtype,r,alpha,rslora", [("f32", 6, 8, False), ("bf16", 3, 2, True)])
def test_scaling_not_a_power_of_two(tmp_path, mount, llama, adapter, base_dtype, r, alpha, rslora):
    # B @ A is exact, then one float32 multiply by float32(scaling) (4/3; 2/sqrt(3) with rslora): still
    # bit for bit (scaling A or B first, or multiplying in double, would differ)
    base = llama(0, base_dtype)
    ad = adapter(base, ["q_proj", "v_proj"], r=r, alpha=alpha, rslora=rslora, any_scaling=True, seed=4)
    _, got, _ = check(tmp_path, mount, passthrough(plus(base, ad)))
    assert_lora_applied(got, base, ad)


@pytest.mark.parametrize("base_dtype", ["bf16", "f16"])
def test_random_values_within_1_ulp(tmp_path, mount, llama, adapter, base_dtype):
    # normal values, r 12, scaling 16 / 12: the float32 sums are not exact, so the order of the sum may
    # show in the last place
    base = llama(0, base_dtype)
    ad = adapter(base, ["q_proj", "v_proj", "up_proj"], r=12, alpha=16, exact=False, seed=5)
    _, got, _ = check(tmp_path, mount, passthrough(plus(base, ad)), exact=False)
    assert_lora_applied(got, base, ad)


def test_adapter_name_and_layers_to_transform(tmp_path, mount, llama, adapter):
    # `lora_A.default.weight` names (some PEFT versions), and an adapter of layer 1 only
    base = llama()
    ad = adapter(base, ["q_proj", "k_proj"], r=2, alpha=8, layers=[1], adapter_name="default")
    _, got, _ = check(tmp_path, mount, passthrough(plus(base, ad)))
    assert_lora_applied(got, base, ad)
    assert {m for m in lora_eval.read_adapter(ad).modules} == {"model.layers.1.self_attn.q_proj",
                                                                "model.layers.1.self_attn.k_proj"}


def test_hub_references(tmp_path, mount, llama, adapter):
    # both sides `org/name[@revision]` in the Hugging Face cache
    base = llama()
    ad = adapter(base, ["q_proj"], r=4, alpha=8)
    snap_base = mmtest.hf_cache_model(base, "loratest/base")
    snap_ad = mmtest.hf_cache_model(ad, "loratest/adapter", revision="v1")
    where = {"loratest/base": snap_base, "loratest/adapter@v1": snap_ad}
    _, got, _ = check(tmp_path, mount, passthrough("loratest/base+loratest/adapter@v1"), resolve=where.get)
    assert_lora_applied(got, base, ad)


# ---- bad adapters: refused at plan time ------------------------------------------------------------------

def plan_error(tmp_path, cfg):
    """The reference refuses cfg, and so must `mergemount plan`; returns the program's stderr."""
    with pytest.raises(config_eval.ConfigError):
        config_eval.evaluate(cfg)
    r = mmtest.mergemount("plan", mmtest.write_config(tmp_path, cfg), timeout=60)
    print(r.stderr)
    assert r.returncode != 0, f"mergemount plan accepted a config it must refuse:\n{r.stdout[:600]}..."
    assert "error" in r.stderr.lower(), r.stderr
    assert not mmtest.bad_stderr_lines(r.stderr.replace("mergemount: error:", "")), r.stderr
    return r.stderr


def assert_names(text, *words, case=True):
    for w in words:
        found = (w in text) if case else (w.lower() in text.lower())
        assert found, f"the error does not name {w!r}:\n{text}"


def shape_re(a, b):
    """A shape [a, b] as the message may write it: [a, b], (a, b), a x b."""
    return re.compile(rf"\b{a}\s*(,|x|×)\s*{b}\b")


def bad_adapter(tmp_path, llama, adapter, **config):
    """(base, adapter folder) of a good q_proj/v_proj adapter whose adapter_config.json gets `config`."""
    base = llama()
    ad = adapter(base, ["q_proj", "v_proj"], r=4, alpha=8)
    if config:
        lora_fixture.edit_config(ad, **config)
    return base, ad


@pytest.mark.parametrize("peft_type", ["IA3", "ADALORA", "LOHA"])
def test_refuses_other_peft_types(tmp_path, llama, adapter, peft_type):
    base, ad = bad_adapter(tmp_path, llama, adapter, peft_type=peft_type)
    assert_names(plan_error(tmp_path, passthrough(plus(base, ad))), peft_type)


@pytest.mark.parametrize("key,value,words", [
    ("use_dora", True, ["dora"]),
    ("bias", "all", ["bias"]),
    ("modules_to_save", ["lm_head"], ["modules_to_save"]),
    ("rank_pattern", {"q_proj|v_proj": 2}, ["rank_pattern", "not supported yet"]),
])
def test_refuses_unsupported_config(tmp_path, llama, adapter, key, value, words):
    base, ad = bad_adapter(tmp_path, llama, adapter, **{key: value})
    assert_names(plan_error(tmp_path, passthrough(plus(base, ad))), *words, case=False)


def test_refuses_missing_safetensors(tmp_path, llama, adapter):
    base, ad = bad_adapter(tmp_path, llama, adapter)
    os.remove(os.path.join(ad, "adapter_model.safetensors"))
    assert_names(plan_error(tmp_path, passthrough(plus(base, ad))), "adapter_model.safetensors", ad)


def test_refuses_pickle_only(tmp_path, llama, adapter):
    base, ad = bad_adapter(tmp_path, llama, adapter)
    os.rename(os.path.join(ad, "adapter_model.safetensors"), os.path.join(ad, "adapter_model.bin"))
    text = plan_error(tmp_path, passthrough(plus(base, ad)))
    assert_names(text, "adapter_model.bin")
    assert_names(text, "convert", case=False)


def test_refuses_a_without_b(tmp_path, llama, adapter):
    base, ad = bad_adapter(tmp_path, llama, adapter)
    lora_fixture.edit_tensors(ad, lambda t: {n: v for n, v in t.items()
                                             if n != f"base_model.model.{Q0}.lora_B.weight"})
    text = plan_error(tmp_path, passthrough(plus(base, ad)))
    assert_names(text, Q0)
    assert re.search(r"lora_B|\bB\b", text), f"the error does not say the B matrix is missing:\n{text}"


def test_refuses_rank_other_than_r(tmp_path, llama, adapter):
    # the tensors have rank 4, adapter_config.json says r: 2
    base, ad = bad_adapter(tmp_path, llama, adapter, r=2)
    text = plan_error(tmp_path, passthrough(plus(base, ad)))
    assert re.search(r"model\.layers\.[01]\.self_attn\.[qv]_proj", text), f"the error names no module:\n{text}"
    assert_names(text, "rank", case=False)


def test_refuses_shape_that_does_not_fit(tmp_path, llama, adapter):
    # k_proj is [16, 32]; a B of [32, 4] makes a [32, 32] delta (a q_proj adapter renamed)
    base = llama()
    ad = adapter(base, ["q_proj"], r=4, alpha=8)
    lora_fixture.edit_tensors(ad, lambda t: {n.replace(".q_proj.", ".k_proj.") if ".layers.1." in n else n: v
                                             for n, v in t.items()})
    text = plan_error(tmp_path, passthrough(plus(base, ad)))
    assert_names(text, "model.layers.1.self_attn.k_proj")
    assert shape_re(16, 32).search(text), f"the error does not give the base's shape [16, 32]:\n{text}"
    assert shape_re(32, 32).search(text) or shape_re(32, 4).search(text), \
        f"the error does not give the adapter's shape ([32, 32], or B's [32, 4]):\n{text}"


def test_refuses_module_absent_from_base(tmp_path, llama, adapter):
    # an adapter of a deeper model: layer 5 on a 2-layer base
    base, ad = bad_adapter(tmp_path, llama, adapter)
    lora_fixture.edit_tensors(ad, lambda t: {n.replace(".layers.1.", ".layers.5."): v for n, v in t.items()})
    assert_names(plan_error(tmp_path, passthrough(plus(base, ad))), "model.layers.5.self_attn")


def test_refuses_other_tensors(tmp_path, llama, adapter):
    # what modules_to_save would have saved, with modules_to_save: null
    base, ad = bad_adapter(tmp_path, llama, adapter)
    extra = st.read_folder(base)["lm_head.weight"]

    def add(t):
        t["base_model.model.lm_head.weight"] = (extra.dtype, extra.shape, extra.raw)
        return t
    lora_fixture.edit_tensors(ad, add)
    assert_names(plan_error(tmp_path, passthrough(plus(base, ad))), "lm_head")


def test_refuses_two_plus_signs(tmp_path, llama, adapter):
    base, ad = bad_adapter(tmp_path, llama, adapter)
    ad2 = adapter(base, ["o_proj"], r=4, alpha=8)
    ref = f"{base}+{ad}+{ad2}"
    assert_names(plan_error(tmp_path, passthrough(ref)), ref)


def test_refuses_missing_adapter_folder(tmp_path, llama):
    missing = str(tmp_path / "no-such-adapter")
    assert_names(plan_error(tmp_path, passthrough(plus(llama(), missing))), missing)
