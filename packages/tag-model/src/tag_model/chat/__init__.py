"""An OpenAI-compatible chat-completions client (vLLM, SGLang, TGI, llama.cpp, hosted APIs).

Shared by the trace-building teacher (``tag_train.teachers.OpenAITeacher``) and the LLM judge
(``tag_eval.judge.JudgeClient``): retries with exponential backoff and jitter on
408/409/425/429/5xx, timeouts and connection errors, ``Retry-After`` honoured, bounded
thread-pool concurrency that keeps request order, images sent as base64 data URLs, and an
API key read from an environment variable that is never logged, stored or put in an error.

>>> from tag_model.chat import ChatClient, ChatConfig
>>> cfg = ChatConfig("http://localhost:8000/v1", "qwen", api_key_env="MY_KEY", max_retries=2)
>>> cfg.url
'http://localhost:8000/v1/chat/completions'
"""

from tag_model.chat._client import (
    RETRY_STATUS,
    ChatClient,
    ChatConfig,
    ChatError,
    ChatRequest,
    ChatResponse,
    encoded_data_url,
    image_data_url,
)

__all__ = [
    "RETRY_STATUS",
    "ChatClient",
    "ChatConfig",
    "ChatError",
    "ChatRequest",
    "ChatResponse",
    "encoded_data_url",
    "image_data_url",
]
