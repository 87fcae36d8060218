"""Traffic for an A/B experiment, as in the README's walkthrough: one request per user through a running
gateway with the official openai client, prompts cut from the shipped held-out split (model-written
texts an independent judge labelled; toxic and benign in turn), so arms differ where it matters.

    .venv/bin/steergate serve --policies deploy/ab-example.yaml        # in another shell
    .venv/bin/python bench/ab_traffic.py [--url http://127.0.0.1:8000] [--users 200] [--concurrency 4]
    .venv/bin/steergate report --source http://127.0.0.1:8000/metrics
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections import Counter

from tqdm import tqdm

from middleware.assets import EMBEDDED_HELDOUT


def prompts(n: int, words: int) -> list[str]:
    rows = [json.loads(line) for line in EMBEDDED_HELDOUT.read_text().splitlines()]
    toxic = [r["text"] for r in rows if r["label"] == 1]
    benign = [r["text"] for r in rows if r["label"] == 0]
    mixed = [t for pair in zip(toxic, benign, strict=False) for t in pair]
    return [" ".join(mixed[i % len(mixed)].split()[:words]) for i in range(n)]


async def run(url: str, key: str, users: int, concurrency: int, max_tokens: int, words: int) -> Counter[str]:
    import openai

    arms: Counter[str] = Counter()
    sem = asyncio.Semaphore(concurrency)
    async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, timeout=600) as client:
        with tqdm(total=users, desc="requests", unit="req") as bar:
            async def one(i: int, prompt: str) -> None:
                async with sem:
                    r = await client.completions.with_raw_response.create(
                        model="smollm2-135m-instruct", prompt=prompt, max_tokens=max_tokens, temperature=0,
                        user=f"user-{i}")
                arms[r.headers.get("x-steergate-arm", "none")] += 1
                bar.update()

            await asyncio.gather(*(one(i, p) for i, p in enumerate(prompts(users, words))))
    return arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default="unused", help="API key (the example's anonymous tenant needs none)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prompt-words", type=int, default=8, help="prompt: N words of a held-out text")
    args = parser.parse_args()
    arms = asyncio.run(run(args.url, args.key, args.users, args.concurrency, args.max_tokens,
                           args.prompt_words))
    print("requests per arm:", dict(sorted(arms.items())))


if __name__ == "__main__":
    main()
