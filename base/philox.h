/* Counter-based randomness (D6): Philox4x32-10 (Salmon, Moraes, Dror, Shaw, SC'11). The numbers of an
 * element are a pure function of (seed, stream, element index), so any block recomputed alone, in any
 * order, on any thread, after a remount, gives the same mask. A stream is one (output tensor, model
 * position) pair. */
#ifndef MM_PHILOX_H
#define MM_PHILOX_H

#include <stdint.h>

/* The raw generator: four 32-bit outputs for a 128-bit counter and a 64-bit key. */
void mm_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* The stream id of a tensor's model: a 64-bit hash of the output tensor name mixed with the model's
 * position among the tensor's inputs. */
uint64_t mm_rng_stream(const char *tensor_name, uint64_t model_pos);

/* A uniform float in [0, 1) with 24 random bits for element `index` of `stream` under `seed`. */
float mm_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);

/* A standard normal float for element `index` of `stream` under `seed` (Box-Muller over two 24-bit
 * uniforms of one Philox call, in double, rounded once). */
float mm_rng_normal(uint64_t seed, uint64_t stream, uint64_t index);

#endif
