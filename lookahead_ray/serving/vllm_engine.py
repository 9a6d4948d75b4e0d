"""The vLLM candidate engine: ray.serve.llm's LLMServer plus the two methods the ingress calls.

`complete(request) -> dict` and `stream(request)` (chunk dicts) take the engine request that
`ingress.engine_request` builds, so the ingress never imports vLLM. Imported only by the builder and
the engine's replica: `import ray.serve.llm` needs the vllm module.

Every field of the engine request is forwarded (stop, logprobs, penalties, response_format as vLLM's
guided decoding). A request vLLM's own request model rejects is answered as an `engine_error` 400,
never raised: raising would make the ingress try every other candidate with the same bad request.
"""

from __future__ import annotations

import json
import re
from typing import Any, AsyncIterator

from pydantic import ValidationError
from ray.serve.llm.deployment import LLMServer
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from lookahead_ray.serving.openai_api import engine_error, param_path, plain_prompt

_URL = re.compile(r"\s*For further information visit \S+")


class VLLMEngine(LLMServer):
    def vllm_request(self, request: dict[str, Any], stream: bool):
        """A chat request, or a completion request for a candidate with `chat_template: false`."""
        common = {"model": self._llm_config.model_id, "max_tokens": request["max_tokens"],
                  "temperature": request["temperature"], "top_p": request["top_p"], "seed": request["seed"],
                  "stop": request.get("stop") or None, "presence_penalty": request.get("presence_penalty") or 0.0,
                  "frequency_penalty": request.get("frequency_penalty") or 0.0, "stream": stream}
        if request.get("response_format"):
            common["response_format"] = request["response_format"]
        if stream:
            common["stream_options"] = {"include_usage": request["include_usage"]}
        if request["chat_template"]:
            if request.get("logprobs"):
                common.update(logprobs=True, top_logprobs=request.get("top_logprobs") or 0)
            return ChatCompletionRequest(messages=request["messages"], **common)
        if request.get("logprobs"):  # the completions API counts alternatives in `logprobs`
            common["logprobs"] = request.get("top_logprobs") or 0
        return CompletionRequest(prompt=plain_prompt(request["messages"]), **common)

    async def run(self, request: dict[str, Any], stream: bool):
        vllm_request = self.vllm_request(request, stream)
        method = self.chat if isinstance(vllm_request, ChatCompletionRequest) else self.completions
        return await method(vllm_request), isinstance(vllm_request, ChatCompletionRequest)

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            outputs, is_chat = await self.run(request, stream=False)
        except ValidationError as err:
            return rejected(err)
        async for item in outputs:
            body = item.model_dump() if hasattr(item, "model_dump") else item
            if isinstance(body, dict) and "error" in body and "choices" not in body:
                return as_error(body)  # an ErrorResponse, whichever module's class it is: never a 200
            return body if is_chat else completion_as_chat(body)
        raise RuntimeError("vLLM returned no response")

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        try:
            outputs, is_chat = await self.run(request, stream=True)
        except ValidationError as err:
            yield rejected(err)
            return
        async for item in outputs:
            for piece in item if isinstance(item, list) else [item]:
                body = piece.model_dump() if hasattr(piece, "model_dump") else None
                if isinstance(body, dict) and "error" in body:
                    yield as_error(body)
                    return
                for line in str(piece).splitlines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[len("data: "):])
                    if "error" in chunk:
                        yield as_error(chunk)
                        return
                    yield chunk if is_chat else completion_chunk_as_chat(chunk)


def rejected(err: ValidationError) -> dict[str, Any]:
    """vLLM's request model refused a field: a 400 naming it, without pydantic's URL."""
    first = err.errors(include_url=False, include_input=False)[0]
    param = param_path(first["loc"]) or None
    return engine_error(400, f"{param or 'request'}: {first['msg']}"[:300], code="invalid_value", param=param)


def as_error(body: dict[str, Any]) -> dict[str, Any]:
    """An error body from vLLM as an engine_error; a server error raises (the ingress falls back)."""
    error = body["error"] if isinstance(body.get("error"), dict) else {"message": str(body.get("error"))}
    code = error.get("code")
    status = int(code) if str(code).isdigit() else 400
    message = _URL.sub("", str(error.get("message") or "")).strip().splitlines()
    if status >= 500:
        raise RuntimeError(f"vLLM error {status}: {message[-1] if message else ''}")
    return engine_error(status, (message[0] if message else "vLLM refused the request")[:300],
                        error.get("type") or "invalid_request_error", param=error.get("param"))


def completion_logprobs(logprobs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The completions API's logprobs (parallel lists) as the chat API's `{"content": [...]}`."""
    if not logprobs:
        return None

    def entry(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    tops = logprobs.get("top_logprobs") or [None] * len(logprobs["tokens"])
    return {"content": [{**entry(token, lp), "top_logprobs": [entry(t, v) for t, v in (top or {}).items()]}
                        for token, lp, top in zip(logprobs["tokens"], logprobs["token_logprobs"], tops)]}


def completion_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    choice = body["choices"][0]
    return dict(body, object="chat.completion", choices=[
        {"index": 0, "message": {"role": "assistant", "content": choice["text"]},
         "logprobs": completion_logprobs(choice.get("logprobs")), "finish_reason": choice.get("finish_reason")}])


def completion_chunk_as_chat(chunk: dict[str, Any]) -> dict[str, Any]:
    choices = [{"index": c.get("index", 0), "delta": {"content": c.get("text", "")},
                "logprobs": completion_logprobs(c.get("logprobs")), "finish_reason": c.get("finish_reason")}
               for c in chunk.get("choices", [])]
    return dict(chunk, object="chat.completion.chunk", choices=choices)
