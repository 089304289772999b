"""fanflow.llm: model providers behind one small protocol.

``await llm.complete(prompt_or_messages, **params) -> Completion``. The
OpenAI-compatible provider (``openai`` SDK, extra ``llm``) reaches OpenAI and
any compatible server through ``base_url``; the Anthropic provider uses the
``anthropic`` SDK (extra ``anthropic``). Both import their SDK lazily, leave
retrying to fanflow, and raise ``ff.RateLimited``, ``ff.TransientError`` or
``ff.PermanentError``. API keys are read from the environment only.
"""

from __future__ import annotations

from ._agent import AgentError as AgentError
from ._agent import AgentResult as AgentResult
from ._agent import agent_task as agent_task
from ._agent import tool_spec as tool_spec
from ._aggregate import Claim as Claim
from ._anthropic import AnthropicChat as AnthropicChat
from ._base import LLM as LLM
from ._base import Completion as Completion
from ._base import Message as Message
from ._base import TokenUsage as TokenUsage
from ._base import ToolCall as ToolCall
from ._base import estimate_tokens as estimate_tokens
from ._base import record_usage as record_usage
from ._litellm import LiteLLMChat as LiteLLMChat
from ._openai import OpenAIChat as OpenAIChat
from ._structured import SchemaError as SchemaError
from ._structured import complete_structured as complete_structured
from ._tasks import answer_line as answer_line
from ._tasks import last_number as last_number
from ._tasks import prompt_task as prompt_task
from ._uri import from_uri as from_uri
from ._uri import register_provider as register_provider

__all__ = [
    "AgentError",
    "AgentResult",
    "agent_task",
    "AnthropicChat",
    "answer_line",
    "Claim",
    "Completion",
    "complete_structured",
    "estimate_tokens",
    "from_uri",
    "last_number",
    "LiteLLMChat",
    "LLM",
    "Message",
    "OpenAIChat",
    "prompt_task",
    "record_usage",
    "register_provider",
    "SchemaError",
    "TokenUsage",
    "ToolCall",
    "tool_spec",
]
