"""sentencepiece as transformers 5 encodes a folder that has only a tokenizer.model (its generic
TokenizersBackend built by SpmConverter.build_tokenizer_from_spm_proto): spaces replaced by ▁, no dummy
prefix, no whitespace cleanup, and the added tokens (unk/bos/eos of the trainer spec, control and
user-defined pieces; all normalized=False) found leftmost-longest in the raw text first. The reference for
formats/tokencode.c (tests/integration/test_tokenize.py) and for MoE router prompts (test_moe.py).

    SpmReference(open("tokenizer.model", "rb").read()).encode(text) -> [ids]
"""

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb


class SpmReference:
    """sentencepiece as transformers 5's generic pipeline: no dummy prefix, spaces kept (as ▁); the
    added tokens (all normalized=False) found leftmost-longest in the raw text first."""

    def __init__(self, data):
        m = pb.ModelProto()
        m.ParseFromString(data)
        self.added = {}
        ts = m.trainer_spec
        for pid, piece in ((ts.unk_id, ts.unk_piece), (ts.bos_id, ts.bos_piece), (ts.eos_id, ts.eos_piece)):
            if pid >= 0:
                self.added[piece] = pid
        for i, p in enumerate(m.pieces):
            if p.type in (3, 4):  # CONTROL, USER_DEFINED
                self.added[p.piece] = i
        m.normalizer_spec.add_dummy_prefix = False
        m.normalizer_spec.remove_extra_whitespaces = False
        self.sp = spm.SentencePieceProcessor()
        assert self.sp.LoadFromSerializedProto(m.SerializeToString())

    def encode(self, text):
        ids, i, last = [], 0, 0
        toks = sorted(self.added, key=len, reverse=True)
        while i < len(text):
            hit = next((t for t in toks if text.startswith(t, i)), None)
            if hit is None:
                i += 1
                continue
            if i > last:
                ids += self.sp.encode(text[last:i])
            ids.append(self.added[hit])
            last = i = i + len(hit)
        if last < len(text):
            ids += self.sp.encode(text[last:])
        return ids
