"""The OpenAI simulator's Batch API, driven by the official openai SDK."""

from __future__ import annotations

import asyncio
import json

import openai

from .conftest import KEY, MakeSim, fast


def _line(custom_id: str, text: str) -> str:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
    doc = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return json.dumps(doc)


async def _finished(client: openai.AsyncOpenAI, batch_id: str) -> openai.types.Batch:
    for _ in range(500):
        batch = await client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed"):
            return batch
        await asyncio.sleep(0.01)
    raise AssertionError("the simulated batch never ended")


async def test_batch_runs_lines_like_chat(make_sim: MakeSim) -> None:
    sim = await make_sim("openai", fast(batch_line_ms=1.0))
    async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as client:
        data = "\n".join([_line("a", "hello"), _line("b", "world"), "{not json"]) + "\n"
        uploaded = await client.files.create(file=("in.jsonl", data.encode()), purpose="batch")
        batch = await client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        done = await _finished(client, batch.id)
        assert done.status == "completed"
        assert done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (2, 1)
        assert done.output_file_id is not None and done.error_file_id is not None
        out = [
            json.loads(x)
            for x in (await client.files.content(done.output_file_id)).text.splitlines()
        ]
        assert [r["custom_id"] for r in out] == ["a", "b"]
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )
        body = out[0]["response"]["body"]
        assert out[0]["response"]["status_code"] == 200
        assert body["choices"][0]["message"]["content"] == reply.choices[0].message.content
        assert body["usage"]["prompt_tokens"] == reply.usage.prompt_tokens  # type: ignore[union-attr]
        errors = (await client.files.content(done.error_file_id)).text.splitlines()
        assert json.loads(errors[0])["response"]["status_code"] == 400
    assert sim.wire.batches.lines_run == 2  # type: ignore[attr-defined]


async def test_batch_faults(make_sim: MakeSim) -> None:
    refusing = await make_sim("openai", fast(batch_fault="refuse"))
    failing = await make_sim("openai", fast(batch_fault="fail", batch_line_ms=1.0))
    for sim, fails in ((refusing, False), (failing, True)):
        async with openai.AsyncOpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0) as c:
            f = await c.files.create(file=("in.jsonl", _line("a", "x").encode()), purpose="batch")
            if not fails:
                try:
                    await c.batches.create(
                        input_file_id=f.id,
                        endpoint="/v1/chat/completions",
                        completion_window="24h",
                    )
                except openai.InternalServerError:
                    continue
                raise AssertionError("the batch was not refused")
            batch = await c.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            assert (await _finished(c, batch.id)).status == "failed"
