"""Tokenizer merging as mergekit does it: `tokenizer_source: base | union | <model>`, the `tokenizer:
{source, tokens, pad_to_multiple_of}` block, the embedding remap (PermutedEmbeddings), the output
vocab_size and tokenizer files, and `chat_template`. Pure Python + numpy, an independent reference
for the tests (issue 12), written from reading:

  * mergekit (arcee-ai/mergekit a6e4028): tokenizer/build.py (get_vocab_size, get_stripped_tokenizer,
    build_union_tokenizer, build_tokenizer), tokenizer/embed.py (PermutedEmbeddings),
    tokenizer/config.py, plan.py (PermutedEmbeddings wraps the inputs of `is_embed` weights only),
    merge.py (_update_config_vocab, _set_chat_template), config.py (referenced_models);
  * transformers 5.3 (mergekit 0.1.4 requires transformers>=5.0): tokenization_utils_base.py
    (save_pretrained), tokenization_utils_tokenizers.py, utils/chat_template_utils.py, and, for
    the view of a tokenizer folder, the files listed in tokenizer_files.py;
  * huggingface/tokenizers (Rust, 0.23): AddedVocabulary::add_tokens (the id a new token gets);
  * torch's CPU kernels for the embedding arithmetic (see remap_embedding and torch_mean_rows).

API (every function documents the rules it mirrors; transformers' view of a tokenizer folder is in
tokenizer_files.py and re-exported here):

    view = vocab_view(folder)                 # transformers' view of a folder's tokenizer, or None
    settings = tokenizer_settings(cfg)        # None without a tokenizer option
    out = build_vocabulary(cfg, models)       # models: {ref: folder} in config order
    out.vocab, out.added, out.perms           # {token: id} in id order, {id: AddedToken}, {ref: {new: old}}
    rows = remap_embedding(tensors, out.perms, out.vocab, settings.tokens, settings.pad_to_multiple_of,
                           base_model, original_vocabs=out.original_vocabs)
    expected_vocab_size(out), expected_config(out, donor_config), expected_served(out, chat),
    check_served(folder, expected)
    chat = chat_template(cfg, models)         # None, or ChatTemplate(kind, text, name)
    render(text, messages, ...), render_builtin(name, messages, ...)

Errors: VocabError for what mergekit refuses or crashes on (the program must refuse it too);
config_eval turns it into its ConfigError.

Choices where mergekit is not deterministic or crashes (each is marked "Choice:" below):
  * model order: mergekit's referenced_models() is a set (hash order); here the config order of
    config_eval.referenced() (D1/D2), with the tokenizer base first;
  * union order of new normal tokens inside one model: mergekit iterates get_vocab(), a Rust hash map
    whose order changes from run to run; here the model's id order;
  * a ZeroEmbedding (explicit `{kind: zero}`, or a token no input model has) gives zeros, as the code
    means to; mergekit a6e4028 raises UnboundLocalError in compute_default_embedding there;
  * mixed input dtypes without `dtype:`: the remapped rows take the dtype of the first input in D1
    order (mergekit: the first model of a set).
"""

import json
import os
from collections import Counter
from typing import NamedTuple, Optional

import numpy as np

import methods
from safetensors_io import round_to
from tokenizer_files import (FLAG_KEYS, SPECIAL_ATTRS, SPM_BYTE, SPM_CONTROL, SPM_NORMAL,  # noqa: F401
                             SPM_UNKNOWN, SPM_UNUSED, SPM_USER_DEFINED, AddedToken, Backend, SpmModel,
                             VocabError, VocabView, _load_json, _token_from_state, read_spm,
                             read_tokenizer_json, vocab_view)


# ---- the vocab_size config key ---------------------------------------------------------------------

def vocab_key(config, key=None):
    """Where config.json keeps the vocabulary size. mergekit reads `arch_info.vocab_size_config_key or
    "vocab_size"` (build.py get_vocab_size; the architecture JSONs say `text_config.vocab_size` for
    gemma3vl, llama4, mistral3 and qwen3_vl_dense). Choice: `key` when the caller gives it (as
    config_eval takes a module table), else `vocab_size` when the top level has it, else
    `text_config.vocab_size` when that has it, else None."""
    if key:
        return key
    if isinstance(config.get("vocab_size"), int):
        return "vocab_size"
    if isinstance(config.get("text_config"), dict) and isinstance(config["text_config"].get("vocab_size"), int):
        return "text_config.vocab_size"
    return None


def config_vocab_size(config, key=None):
    """get_vocab_size: the integer at the key, or None (mergekit: None when the attribute is missing;
    transformers' class defaults are not modelled)."""
    key = vocab_key(config, key)
    if not key:
        return None
    obj = config
    for part in key.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj if type(obj) is int else None


def set_config_vocab_size(config, n, key=None):
    """_update_config_vocab: set_config_value at the same key (`vocab_size` when none is known)."""
    key = vocab_key(config, key) or "vocab_size"
    *parents, last = key.split(".")
    obj = config
    for part in parents:
        if not isinstance(obj.get(part), dict):
            raise VocabError(f"config.json has no {'.'.join(parents)} to hold {last}")
        obj = obj[part]
    obj[last] = n


# ---- the config's tokenizer settings ---------------------------------------------------------------

class ModelTokenSource(NamedTuple):
    model: str
    token_id: Optional[int] = None
    token: Optional[str] = None


ZERO = "zero"   # ZeroEmbedding


class TokenCfg(NamedTuple):
    """TokenEmbeddingConfig: source is a model ref (str), ModelTokenSource, ZERO or None."""
    source: object = None
    force: bool = False


class Settings(NamedTuple):
    source: str                     # "base", "union" or a model reference
    tokens: dict                    # {token: TokenCfg} in config order
    pad_to_multiple_of: Optional[int]


def _token_cfg(token, entry):
    if not isinstance(entry, dict):
        raise VocabError(f"tokenizer.tokens[{token!r}] must be a mapping with source and force")
    unknown = set(entry) - {"source", "force"}
    if unknown:
        raise VocabError(f"tokenizer.tokens[{token!r}]: unknown keys {sorted(unknown)}")
    force = entry.get("force", False)
    if not isinstance(force, bool):
        raise VocabError(f"tokenizer.tokens[{token!r}].force must be true or false")
    src = entry.get("source")
    if src is None:
        # mergekit: compute_default_embedding raises NotImplementedError for a source of None
        raise VocabError(f"tokenizer.tokens[{token!r}] needs a source (a model, model_token or zero)")
    if isinstance(src, str):
        return TokenCfg(src, force)
    if isinstance(src, dict) and src.get("kind") == "zero":
        if set(src) != {"kind"}:
            raise VocabError(f"tokenizer.tokens[{token!r}]: a zero source takes no other keys")
        return TokenCfg(ZERO, force)
    if isinstance(src, dict) and src.get("kind") == "model_token":
        if not isinstance(src.get("model"), str):
            raise VocabError(f"tokenizer.tokens[{token!r}]: model_token needs a model")
        tid, tok = src.get("token_id"), src.get("token")
        if (tid is None) == (tok is None):
            raise VocabError(f"tokenizer.tokens[{token!r}]: model_token needs exactly one of token_id and token")
        if tid is not None and type(tid) is not int:
            raise VocabError(f"tokenizer.tokens[{token!r}]: token_id must be an integer")
        if tok is not None and not isinstance(tok, str):
            raise VocabError(f"tokenizer.tokens[{token!r}]: token must be a string")
        return TokenCfg(ModelTokenSource(src["model"], tid, tok), force)
    raise VocabError(f"tokenizer.tokens[{token!r}]: source must be a model, {{kind: zero}} or "
                     "{kind: model_token, model, token_id | token}")


def tokenizer_settings(cfg):
    """The tokenizer option of a config (config.py MergeConfiguration + tokenizer/config.py), or None.
    `tokenizer_source` and `tokenizer` together are an error (validate_tokenizer); `tokenizer.source`
    defaults to union; `tokens:` and `pad_to_multiple_of` exist only in the `tokenizer:` block
    (plan.py passes them only from there)."""
    ts, tb = cfg.get("tokenizer_source"), cfg.get("tokenizer")
    if ts is not None and tb is not None:
        raise VocabError("Cannot specify both tokenizer_source and tokenizer")
    if ts is not None:
        if not isinstance(ts, str) or not ts:
            raise VocabError("tokenizer_source must be base, union or a model")
        return Settings(ts, {}, None)
    if tb is None:
        return None
    if not isinstance(tb, dict):
        raise VocabError("tokenizer: must be a mapping with source, tokens, pad_to_multiple_of")
    unknown = set(tb) - {"source", "tokens", "pad_to_multiple_of"}
    if unknown:
        raise VocabError(f"tokenizer: unknown keys {sorted(unknown)}")
    source = tb.get("source", "union")
    if not isinstance(source, str) or not source:
        raise VocabError("tokenizer.source must be base, union or a model")
    tokens = tb.get("tokens") or {}
    if not isinstance(tokens, dict):
        raise VocabError("tokenizer.tokens must map tokens to {source, force}")
    pad = tb.get("pad_to_multiple_of")
    if pad is not None and (type(pad) is not int or pad <= 0):
        raise VocabError("tokenizer.pad_to_multiple_of must be a positive integer")
    return Settings(source, {str(t): _token_cfg(t, e) for t, e in tokens.items()}, pad)


# ---- the output vocabulary (build.py) ----------------------------------------------------------------

class OutputVocab:
    """What build_vocabulary returns (build.py TokenizerInfo plus what the tests need):
      vocab            {token: id} of the output tokenizer, in id order
      added            {id: AddedToken} of the output tokenizer (its added_tokens_decoder)
      backend          the output tokenizer's Backend (model section + added vocabulary)
      perms            {ref: {new_id: old_id or -1}}; a new id without an entry is mergekit's
                       "token at an id >= the model's vocab_size" (a KeyError later, see remap)
      original_vocabs  {ref: {token: id}} of the models whose tokenizer loaded (the base's stripped)
      views            {ref: VocabView or None}
      base             the tokenizer base's reference
      donor            the reference whose tokenizer is the output's (base for base/union)
      stripped         tokens removed from the base for base/union (ids >= its vocab_size)
    """


def _model_order(cfg, models):
    """Choice (D1/D2): the models in config order; the tokenizer base is base_model, else the first."""
    refs = list(models)
    base = cfg.get("base_model") or (refs[0] if refs else None)
    if base is None:
        raise VocabError("No models referenced")
    if base not in models:
        raise VocabError(f"base model {base} is not among the models")
    return base, refs


def stripped(view, config, key=None):
    """get_stripped_tokenizer: the view without every token whose id >= the config's vocab_size (or
    len(get_vocab()) when the config has none). Nothing to strip: the tokenizer as is. Otherwise only a
    BPE tokenizer.json can be stripped (RuntimeError in mergekit for a non-fast or non-BPE one). The
    loaded tokenizer is serialized (to_str: the loaded model vocabulary and every added token, those
    added at load time included, sorted by id), its model vocab entries and added tokens with those
    ids are dropped, and every merge with a dropped token as one of its two parts; then
    Tokenizer.from_str, which re-adds the remaining added tokens in id order (and fails when a kept
    merge produces a dropped token). The special-token settings stay the loaded tokenizer's.
    Returns (view, [stripped tokens])."""
    size = config_vocab_size(config, key) or len(view.vocab)
    unused = [t for t, i in view.vocab.items() if i >= size]
    if not unused:
        return view, []
    kind = getattr(view.backend, "kind", None)
    if view.source != "tokenizer.json" or kind != "BPE":
        raise VocabError(f"tokenizer of {view.folder} has tokens with ids >= vocab_size {size} and is "
                         f"{'a ' + str(kind) if kind else 'not a BPE tokenizer.json'} tokenizer: mergekit "
                         "strips only BPE tokenizers")
    unused_set = set(unused)

    def keep(m):
        if isinstance(m, str) and m.count(" ") == 1:
            parts = m.split(" ")
        elif isinstance(m, list):
            parts = m
        else:
            raise VocabError(f"Unexpected merge format: {m!r}")
        return not any(p in unused_set for p in parts)

    model = dict(view.backend.model_json)
    model["vocab"] = {t: i for t, i in sorted(view.backend.model_vocab.items(), key=lambda kv: kv[1])
                      if t not in unused_set}
    model["merges"] = [m for m in model.get("merges", []) if keep(m)]
    for m in model["merges"]:
        a, b = m.split(" ") if isinstance(m, str) else m
        if a + b in unused_set:     # (a continuing_subword_prefix on b is not modelled)
            # only the merge's two parts are checked; tokenizers' BpeBuilder then refuses a merge whose
            # product is not in the vocabulary (MergeTokenOutOfVocabulary), so from_str fails
            raise VocabError(f"tokenizer of {view.folder}: stripping {a + b!r} (id >= vocab_size {size}) "
                             f"leaves the merge {a!r} {b!r} without its product (mergekit fails in from_str)")
    b = Backend(model["vocab"], model)
    b.kind = "BPE"
    kept = [t for i, t in sorted(view.backend.added_r.items()) if i < size]
    b.json = dict(view.backend.json, model=model,
                  added_tokens=[dict(id=i, **t.state()) for i, t in sorted(view.backend.added_r.items()) if i < size])
    b.add_tokens(kept)
    out = VocabView(b, view.special, view.extra_special, view.chat_template, view.config, view.source, view.folder)
    return out, unused


def build_vocabulary(cfg, models, vocab_keys=None, settings=None, resolve=None):
    """The output vocabulary and the per-model permutations (build.py build_tokenizer).

    models: {ref: folder} of every referenced model, in config order. vocab_keys: {ref: config key}
    (see vocab_key) for models whose key is not the default rule's. resolve(ref) -> folder for a
    tokenizer_source outside the merge (default: the reference is the folder).

      * base = base_model or the first model (Choice: config order; mergekit: list(set)[0]); its
        tokenizer is stripped (see stripped). The others load as they are; a model whose folder has
        no tokenizer is "assumed the same as the base" (its permutation uses the base's vocabulary).
      * source base: the stripped base. source <model>: that model's tokenizer as it loads (not
        stripped; it may be a model outside the merge). source union (build_union_tokenizer):
          - per model (base first, then config order), with n = its config vocab_size or else its
            tokenizer's vocab_size (the model vocabulary without added tokens): every token with id
            < n goes into a list of normal tokens (first occurrence kept; Choice: in id order,
            mergekit's order is a hash map's), and every added token with id < n into an ordered map
            of added tokens, the first definition winning;
          - the output starts as the stripped base; every listed token that is neither an added
            token nor in the base gets add_tokens(str) (normalized=True, special=False, a new id);
            then every added token is add_tokens(AddedToken) with its flags (a content already
            present keeps its id and takes these flags).
      * `tokens:` keys: add_tokens(str) each (one call per token), in config order.
      * permutation of every referenced model: for each output token, its id in the model's
        vocabulary (the base's stripped one; the base's for a model without tokenizer), -1 when
        absent, and no entry when that id >= the model's vocab_size (config, else len(vocab)).
    """
    settings = settings or tokenizer_settings(cfg)
    if settings is None:
        return None
    vocab_keys = vocab_keys or {}
    base, refs = _model_order(cfg, models)

    def config_of(ref):
        path = os.path.join(models[ref], "config.json")
        return _load_json(path) if os.path.isfile(path) else {}

    configs = {ref: config_of(ref) for ref in refs}
    views = {ref: vocab_view(models[ref]) for ref in refs}
    if views[base] is None:
        raise VocabError(f"base model {base} has no tokenizer (tokenizer.json or tokenizer.model)")
    base_view, stripped_tokens = stripped(views[base], configs[base], vocab_keys.get(base))
    loaded = {base: base_view}
    for ref in refs:
        if ref != base and views[ref] is not None:
            loaded[ref] = views[ref]

    src = settings.source
    if src == "base":
        out_backend, donor = base_view.backend.copy(), base
    elif src == "union":
        out_backend, donor = _union(base, base_view, loaded, configs, vocab_keys), base
    else:
        view = views[src] if src in models else vocab_view((resolve or (lambda r: r))(src))
        if view is None:
            raise VocabError(f"tokenizer_source {src}: no tokenizer in its folder")
        out_backend, donor = view.backend.copy(), src
    for t in settings.tokens:       # one add_tokens call per token, as build_tokenizer does
        out_backend.add_tokens([AddedToken.py(t)])

    out = OutputVocab()
    out.backend = out_backend
    out.vocab = dict(sorted(out_backend.get_vocab().items(), key=lambda kv: (kv[1], kv[0])))
    out.added = out_backend.added_tokens_decoder()
    out.views = views
    out.loaded = loaded
    out.base = base
    out.donor = donor
    out.donor_view = base_view if donor == base else view
    out.stripped = stripped_tokens
    out.configs = configs
    out.settings = settings
    out.original_vocabs = {ref: dict(v.vocab) for ref, v in loaded.items()}
    out.perms = {}
    for ref in refs:
        mvocab = loaded[ref].vocab if ref in loaded else loaded[base].vocab
        n = config_vocab_size(configs[ref], vocab_keys.get(ref))
        if n is None:
            n = len(mvocab)
        p = {}
        for tok, new in out.vocab.items():
            old = mvocab.get(tok)
            if old is None:
                p[new] = -1
            elif old < n:
                p[new] = old
            # else: no entry (build.py: "has index ... (padding?)", `continue`)
        out.perms[ref] = p
    return out


def _union(base, base_view, loaded, configs, vocab_keys):
    normal, added = {}, {}
    for ref, view in loaded.items():     # base first: `tokenizers = {base_model: tokenizer_base}`
        n = config_vocab_size(configs[ref], vocab_keys.get(ref)) or view.vocab_size
        for tok, idx in view.vocab.items():
            if idx < n:
                normal.setdefault(tok, idx)
        for idx, info in view.added.items():
            if idx < n and info.content not in added:
                added[info.content] = info
    res = base_view.backend.copy()
    for tok in normal:
        if tok in added or tok in base_view.vocab:
            continue
        res.add_tokens([AddedToken.py(tok)])
    for info in added.values():
        res.add_tokens([info])
    return res


# ---- the embedding remap (embed.py PermutedEmbeddings) ----------------------------------------------

def padded_size(n, multiple):
    """PermutedEmbeddings / _update_config_vocab: n rounded up to a multiple when it is not one."""
    if multiple and n % multiple:
        return (n // multiple + 1) * multiple
    return n


def expected_vocab_size(out, settings=None):
    """config.json's vocab_size (merge.py _update_config_vocab): len(get_vocab()), padded."""
    settings = settings or out.settings
    return padded_size(len(out.vocab), settings.pad_to_multiple_of)


def expected_config(out, donor_config, settings=None, key=None):
    """The donor's config.json with the vocabulary size set at its key."""
    cfg = json.loads(json.dumps(donor_config))
    set_config_vocab_size(cfg, expected_vocab_size(out, settings), key)
    return cfg


def _ceil_log2(x):
    """at::native::utils::CeilLog2: 1 for x <= 2, else ceil(log2(x))."""
    return 1 if x <= 2 else (int(x) - 1).bit_length()


def _multi_row_sum(cols):
    """aten/src/ATen/native/cpu/SumKernel.cpp multi_row_sum over axis 0 of a float32 array (rows summed,
    every column its own accumulator): four levels of partial sums, level_step = 2^max(4,
    CeilLog2(n)/4) rows per chunk, carried upwards after each chunk; float32 throughout."""
    n = cols.shape[0]
    num_levels = 4
    level_power = max(4, _ceil_log2(n) // num_levels)
    level_step = 1 << level_power
    level_mask = level_step - 1
    acc = np.zeros((num_levels,) + cols.shape[1:], np.float32)
    i = 0
    with np.errstate(over="ignore", invalid="ignore"):
        while i + level_step <= n:
            for _ in range(level_step):
                acc[0] = acc[0] + cols[i]
                i += 1
            for j in range(1, num_levels):
                acc[j] = acc[j] + acc[j - 1]
                acc[j - 1] = 0
                if i & (level_mask << (j * level_power)):
                    break
        while i < n:
            acc[0] = acc[0] + cols[i]
            i += 1
        for j in range(1, num_levels):
            acc[0] = acc[0] + acc[j]
    return acc[0]


def _row_sum(cols):
    """SumKernel.cpp row_sum: rows split four ways (row i goes to partial i % 4 for the first
    4*floor(n/4) rows, each partial a multi_row_sum), the leftover rows added to partial 0, then
    p0 + p1, + p2, + p3."""
    n = cols.shape[0]
    n4 = n // 4
    parts = _multi_row_sum(cols[:4 * n4].reshape((n4, 4) + cols.shape[1:])) if n4 else \
        np.zeros((4,) + cols.shape[1:], np.float32)
    p0 = parts[0]
    with np.errstate(over="ignore", invalid="ignore"):
        for i in range(4 * n4, n):
            p0 = p0 + cols[i]
        for k in range(1, 4):
            p0 = p0 + parts[k]
    return p0


def torch_sum_rows(x, vec=8):
    """torch.sum(x, dim=0) of a C-contiguous float32 [N, H] tensor on the CPU, single-threaded:
    cascade_sum's "contiguous outer reduction" (vectorized_outer_sum) when H >= vec: columns in
    groups of 4*vec summed by multi_row_sum, then groups of vec by row_sum, then the last H mod vec
    columns by row_sum; H < vec: scalar_outer_sum (groups of 4 columns by multi_row_sum, the rest
    by row_sum). vec = floats per vector register: 8 with AVX2 (and ATEN_CPU_CAPABILITY=avx2), 16
    with AVX512. Not modelled: parallel_reduce splits the columns over threads when N*H >= 32768,
    which can move column group boundaries."""
    x = np.ascontiguousarray(x, np.float32)
    n, h = x.shape
    out = np.zeros(h, np.float32)
    j = 0
    if h >= vec:
        while j + 4 * vec <= h:
            out[j:j + 4 * vec] = _multi_row_sum(x[:, j:j + 4 * vec])
            j += 4 * vec
        while j + vec <= h:
            out[j:j + vec] = _row_sum(x[:, j:j + vec])
            j += vec
        if j < h:
            out[j:] = _row_sum(x[:, j:])
    else:
        while j + 3 < h:
            out[j:j + 4] = _multi_row_sum(x[:, j:j + 4])
            j += 4
        if j < h:
            out[j:] = _row_sum(x[:, j:])
    return out


def torch_mean_rows(dt, x, vec=8, order="torch"):
    """torch.mean(x, dim=0) of a [N, H] tensor of dtype dt on the CPU (ReduceOps.cpp mean_out, CPU
    branch): sum_out with dtype float32 for bf16/f16 (the input cast to float32 first) or dt for
    float32, then div_(N) in float32, then one rounding to dt ("cast_fp32 -> sum -> div ->
    cast_bf16_or_fp16"). order="torch": the sum in cascade_sum's order (torch_sum_rows);
    order="double": D4's alternative, a float64 sum divided in float64 and rounded once to float32
    and then dt (for a program that keeps D4; within one rounding of torch's)."""
    x = np.asarray(x, np.float32)
    n = x.shape[0]
    if order == "double":
        return round_to(dt, (x.astype(np.float64).sum(axis=0) / n).astype(np.float32))
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return round_to(dt, torch_sum_rows(x, vec) / np.float32(n))


def remap_embedding(tensors, perms, vocab, token_cfg=None, pad_to_multiple_of=None, base_model=None,
                    original_vocabs=None, dtype=None, vec=8, mean_order="torch"):
    """PermutedEmbeddings.execute: per model the [V_out (padded), H] matrix the merge method sees.

    tensors: {ref: (dtype, float32 values [rows, H])} of the tensor's inputs, in D1 order (one entry
    per model). perms, vocab: from build_vocabulary. token_cfg: {token: TokenCfg}. Returns {ref:
    (D, values)} for every input (and the base).

    models = the inputs plus base_model (mergekit: a set; Choice: D1 order; a base that is not an
    input is an error, mergekit fails with KeyError on its tensor). dtype: the config's `dtype:`, to
    which GatherTensors converts every input on load; D = that, else the first input's dtype (a row of
    another dtype is rounded to D when stored, and `acc += row` is computed in float32 and rounded to
    D). H must agree (assert in mergekit).
    Sources, per output token (assign_embedding_sources then compute_default_embedding):
      * a `tokens:` entry: its source (a model: that model's row of the token, which it must have;
        model_token: row token_id of that model's tensor, or the row of `token` in its original
        vocabulary, range-checked; zero);
      * else present (p >= 0) in exactly one model: that model's row; in none: zeros (Choice: see
        the module docstring); else the base's row when the base has it; else the mean over the
        models that have it, torch's way in D: acc = 0; acc = round(acc + row) per model in order;
        acc = round(acc / count).
    Row t of each model: its own row p[t] when it has the token and the token's entry is not
    `force`; else the source row (cast to D); a token with neither stays zero.
    Padding: V_out = len(vocab) rounded up to pad_to_multiple_of; rows len(vocab).. = torch.mean of
    that model's rows [:len(vocab)] (torch_mean_rows, with `vec`/`mean_order`).
    """
    token_cfg = dict(token_cfg or {})
    if dtype:
        tensors = {m: (dtype, methods.cast(dtype, t)) for m, t in tensors.items()}
    models = list(tensors)
    if base_model is not None and base_model not in tensors:
        raise VocabError(f"base model {base_model} is not an input of this embedding (mergekit: KeyError)")
    if not models:
        raise VocabError("no inputs")
    D = dtype or tensors[models[0]][0]
    H = {v.shape[1] for _, v in tensors.values()}
    if len(H) != 1 or any(v.ndim != 2 for _, v in tensors.values()):
        raise VocabError(f"Embedding sizes must match: {sorted(v.shape for _, v in tensors.values())}")
    H = H.pop()
    n_vocab = len(vocab)
    n_out = padded_size(n_vocab, pad_to_multiple_of)
    if vocab and max(vocab.values()) >= n_out:
        raise VocabError(f"token id {max(vocab.values())} does not fit {n_out} embedding rows "
                         "(the output vocabulary has holes; mergekit: IndexError)")
    for m in models:
        if m not in perms:
            raise VocabError(f"model {m} has no permutation (not a referenced model)")

    def p(m, tid, token):
        try:
            return perms[m][tid]
        except KeyError:
            raise VocabError(f"{m}: token {token!r} is in its tokenizer at an id >= its vocab_size "
                             "(mergekit: KeyError in PermutedEmbeddings)")

    def row(m, idx):
        dt, v = tensors[m]
        if not 0 <= idx < v.shape[0]:
            raise VocabError(f"{m}: row {idx} is outside its embedding of {v.shape[0]} rows")
        return dt, v[idx]

    # assign_embedding_sources
    average = []
    cfgs = dict(token_cfg)
    for token, tid in vocab.items():
        if token in cfgs:
            continue
        has = [p(m, tid, token) >= 0 for m in models]
        if sum(has) == 1:
            cfgs[token] = TokenCfg(models[has.index(True)])
        elif sum(has) == 0:
            cfgs[token] = TokenCfg(ZERO)
        elif base_model is not None and p(base_model, tid, token) >= 0:
            cfgs[token] = TokenCfg(base_model)
        else:
            average.append(token)

    defaults = {}
    for token in average:
        tid = vocab[token]
        acc, count = np.zeros(H, np.float32), 0
        for m in models:
            if p(m, tid, token) < 0:
                continue
            acc = methods.add(D, acc, row(m, p(m, tid, token))[1])
            count += 1
        defaults[token] = (D, methods.div(D, acc, np.float32(count)))
    for token, tid in vocab.items():
        if token in defaults:
            continue
        c = cfgs[token]
        if c.source == ZERO:
            defaults[token] = (D, np.zeros(H, np.float32))
        elif isinstance(c.source, ModelTokenSource):
            m = c.source.model
            if m not in perms or m not in tensors:
                raise VocabError(f"Model {m} referenced but not part of merge (tokens: {token!r})")
            idx = c.source.token_id
            if idx is None:
                ov = (original_vocabs or {}).get(m)
                if ov is None or c.source.token not in ov:
                    raise VocabError(f"Token {c.source.token!r} not found in model {m}")
                idx = ov[c.source.token]
            if not 0 <= idx < tensors[m][1].shape[0]:
                raise VocabError(f"Token ID {idx} out of range for model {m}")
            defaults[token] = row(m, idx)
        else:
            m = c.source
            if m not in perms or m not in tensors:
                raise VocabError(f"Model {m} referenced but not part of merge (tokens: {token!r})")
            if p(m, tid, token) < 0:
                raise VocabError(f"Token {token!r} not found in model {m}")
            defaults[token] = row(m, p(m, tid, token))

    result = {}
    for m in models:
        new = np.zeros((n_out, H), np.float32)
        for token, tid in vocab.items():
            force = token in cfgs and cfgs[token].force
            own = p(m, tid, token)
            if own >= 0 and not force:
                new[tid] = methods.cast(D, row(m, own))
            elif token in defaults:
                new[tid] = methods.cast(D, defaults[token])
        if n_out > n_vocab:
            new[n_vocab:] = torch_mean_rows(D, new[:n_vocab], vec, mean_order)
        result[m] = (D, new)
    return result


# ---- the served tokenizer files ---------------------------------------------------------------------

def expected_served(out, chat=None):
    """What the output folder's tokenizer must say, as far as transformers' save_pretrained pins it
    (tokenization_utils_base.py save_pretrained, TokenizersBackend._save_pretrained):
      tokenizer.json     the output backend: `model` = the donor's model section (the base's stripped
                         one for base/union; None for a sentencepiece donor, whose conversion is not
                         pinned), `added_tokens` = every added token sorted by id as
                         {id, content, single_word, lstrip, rstrip, normalized, special}
                         (AddedVocabulary's Serialize);
      tokenizer_config   added_tokens_decoder {str(id): flags} (transformers 5 drops the key for
                         TokenizersBackend; 4.x writes and reads it), the donor's named special tokens
                         (contents), chat_template when one is set (transformers 5 writes it to
                         chat_template.jinja instead);
      special_tokens_map the named special tokens (written by transformers 4.x, not by 5);
      vocab              the view a reader must get back: {token: id} and {id: AddedToken}.
    """
    donor = out.donor_view
    special = {k: (v.content if isinstance(v, AddedToken) else v) for k, v in donor.special.items() if v}
    model = out.backend.model_json
    return {
        "vocab": dict(out.vocab),
        "added": dict(out.added),
        "tokenizer.json": {"model": model,
                           "added_tokens": [dict(id=i, **t.state()) for i, t in out.added.items()]},
        "tokenizer_config.json": {"added_tokens_decoder": {str(i): t.state() for i, t in out.added.items()},
                                  "special": special,
                                  "chat_template": chat},
        "special_tokens_map.json": special,
    }


def check_served(folder, expected):
    """Differences between a served tokenizer folder and expected_served(): the folder read back with
    vocab_view must give the same vocabulary and added tokens; tokenizer_config.json's
    added_tokens_decoder (when present) must list exactly the added tokens; the named special tokens
    and the chat template must match. Returns a list of problems (empty: fine)."""
    problems = []
    view = vocab_view(folder)
    if view is None:
        return [f"{folder}: no tokenizer.json or tokenizer.model"]
    if view.vocab != expected["vocab"]:
        want, got = expected["vocab"], view.vocab
        diff = sorted(set(want.items()) ^ set(got.items()), key=lambda kv: kv[1])[:6]
        problems.append(f"vocabulary differs ({len(got)} tokens, want {len(want)}): e.g. {diff}")
    if view.added != expected["added"]:
        problems.append(f"added tokens differ: got {view.added}, want {expected['added']}")
    tc = view.config
    if "added_tokens_decoder" in tc:
        got = {k: {f: v.get(f) for f in ("content",) + FLAG_KEYS} for k, v in tc["added_tokens_decoder"].items()}
        if got != expected["tokenizer_config.json"]["added_tokens_decoder"]:
            problems.append("tokenizer_config.json added_tokens_decoder differs from the added tokens")
    want_special = expected["special_tokens_map.json"]
    got_special = {k: (v.content if isinstance(v, AddedToken) else v) for k, v in view.special.items() if v}
    if {k: v for k, v in got_special.items() if k in want_special} != want_special:
        problems.append(f"special tokens differ: got {got_special}, want {want_special}")
    chat = expected["tokenizer_config.json"]["chat_template"]
    if chat is not None:
        if chat.kind == "builtin":
            if not isinstance(view.chat_template, str):
                problems.append(f"no chat template served (want built-in {chat.name})")
            else:
                problems += check_builtin_template(view.chat_template, chat.name)
        elif view.chat_template != chat.text:
            problems.append("chat template differs")
    return problems


# ---- chat templates (merge.py _set_chat_template) ---------------------------------------------------

BUILTIN = ("alpaca", "chatml", "exaone", "llama3", "mistral")


class ChatTemplate(NamedTuple):
    kind: str                 # "auto", "builtin" or "inline"
    text: Optional[str]       # the template to serve (None for builtin: the program writes its own)
    name: Optional[str] = None


def chat_template(cfg, models, templates=None):
    """merge.py _set_chat_template. None when the config has no chat_template (or "auto" finds none).
      * "auto": each referenced model's tokenizer chat_template (a dict -> its "default"), stripped;
        the most common one wins; ties: Counter.most_common keeps first-seen order, i.e. the order
        of referenced_models() (Choice: config order, base first as everywhere here). The winner is
        served stripped.
      * a built-in name (alpaca, chatml, exaone, llama3, mistral; mergekit's _data/chat_templates/
        NAME.jinja): served as the program's own file with the same rendering (render_builtin).
      * anything else must be >= 20 characters and contain "{" ("Invalid chat template"), and is
        served as is.
    models: {ref: folder} in config order; templates: {ref: chat_template} to use instead of reading."""
    t = cfg.get("chat_template")
    if not t:
        return None
    if not isinstance(t, str):
        raise VocabError("chat_template must be a string")
    if t == "auto":
        base = cfg.get("base_model")
        refs = list(models)
        if base in refs:
            refs = [base] + [r for r in refs if r != base]
        found = []
        for ref in refs:
            if templates is not None:
                tpl = templates.get(ref)
            else:
                view = vocab_view(models[ref])
                tpl = view.chat_template if view else None
            if isinstance(tpl, dict):
                tpl = tpl.get("default")
            if tpl:
                found.append(tpl.strip())
        if not found:
            return None
        return ChatTemplate("auto", Counter(found).most_common(1)[0][0])
    if t in BUILTIN:
        return ChatTemplate("builtin", None, t)
    if len(t) < 20 or "{" not in t:
        raise VocabError(f"Invalid chat template: {t}")
    return ChatTemplate("inline", t)


def render(template, messages, add_generation_prompt=False, bos_token="<s>", eos_token="</s>", **extra):
    """A chat template rendered as transformers renders it (utils/chat_template_utils.py
    _compile_jinja_template): an ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks, the
    loopcontrols extension, raise_exception and a tojson filter without HTML escaping. Needs jinja2."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos_token, eos_token=eos_token, **extra)


class TemplateRefused(Exception):
    """A built-in template raises for this conversation (mistral's raise_exception)."""


def _jtrim(s):
    """jinja2's trim filter: str.strip() (Python whitespace)."""
    return s.strip()


def render_builtin(name, messages, add_generation_prompt=False, bos_token="<s>", eos_token="</s>"):
    """The text mergekit's built-in template NAME renders for a conversation (worked out from the
    template under trim_blocks/lstrip_blocks; the tests check it against mergekit's own files when
    a mergekit checkout is at hand). Raises TemplateRefused where the template raises."""
    if name == "chatml":
        out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return out + ("<|im_start|>assistant\n" if add_generation_prompt else "")
    if name == "llama3":
        # `{{ content }}` ends its line: every message is followed by a newline
        out = ""
        for i, m in enumerate(messages):
            c = f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n" + _jtrim(m["content"]) + "<|eot_id|>"
            out += (bos_token + c if i == 0 else c) + "\n"
        return out + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_generation_prompt else "")
    if name == "mistral":
        if messages and messages[0]["role"] == "system":
            system, loop = messages[0]["content"], messages[1:]
        else:
            system, loop = None, messages
        out = bos_token
        for i, m in enumerate(loop):
            if (m["role"] == "user") != (i % 2 == 0):
                raise TemplateRefused("roles must alternate user/assistant")
            if m["role"] == "user":
                if i == 0 and system is not None:
                    out += " [INST] " + system + "\n\n" + m["content"] + " [/INST]"
                else:
                    out += " [INST] " + m["content"] + " [/INST]"
            elif m["role"] == "assistant":
                out += " " + m["content"] + eos_token
            else:
                raise TemplateRefused("only user and assistant roles after a system message")
        return out
    if name == "exaone":
        # lstrip_blocks strips the indentation before block tags only: each `{{ }}` line keeps its
        # indentation (8 or 4 spaces) and its newline
        out = ""
        for i, m in enumerate(messages):
            if i == 0 and m["role"] != "system":
                out += "        [|system|][|endofturn|]\n\n"
            out += "    [|" + m["role"] + "|]" + m["content"] + "\n"
            out += "        \n\n" if m["role"] == "user" else "        [|endofturn|]\n\n"
        return out + ("    [|assistant|]\n" if add_generation_prompt else "")
    if name == "alpaca":
        systems = [m for m in messages if m["role"] == "system"]
        out = (_jtrim(systems[-1]["content"]) if systems else "") + "\n\n"
        heads = {"user": "### Instruction:\n", "assistant": "### Response:\n", "user_context": "### Input:\n"}
        for i, m in enumerate(messages):
            if m["role"] in heads:
                out += heads[m["role"]] + _jtrim(m["content"])
                if i != len(messages) - 1:
                    out += "\n\n"
        if add_generation_prompt and messages[-1]["role"] != "assistant":
            out += "### Response:\n"
        return out
    raise ValueError(f"unknown built-in chat template {name!r}")


# Conversations every built-in template is checked on (check_builtin_template).
SAMPLE_CONVERSATIONS = [
    [{"role": "user", "content": "Hello"}],
    [{"role": "user", "content": "  Hi there \n"}, {"role": "assistant", "content": " Hello! "}],
    [{"role": "system", "content": " Be brief. "}, {"role": "user", "content": "What is 2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
    [{"role": "system", "content": "sys"}, {"role": "user", "content": "q"},
     {"role": "user_context", "content": "ctx\n"}, {"role": "assistant", "content": "a"}],
    [{"role": "assistant", "content": "I start."}, {"role": "user", "content": "ok"}],
    [{"role": "user", "content": "multi\nline\n\ntext"}, {"role": "assistant", "content": "{{ not jinja }}"}],
]


def check_builtin_template(text, name, bos_token="<s>", eos_token="</s>"):
    """Problems (a list) where a served template's rendering differs from built-in NAME's on
    SAMPLE_CONVERSATIONS, with and without the generation prompt (both must refuse the same ones)."""
    problems = []
    for conv in SAMPLE_CONVERSATIONS:
        for agp in (False, True):
            try:
                want = render_builtin(name, conv, agp, bos_token, eos_token)
            except TemplateRefused:
                want = TemplateRefused
            try:
                got = render(text, conv, agp, bos_token, eos_token)
            except Exception as e:  # jinja2's TemplateError from raise_exception, or a broken template
                got = TemplateRefused if want is TemplateRefused else f"error: {e}"
            if got != want:
                problems.append(f"{name}: {conv!r} (add_generation_prompt={agp}): got {got!r}, want {want!r}")
    return problems
