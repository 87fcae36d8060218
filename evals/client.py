"""The evaluation's calls to a running gateway, through the official openai client.

Three kinds of call, all with the request's `steering` extension field:
- `generate`: continuations of a prompt (plain text through /v1/completions, or a user message
  through /v1/chat/completions), with the token ids of prompt and continuation (vLLM's
  `return_token_ids`), so fluency is scored on exactly the tokens that were generated;
- `logprobs`: log p of every token of a token-id sequence given the ones before it, in one prefill
  (vLLM's `prompt_logprobs`, max_tokens 1): with steering off this is the unsteered model's view of
  a text (perplexity); with a setting and `steer_positions: "both"` it is the steered model's
  (general ability), since every scored token is a prompt token.
Requests run concurrently (bounded) and each carries its own seed, so results do not depend on
the order the gateway schedules them in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from tqdm import tqdm

from middleware.fluency import token_logprobs

__all__ = ["Generation", "GatewayClient", "gather_with_progress", "run_all"]

T = TypeVar("T")
CONCURRENCY = 16
TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Generation:
    prompt_token_ids: list[int]  # what the model read (chat template included)
    token_ids: list[int]  # the continuation
    text: str
    finish_reason: str | None


class GatewayClient:
    """One gateway (base URL without /v1) and model; an optional API key for keyed policies."""

    def __init__(self, url: str, model: str, api_key: str = "unused", concurrency: int = CONCURRENCY) -> None:
        import openai

        self.model = model
        self._client = openai.AsyncOpenAI(base_url=f"{url.rstrip('/')}/v1", api_key=api_key, max_retries=2,
                                          timeout=TIMEOUT_S)
        self._slots = asyncio.Semaphore(concurrency)

    async def close(self) -> None:
        await self._client.close()

    async def generate(self, prompt: str, chat: bool, steering: Mapping[str, Any], *, max_tokens: int,
                       temperature: float, seed: int) -> Generation:
        body = {"steering": dict(steering), "return_token_ids": True}
        async with self._slots:
            if chat:
                r = await self._client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                    temperature=temperature, seed=seed, extra_body=body)
                choice = r.choices[0]
                return Generation(list(r.model_extra["prompt_token_ids"]), list(choice.model_extra["token_ids"]),
                                  choice.message.content or "", choice.finish_reason)
            r = await self._client.completions.create(model=self.model, prompt=prompt, max_tokens=max_tokens,
                                                      temperature=temperature, seed=seed, extra_body=body)
            choice = r.choices[0]
            return Generation(list(choice.model_extra["prompt_token_ids"]), list(choice.model_extra["token_ids"]),
                              choice.text, choice.finish_reason)

    async def logprobs(self, token_ids: list[int], steering: Mapping[str, Any]) -> list[float | None]:
        """(n,) log p(token_ids[t] | token_ids[:t]); None at position 0."""
        async with self._slots:
            r = await self._client.completions.create(
                model=self.model, prompt=token_ids, max_tokens=1, temperature=0.0,
                extra_body={"prompt_logprobs": 0, "steering": dict(steering)})
        return token_logprobs(r.choices[0].model_extra["prompt_logprobs"], token_ids)


async def gather_with_progress(jobs: list[Callable[[], Awaitable[T]]], desc: str) -> list[T]:
    """Await every job concurrently (bounding is the caller's), with a progress bar."""
    with tqdm(total=len(jobs), desc=desc, unit="req", leave=False) as bar:
        async def one(job: Callable[[], Awaitable[T]]) -> T:
            result = await job()
            bar.update(1)
            return result

        return list(await asyncio.gather(*(one(j) for j in jobs)))


def run_all(client_factory: Callable[[], GatewayClient], jobs: Iterable[Callable[[GatewayClient], Awaitable[T]]],
            desc: str) -> list[T]:
    """Run `jobs` (each given the client) concurrently in a fresh event loop, with a progress bar.

    A job with a true `cached` attribute answers without the client; when every job does, the
    client is never made (so a fully cached phase starts no gateway). The factory runs here, in the
    calling thread and outside the event loop, since starting a gateway installs signal handlers.
    """
    jobs = list(jobs)
    client = None if all(getattr(j, "cached", False) for j in jobs) else client_factory()

    async def main() -> list[T]:
        try:
            return await gather_with_progress([lambda j=j: j(client) for j in jobs], desc)  # type: ignore[arg-type]
        finally:
            if client is not None:
                await client.close()

    return asyncio.run(main())
