"""OpenAI's official Python client (openai from PyPI, unmodified) against `cordon proxy`.

Usage: openai_chat.py BASE_URL MODEL PROMPT
Prints one JSON line: the whole reply, the streamed reply, the finish reasons, the usage of both,
and what a refused request raised.
"""
import json
import sys

import openai

base, model, prompt = sys.argv[1], sys.argv[2], sys.argv[3]
client = openai.OpenAI(base_url=base + "/v1", api_key="not-used-by-cordon", max_retries=0)
messages = [{"role": "user", "content": prompt}]

models = [m.id for m in client.models.list()]
whole = client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=32)
stream = client.chat.completions.create(
    model=model,
    messages=messages,
    temperature=0,
    max_tokens=32,
    stream=True,
    stream_options={"include_usage": True},
)
pieces, finish, usage = [], None, None
for chunk in stream:
    if chunk.usage is not None:
        usage = chunk.usage.completion_tokens
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    refused = None
except openai.NotFoundError as e:
    refused = {"status": e.status_code, "message": str(e)}
print(
    json.dumps(
        {
            "models": models,
            "whole": whole.choices[0].message.content,
            "whole_finish": whole.choices[0].finish_reason,
            "whole_completion_tokens": whole.usage.completion_tokens,
            "streamed": "".join(pieces),
            "streamed_pieces": len(pieces),
            "streamed_finish": finish,
            "streamed_completion_tokens": usage,
            "refused": refused,
        }
    )
)
