"""Latency of the MiniLM encoder: Paddle dygraph vs paddle.inference (oneDNN) fp32 vs bf16.

    .venv/bin/python bench/bench_text_encoder.py [--rounds 15] [--threads 2]

Shapes: batch 1 and 32, sequence length 32 and 64 (random token ids, no padding).
The three backends are timed in interleaved rounds (one call each per round) so
that load from other processes on the machine hits them alike; figures are
medians in milliseconds. Tokenization is timed separately on real 311-like texts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TEXTS = [
    "There is a large pothole on Main St that damaged my tire",
    "Garbage was not collected on Elm Street this week",
    "Loud music from a party on Oak Avenue after midnight",
    "Water main break flooding River Road, please send someone",
    "Elderly neighbour on Cedar Lane has not been seen for days",
    "Broken swing at the playground near Maple Ave",
    "bache enorme en Harbor Blvd, peligroso para bicis",
    "trash pickup skipped Mill Street 3rd time",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import paddle

    from projects.text_encoder import InferenceEncoder, load_pretrained, load_tokenizer, tokenize
    from projects.text_encoder.assets import tokenizer_path
    from projects.text_encoder.export import pretrained_encoder_folder
    from projects.text_encoder.runtime import cpu_flags

    paddle.set_device("cpu")
    flags = cpu_flags()
    print(f"CPU: {os.cpu_count()} cores; amx_bf16={'amx_bf16' in flags} avx512_bf16={'avx512_bf16' in flags}; "
          f"threads={args.threads}; paddle {paddle.__version__}; load average {os.getloadavg()[0]:.2f}")

    net = load_pretrained()
    prefix = pretrained_encoder_folder("mean") / "minilm"
    engines = {"fp32": InferenceEncoder(prefix, tokenizer_path(), 128, "fp32", threads=args.threads),
               "bf16": InferenceEncoder(prefix, tokenizer_path(), 128, "bf16", threads=args.threads)}
    print(f"precision chosen here by 'auto': {InferenceEncoder(prefix, tokenizer_path(), 128).precision}")

    def dygraph(ids, mask):
        with paddle.no_grad():
            return net(paddle.to_tensor(ids), paddle.to_tensor(mask)).numpy()

    backends = {"dygraph fp32": dygraph, "inference fp32": engines["fp32"].embed_ids,
                "inference bf16": engines["bf16"].embed_ids}

    rng = np.random.default_rng(0)
    rows = []
    for batch in (1, 32):
        for length in (32, 64):
            ids = rng.integers(1000, 30000, size=(batch, length)).astype(np.int64)
            ids[:, 0], ids[:, -1] = 101, 102
            mask = np.ones_like(ids)
            reference = dygraph(ids, mask)
            cosine = float((engines["bf16"].embed_ids(ids, mask) * reference).sum(1).min())
            for fn in backends.values():  # warm-up: oneDNN primitives are created per shape
                for _ in range(3):
                    fn(ids, mask)
            times = {name: [] for name in backends}
            rounds = args.rounds if batch == 32 else args.rounds * 4
            for _ in range(rounds):
                for name, fn in backends.items():
                    started = time.perf_counter()
                    fn(ids, mask)
                    times[name].append((time.perf_counter() - started) * 1000)
            rows.append((batch, length, {n: statistics.median(t) for n, t in times.items()},
                         {n: min(t) for n, t in times.items()}, cosine))

    tokenizer = load_tokenizer()
    texts32 = [TEXTS[i % len(TEXTS)] for i in range(32)]
    token_ms = {}
    for n, texts in ((1, texts32[:1]), (32, texts32)):
        for _ in range(5):
            tokenize(tokenizer, texts)
        samples = []
        for _ in range(200):
            started = time.perf_counter()
            tokenize(tokenizer, texts)
            samples.append((time.perf_counter() - started) * 1000)
        token_ms[n] = statistics.median(samples)

    for title, which in (("median", 2), ("minimum (least disturbed by other processes)", 3)):
        print()
        print(f"{title} of {args.rounds} rounds at batch 32, {args.rounds * 4} at batch 1:")
        print("| batch | seq len | dygraph fp32 ms | inference fp32 ms | inference bf16 ms "
              "| dygraph / inf fp32 | inf fp32 / inf bf16 | dygraph / inf bf16 | min cosine bf16 vs fp32 |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in rows:
            batch, length, ms, cosine = row[0], row[1], row[which], row[4]
            d, f, b = ms["dygraph fp32"], ms["inference fp32"], ms["inference bf16"]
            print(f"| {batch} | {length} | {d:.2f} | {f:.2f} | {b:.2f} | {d / f:.2f}x | {f / b:.2f}x "
                  f"| {d / b:.2f}x | {cosine:.5f} |")
    print()
    print(f"tokenization (tokenizers, truncate 128, pad to longest): batch 1 {token_ms[1]:.3f} ms, "
          f"batch 32 {token_ms[32]:.3f} ms ({token_ms[32] / 32 * 1000:.1f} us/text)")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
