"""The vLLM candidate engine: ray.serve.llm's LLMServer plus the two methods the ingress calls.

`complete(request) -> dict` and `stream(request)` (chunk dicts) take the engine request that
`app.engine_request` builds, so the ingress never imports vLLM. Imported only by the builder and
the engine's replica: `import ray.serve.llm` needs the vllm module.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from ray.serve.llm.deployment import LLMServer
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest, ErrorResponse

from lookahead_ray.serving.openai_api import engine_error, plain_prompt


class VLLMEngine(LLMServer):
    def vllm_request(self, request: dict[str, Any], stream: bool):
        """A chat request, or a completion request for a candidate with `chat_template: false`."""
        common = {"model": self._llm_config.model_id, "max_tokens": request["max_tokens"],
                  "temperature": request["temperature"], "top_p": request["top_p"], "seed": request["seed"],
                  "stream": stream}
        if stream:
            common["stream_options"] = {"include_usage": request["include_usage"]}
        if request["chat_template"]:
            return ChatCompletionRequest(messages=request["messages"], **common)
        return CompletionRequest(prompt=plain_prompt(request["messages"]), **common)

    async def run(self, request: dict[str, Any], stream: bool):
        vllm_request = self.vllm_request(request, stream)
        method = self.chat if isinstance(vllm_request, ChatCompletionRequest) else self.completions
        return await method(vllm_request), isinstance(vllm_request, ChatCompletionRequest)

    async def complete(self, request: dict[str, Any]) -> dict[str, Any]:
        outputs, is_chat = await self.run(request, stream=False)
        async for item in outputs:
            if isinstance(item, ErrorResponse):
                return as_error(item)
            body = item.model_dump()
            return body if is_chat else completion_as_chat(body)
        raise RuntimeError("vLLM returned no response")

    async def stream(self, request: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        outputs, is_chat = await self.run(request, stream=True)
        async for item in outputs:
            for piece in item if isinstance(item, list) else [item]:
                if isinstance(piece, ErrorResponse):
                    yield as_error(piece)
                    return
                for line in str(piece).splitlines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[len("data: "):])
                    if "error" in chunk:
                        raise RuntimeError(chunk["error"].get("message", "vLLM stream error"))
                    yield chunk if is_chat else completion_chunk_as_chat(chunk)


def as_error(response: ErrorResponse) -> dict[str, Any]:
    error = response.error
    status = int(error.code) if str(error.code).isdigit() else 400
    if status >= 500:
        raise RuntimeError(f"vLLM error {status}: {error.message}")  # a server error: the ingress falls back
    return engine_error(status, error.message, error.type or "invalid_request_error")


def completion_as_chat(body: dict[str, Any]) -> dict[str, Any]:
    choice = body["choices"][0]
    return dict(body, object="chat.completion", choices=[
        {"index": 0, "message": {"role": "assistant", "content": choice["text"]}, "logprobs": None,
         "finish_reason": choice.get("finish_reason")}])


def completion_chunk_as_chat(chunk: dict[str, Any]) -> dict[str, Any]:
    choices = [{"index": c.get("index", 0), "delta": {"content": c.get("text", "")}, "logprobs": None,
                "finish_reason": c.get("finish_reason")} for c in chunk.get("choices", [])]
    return dict(chunk, object="chat.completion.chunk", choices=choices)
