/* The tokenizer side of the GGUF view: the tokenizer.ggml.* key/values (and tokenizer.chat_template)
 * that llama.cpp's converter writes for the served tokenizer files of the output folder — sentencepiece
 * tokenizer.model (tokenizer.ggml.model "llama", tokens/scores/token types, added tokens, padding to
 * vocab_size) and tokenizer.json byte-level BPE ("gpt2": tokens, token types, merges, and the
 * pre-tokenizer name the converter would find, derived from tokenizer.json's pre_tokenizer definition
 * since we cannot run its hash test) — plus its special vocabulary (bos/eos/unk/sep/pad ids,
 * add_bos_token/add_eos_token, chat template), each family as its set_vocab does it.
 *
 * Reads the files through mm_plan_file_bytes, so a merged vocabulary (tokenizer_source union) is what
 * the GGUF carries. A tokenizer the converter would not accept, or a pre-tokenizer we cannot name, is an
 * error naming the file and what was found (never a guess). */
#ifndef MM_GGUF_VOCAB_H
#define MM_GGUF_VOCAB_H

#include "formats/gguf.h"
#include "merge/plan/plan.h"

/* Appends the tokenizer keys for GGUF architecture `arch` ("llama", "qwen2", "gemma", "gemma2", "gemma3",
 * "phi3") in the converter's order. 0 or -errno with a message. */
int mm_gguf_vocab_build(const mm_plan *p, const char *arch, mm_gguf_kvs *kv, mm_err *err);

#endif
