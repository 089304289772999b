"""Model URIs: ``"openai:gpt-4o-mini"``, ``"openai:MODEL@http://host:8000/v1"``, ``"sim:..."``.

A URL may end in ``?key_env=NAME``: the environment variable whose key that
server gets (a provider's own key goes to its own host only).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._base import LLM, book_usage

__all__ = ["from_uri", "register_provider"]

ProviderFactory = Callable[[str, str | None], LLM]
_SIM_DEFAULT_URL = "http://127.0.0.1:8000/v1"


def _sdk(scheme: str, module: str, extra: str) -> None:
    """An ImportError that says which extra to install, not "No module named 'openai'"."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ImportError(
            f"{scheme}: models need the {module} package: pip install 'fanflow[{extra}]'"
        )


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _key_env(base_url: str | None) -> tuple[str | None, str | None]:
    """Split ``?key_env=NAME`` off a URL: ``(the URL without it, NAME or None)``.

    Raises:
        ValueError: ``key_env`` is given twice or is not a variable name.
    """
    if base_url is None or "key_env=" not in base_url:
        return base_url, None
    parts = urlsplit(base_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == "key_env"]
    if len(names) != 1 or not _ENV_NAME.fullmatch(names[0]):
        raise ValueError(
            f"key_env in {base_url!r} must name one environment variable "
            "(letters, digits, '_'), e.g. '?key_env=MY_KEY'"
        )
    rest = urlencode([(k, v) for k, v in query if k != "key_env"])
    return urlunsplit(parts._replace(query=rest)), names[0]


def _openai(model: str, base_url: str | None) -> LLM:
    _sdk("openai", "openai", "llm")
    from ._openai import OpenAIChat

    url, key_env = _key_env(base_url)
    if key_env is None:
        return OpenAIChat(model, base_url=url)
    return OpenAIChat(model, base_url=url, api_key_env=key_env)


def _anthropic(model: str, base_url: str | None) -> LLM:
    _sdk("anthropic", "anthropic", "anthropic")
    from ._anthropic import AnthropicChat

    url, key_env = _key_env(base_url)
    if key_env is None:
        return AnthropicChat(model, base_url=url)
    return AnthropicChat(model, base_url=url, api_key_env=key_env)


def _sim(model: str, base_url: str | None) -> LLM:
    # The simulator speaks OpenAI's API; fanflow[sim] brings the SDK too.
    _sdk("sim", "openai", "sim")
    from ._openai import OpenAIChat

    given, key_env = _key_env(base_url)
    url = given or os.environ.get("FANFLOW_SIM_URL") or _SIM_DEFAULT_URL
    return OpenAIChat(model, base_url=url, api_key_env=key_env, name=f"sim:{model}@{url}")


def _litellm(model: str, base_url: str | None) -> LLM:
    _sdk("litellm", "litellm", "litellm")
    from ._litellm import LiteLLMChat

    url, key_env = _key_env(base_url)
    return LiteLLMChat(model, base_url=url, api_key_env=key_env)


_PROVIDERS: dict[str, ProviderFactory] = {
    "openai": _openai,
    "anthropic": _anthropic,
    "sim": _sim,
    "litellm": _litellm,
}


def register_provider(scheme: str, factory: ProviderFactory) -> None:
    """Make ``from_uri("SCHEME:MODEL[@URL]")`` call ``factory(model, url)``.

    Token accounting comes with it: each request of a model built this way
    is booked to the fan-out it runs in (``result.usage``, under MODEL) with
    the ``usage`` (:class:`TokenUsage`) of the :class:`Completion` its
    ``complete`` returns — an estimate of the prompt's tokens while the
    request is in flight, so a cancelled one counts as waste. A provider
    that books its requests itself (built on ``OpenAIChat`` or
    ``AnthropicChat``, or calling :func:`record_usage`) is not counted
    twice. ``from_uri`` returns the factory's own object with its
    ``complete`` replaced (on the instance) by one that books the usage.

    Args:
        scheme: the URI scheme, a word without ``:``.
        factory: ``(model, url or None) -> LLM``.

    Raises:
        ValueError: ``scheme`` is empty or contains ``:``.
    """
    if not scheme or ":" in scheme:
        raise ValueError(f"a provider scheme is a word without ':'; got {scheme!r}")
    _PROVIDERS[scheme] = book_usage(factory)


def from_uri(uri: str) -> LLM:
    """Build a model from a URI.

    ``openai:MODEL`` (OpenAI, key from ``OPENAI_API_KEY``),
    ``openai:MODEL@http://127.0.0.1:8000/v1`` (any OpenAI-compatible server:
    vLLM, Ollama, llama.cpp, LM Studio), ``anthropic:MODEL`` (key from
    ``ANTHROPIC_API_KEY``), ``sim:MODEL[@URL]`` (the fanflow simulator; URL
    defaults to ``$FANFLOW_SIM_URL`` or ``http://127.0.0.1:8000/v1``),
    ``litellm:MODEL[@URL]`` (any provider litellm reaches, e.g.
    ``litellm:bedrock/...``; extra ``fanflow[litellm]``). Model
    names may contain ``:`` (``openai:llama3:8b@http://...``). A provider's
    own key goes to its own host only; ``?key_env=NAME`` at the end of the
    URL gives that server the key in ``$NAME``
    (``openai:m@http://127.0.0.1:8000/v1?key_env=MY_KEY``).

    Raises:
        ValueError: a malformed URI, an unknown scheme (the message lists
            the known ones), or a ``key_env`` that is not one variable name.
        ImportError: the provider's SDK is not installed (the message names
            the extra to install).
    """
    if not isinstance(uri, str) or ":" not in uri:
        raise ValueError(f"a model URI looks like 'openai:gpt-4o-mini'; got {uri!r}")
    scheme, _, rest = uri.partition(":")
    factory = _PROVIDERS.get(scheme)
    if factory is None:
        known = ", ".join(sorted(_PROVIDERS))
        raise ValueError(f"unknown model provider {scheme!r} in {uri!r}; known: {known}")
    model, base_url = rest, None
    at = rest.rfind("@http")
    if at >= 0:
        model, base_url = rest[:at], rest[at + 1 :]
    if not model:
        raise ValueError(f"the model URI {uri!r} names no model")
    return factory(model, base_url)
