"""OpenAI request bodies for /v1/chat/completions and /v1/completions, validated as strictly as OpenAI does.

Every parameter of OpenAI's two APIs is implemented or refused by name: ``PARAMETERS`` is the one table the
checks and the README's table (``parameter_table_markdown``) both come from, so a client never gets a silent
no-op for a parameter that would change its output at OpenAI. Types are strict (``"5"`` is no integer),
unknown fields are 400s, and the bounds of ``RequestLimits`` hold before any templating or tokenizing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from phifleet.engine.chat_template import render_chat_prompt
from phifleet.engine.errors import InvalidRequestError
from phifleet.engine.structured_output import response_format_of
from phifleet.engine.types import GenerationRequest, GenerationResult, Prompt, ResponseFormat, SamplingParams
from phifleet.protocol.errors import OpenAIError, describe_error, openai_error
from phifleet.protocol.limits import RequestLimits
from phifleet.protocol.responses import ChatCompletionResponse, CompletionResponse
from phifleet.protocol.streaming import ChunkStream

CHAT_COMPLETIONS = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
DEFAULT_MAX_TOKENS = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1  # OpenAI's range for seed
TOP_LOGPROBS_MAX = 20  # chat's top_logprobs, as OpenAI bounds it
COMPLETION_LOGPROBS_MAX = 5  # the legacy endpoint's logprobs, as OpenAI bounds it
LOGIT_BIAS_MAX = 100.0
_TOKEN_ID = re.compile(r"[0-9]{1,10}")  # ASCII digits only: str.isdigit() also takes "²" and "١"

Scope = Literal["chat", "completions", "message"]
CHAT: frozenset[Scope] = frozenset({"chat"})
COMPLETIONS_ONLY: frozenset[Scope] = frozenset({"completions"})
BOTH: frozenset[Scope] = frozenset({"chat", "completions"})
MESSAGE: frozenset[Scope] = frozenset({"message"})


# --- the parameter table ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Parameter:
    """One parameter of OpenAI's APIs: implemented (``noop`` is None) or refused unless ``noop(value, body)``."""

    name: str
    scopes: frozenset[Scope]
    note: str
    accepts: tuple[str, ...] = ()  # refused ones: the values that change nothing, as JSON (errors, the table)
    noop: Callable[[object, Mapping[str, object]], bool] | None = None

    @property
    def implemented(self) -> bool:
        return self.noop is None

    @property
    def label(self) -> str:
        return f"messages[].{self.name}" if self.scopes == MESSAGE else self.name


def _same(value: object, accepted: object) -> bool:
    """Equal as JSON values: 0 and 0.0 match, but False is not 0 and 1 is not True."""
    numbers = (int, float)
    if type(value) in numbers and type(accepted) in numbers:
        return value == accepted
    return type(value) is type(accepted) and value == accepted


def _refused(name: str, scopes: frozenset[Scope], reason: str, *accepted: object) -> Parameter:
    """Refused unless the value is one of ``accepted`` (null always is): values that change nothing pass."""
    values = (None, *accepted)
    texts = tuple(json.dumps(v) for v in values)
    return Parameter(name, scopes, reason, texts, lambda value, body: any(_same(value, a) for a in values))


def _best_of_noop(value: object, body: Mapping[str, object]) -> bool:
    """best_of == n (default 1) ranks nothing away: every sampled candidate is returned."""
    n = body.get("n")
    return value is None or (type(value) is int and value == (n if type(n) is int else 1))


_NO_TOOLS = "Phi-4 has no tool-call format"
_NO_EFFECT = "accepted; no effect on the output (as at OpenAI)"
PARAMETERS: tuple[Parameter, ...] = (
    Parameter("model", BOTH, "optional; the server answers 404 for another model's name"),
    Parameter("messages", CHAT, "1 to `limits.max_messages` (1024) messages"),
    Parameter(
        "prompt",
        COMPLETIONS_ONLY,
        "one string; a list of strings or token ids is refused (send one request per prompt)",
    ),
    Parameter(
        "max_tokens",
        BOTH,
        f">= 1; unset: up to {DEFAULT_MAX_TOKENS} (chat) or 16 (completions) tokens, fewer if the prompt leaves "
        "less room in the context window",
    ),
    Parameter("max_completion_tokens", CHAT, "as `max_tokens`; wins over it"),
    Parameter("temperature", BOTH, "0 to 2; 0 is greedy"),
    Parameter("top_p", BOTH, "above 0, at most 1"),
    Parameter("n", BOTH, "1 to `limits.max_n` (16)"),
    Parameter("seed", BOTH, "a signed 64-bit integer; choice i samples with seed + i"),
    Parameter(
        "stop",
        BOTH,
        "a string or a list of up to `limits.max_stop_sequences` (4) non-empty strings of at most "
        "`limits.max_stop_chars` (256) characters",
    ),
    Parameter("stream", BOTH, "server-sent events ending in `data: [DONE]`"),
    Parameter("stream_options", BOTH, "only `include_usage` (a boolean); only with `stream: true`"),
    Parameter(
        "logprobs",
        CHAT,
        "a boolean: each generated token's log-probability under the model (before temperature, top_p, top_k, "
        "logit_bias and the response_format mask)",
    ),
    Parameter("top_logprobs", CHAT, f"0 to {TOP_LOGPROBS_MAX} alternatives per token; needs `logprobs: true`"),
    Parameter(
        "logprobs",
        COMPLETIONS_ONLY,
        f"0 to {COMPLETION_LOGPROBS_MAX}: tokens, token_logprobs, top_logprobs (the sampled token included), "
        "text_offset",
    ),
    Parameter(
        "logit_bias",
        BOTH,
        "token id (a string of digits) to a bias in [-100, 100]; at most `limits.max_logit_bias` (300) entries",
    ),
    Parameter("echo", COMPLETIONS_ONLY, "the text is prompt + completion; not with `logprobs` (no prompt logprobs)"),
    Parameter("user", BOTH, _NO_EFFECT),
    Parameter("safety_identifier", CHAT, _NO_EFFECT),
    Parameter("prompt_cache_key", CHAT, _NO_EFFECT),
    Parameter("ignore_eos", BOTH, "vLLM's extension: generate exactly `max_tokens` (benchmarks)"),
    Parameter("top_k", BOTH, "vLLM's extension: sample from the k most likely tokens; 0 (the default) is off"),
    _refused("tools", CHAT, _NO_TOOLS, []),
    _refused("tool_choice", CHAT, _NO_TOOLS, "none"),
    _refused("parallel_tool_calls", CHAT, _NO_TOOLS),
    _refused("functions", CHAT, _NO_TOOLS, []),
    _refused("function_call", CHAT, _NO_TOOLS, "none"),
    Parameter(
        "response_format",
        CHAT,
        "`text`, `json_object` or `json_schema` (`name`, `schema`, `strict`, `description`): decoding constrained "
        "to the schema (xgrammar), compiled once per schema; a schema that cannot compile is a 400; output cut by "
        "`max_tokens` ends with `finish_reason: length`; not with `stop` (a stop string could cut the object)",
    ),
    _refused("frequency_penalty", BOTH, "the sampler has no repetition penalties", 0),
    _refused("presence_penalty", BOTH, "the sampler has no repetition penalties", 0),
    _refused("audio", CHAT, "Phi-4 reads and writes text only"),
    _refused("modalities", CHAT, "Phi-4 reads and writes text only", ["text"]),
    _refused("prediction", CHAT, "no predicted-output decoding"),
    _refused("reasoning_effort", CHAT, "Phi-4 has no reasoning-effort control"),
    _refused("verbosity", CHAT, "Phi-4 has no verbosity control"),
    _refused("web_search_options", CHAT, "no web search"),
    _refused("service_tier", CHAT, "one tier of service", "auto", "default"),
    _refused("store", CHAT, "completions are not stored", False),
    _refused("metadata", CHAT, "completions are not stored, so there is nothing to tag", {}),
    _refused("moderation", CHAT, "no moderation"),
    _refused("prompt_cache_options", CHAT, "no configurable prompt cache"),
    _refused("prompt_cache_retention", CHAT, "no configurable prompt cache"),
    _refused("suffix", COMPLETIONS_ONLY, "no insertion (fill-in-the-middle)", ""),
    Parameter(
        "best_of",
        COMPLETIONS_ONLY,
        "no server-side ranking of extra candidates: ask for `n` and pick",
        ("null", "1", "n"),
        _best_of_noop,
    ),
    Parameter(
        "role",
        MESSAGE,
        "system, user, assistant; developer is system; tool and function are refused (no tool-call format)",
    ),
    Parameter(
        "content",
        MESSAGE,
        "a string or a list of text parts; image_url, input_audio, file and refusal parts are refused "
        "(Phi-4 reads text only)",
    ),
    _refused("name", MESSAGE, "Phi-4's chat template has no place for a participant name: put it in the content"),
    _refused("tool_calls", MESSAGE, _NO_TOOLS, []),
    _refused("tool_call_id", MESSAGE, _NO_TOOLS),
    _refused("function_call", MESSAGE, _NO_TOOLS),
    _refused("refusal", MESSAGE, "send an earlier refusal as the assistant's content"),
    _refused("audio", MESSAGE, "Phi-4 reads and writes text only"),
)


def parameters(scope: Scope) -> dict[str, Parameter]:
    """The parameters a body of ``scope`` may carry, by name."""
    return {p.name: p for p in PARAMETERS if scope in p.scopes}


_TABLES: dict[Scope, dict[str, Parameter]] = {s: parameters(s) for s in ("chat", "completions", "message")}


def parameter_table_markdown() -> str:
    """The README's parameter table, from ``PARAMETERS``: what each parameter does here, or why it is refused."""
    rows = ["| parameter | endpoint | support | notes |", "|---|---|---|---|"]
    for p in PARAMETERS:
        where = "both" if p.scopes == BOTH else "chat" if p.scopes & {"chat", "message"} else "completions"
        support = "yes" if p.implemented else "refused unless " + " or ".join(f"`{a}`" for a in p.accepts)
        rows.append(f"| `{p.label}` | {where} | {support} | {p.note} |")
    return "\n".join(rows)


# --- checks before validation -------------------------------------------------------------------------------------
def _short(key: str, limit: int = 64) -> str:
    """A client's key as it may appear in an error: bounded, so a huge key is not echoed back whole."""
    return key if len(key) <= limit else key[:limit] + "..."


def _path(parts: Sequence[str | int]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{_short(p)}" if out else _short(p))
    return out


def _utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_json(value: object, max_depth: int) -> None:
    """Every string and key of a parsed JSON value is valid Unicode, and its nesting stays within ``max_depth``.

    Python's json decodes ``"\\ud800"`` to a lone surrogate, which no UTF-8 encoder takes: in a prompt the
    tokenizer raises a TypeError, in an error message the answer itself fails to encode. Checked first, so
    nothing later echoes such a string.
    """
    stack: list[tuple[object, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        node, at = stack.pop()
        if isinstance(node, str):
            if not _utf8(node):
                raise OpenAIError(400, f"{_path(at)}: not valid Unicode (a lone surrogate)", param=_path(at) or None)
            continue
        if not isinstance(node, dict | list):
            continue
        if len(at) >= max_depth:  # named "body", as the server names a body too deep to parse at all
            message = f"body: JSON nested deeper than {max_depth} levels (at {_path(at)})"
            raise OpenAIError(400, message, param="body")
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, child in reversed(items):  # reversed: the first bad value in document order is reported
            if isinstance(key, str) and not _utf8(key):
                where = _path(at) or "body"
                raise OpenAIError(400, f"{where}: a key is not valid Unicode (a lone surrogate)", param=where)
            stack.append((child, (*at, key)))


def _screen(body: Mapping[str, object], scope: Scope, prefix: str = "") -> dict[str, object]:
    """``body`` less refused parameters at their no-op values; an unknown or a refused one is a 400 naming it."""
    table, kept = _TABLES[scope], {}
    for key, value in body.items():
        param, where = table.get(key), prefix + _short(key)
        if param is None:
            raise OpenAIError(400, f"Unrecognized request argument supplied: {where}", param=where)
        if param.noop is None:  # implemented
            kept[key] = value
        elif not param.noop(value, body):
            accepted = " or ".join(param.accepts)
            raise OpenAIError(400, f"{where}: not supported: {param.note} (accepted: {accepted})", param=where)
    return kept


def _validation_error(exc: ValidationError) -> OpenAIError:
    """The first problem as an OpenAI 400; an unexpected key inside an object reads as OpenAI words it."""
    first = exc.errors()[0]
    param, message = describe_error(first)
    if first["type"] == "extra_forbidden":
        return OpenAIError(400, f"Unrecognized request argument supplied: {param}", param=param)
    if first["type"] == "model_type":
        return OpenAIError(400, f"{param}: must be a JSON object", param=param)
    return OpenAIError(400, message, param=param)


def _fail(error_type: str, message: str, **context: object) -> PydanticCustomError:
    return PydanticCustomError(error_type, message, dict(context))


def _shown(value: object) -> str:
    return repr(value) if isinstance(value, str) and len(value) <= 32 else f"a {type(value).__name__}"


# --- the request models -------------------------------------------------------------------------------------------
_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class _Strict(BaseModel):
    """JSON types as OpenAI checks them: ``"5"`` is no integer, ``2.0`` no ``n``, ``"true"`` no boolean (an
    integer is a number, though); ``null`` for an optional field means its default, as at OpenAI."""

    model_config = _STRICT

    @model_validator(mode="before")
    @classmethod
    def _null_is_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        fields = cls.model_fields
        return {k: v for k, v in data.items() if v is not None or k not in fields or fields[k].is_required()}


class TextPart(_Strict):
    type: Literal["text"]
    text: str

    @field_validator("type", mode="before")
    @classmethod
    def _text_only(cls, value: object) -> object:
        if value != "text":
            raise _fail("text_only", "must be 'text': Phi-4 reads text only (got {kind})", kind=_shown(value))
        return value


class ChatMessage(_Strict):
    role: Literal["system", "user", "assistant", "developer"]
    content: list[TextPart]

    @field_validator("role", mode="before")
    @classmethod
    def _known_role(cls, value: object) -> object:
        if value in ("tool", "function"):
            raise _fail("role", "{role} messages are not supported: " + _NO_TOOLS, role=value)
        return value

    @field_validator("content", mode="before")
    @classmethod
    def _string_is_one_part(cls, value: object) -> object:
        if not isinstance(value, str | list):
            raise _fail("content", "must be a string or a list of text parts")
        return [{"type": "text", "text": value}] if isinstance(value, str) else value

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.content)

    @property
    def template_role(self) -> str:
        """``developer`` is OpenAI's newer name for the system role."""
        return "system" if self.role == "developer" else self.role


class StreamOptions(_Strict):
    include_usage: bool = False


class _Request(_Strict):
    """Fields both endpoints share, and the way from a request to engine requests and back to an answer."""

    url: ClassVar[str]
    chat: ClassVar[bool]
    prompt_param: ClassVar[str]  # the field errors about the prompt name
    default_max_tokens: ClassVar[int] = DEFAULT_MAX_TOKENS
    _limits: RequestLimits = PrivateAttr(default_factory=RequestLimits)

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    n: int = Field(default=1, ge=1)
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    stop: list[str] = Field(default_factory=list)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    ignore_eos: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _one_stop_is_a_list(cls, value: object) -> object:
        if not isinstance(value, str | list):
            raise _fail("stop", "must be a string or a list of strings")
        return [value] if isinstance(value, str) else value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids_and_biases(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token, bias in (value or {}).items():
            if not _TOKEN_ID.fullmatch(token):
                raise _fail(
                    "logit_bias", "keys must be token ids (non-negative integers as strings), got {k}", k=_shown(token)
                )
            if not -LOGIT_BIAS_MAX <= bias <= LOGIT_BIAS_MAX:
                raise _fail("logit_bias", "biases must be in [-100, 100], got {b} for token {k}", b=bias, k=token)
        return value

    # --- derived values --------------------------------------------------------------------------------------------
    @property
    def include_usage(self) -> bool:
        """Whether a stream ends with a usage chunk (``stream_options.include_usage``)."""
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def token_bias(self) -> dict[int, float] | None:
        return {int(k): v for k, v in self.logit_bias.items()} if self.logit_bias else None

    @property
    def logprob_count(self) -> int | None:
        """Alternatives per generated token to return (0: only the token's own), or None for no logprobs."""
        raise NotImplementedError

    def completion_limit(self) -> int | None:
        """The client's own cap on completion tokens, if it set one."""
        return self.max_tokens

    def prompt_chars(self) -> int:
        raise NotImplementedError

    def engine_prompt(self) -> str | Prompt:
        raise NotImplementedError

    def prompt_text(self) -> str:
        """The prompt as the model reads it (rendered chat), for job rows and logs."""
        prompt = self.engine_prompt()
        return prompt if isinstance(prompt, str) else prompt.text

    # --- checks that span fields or need the limits ------------------------------------------------------------------
    def check(self, limits: RequestLimits) -> None:
        """What field types cannot say: bounds from ``limits`` and combinations; raises OpenAIError (400)."""
        if self.prompt_chars() > limits.max_prompt_chars:
            raise OpenAIError(
                400,
                f"{self.prompt_param}: {self.prompt_chars()} characters of prompt, more than the "
                f"{limits.max_prompt_chars} this server accepts",
                param=self.prompt_param,
                code="context_length_exceeded",
            )
        if self.n > limits.max_n:
            raise OpenAIError(400, f"n: at most {limits.max_n} choices per request, got {self.n}", param="n")
        if len(self.stop) > limits.max_stop_sequences:
            message = f"stop: at most {limits.max_stop_sequences} stop sequences are allowed, got {len(self.stop)}"
            raise OpenAIError(400, message, param="stop")
        for s in self.stop:
            if not s or len(s) > limits.max_stop_chars:
                message = f"stop: each stop sequence must be 1 to {limits.max_stop_chars} characters, got {len(s)}"
                raise OpenAIError(400, message, param="stop")
        if self.logit_bias and len(self.logit_bias) > limits.max_logit_bias:
            message = f"logit_bias: at most {limits.max_logit_bias} entries, got {len(self.logit_bias)}"
            raise OpenAIError(400, message, param="logit_bias")
        if self.stream_options is not None and not self.stream:
            raise OpenAIError(400, "stream_options: only allowed with stream: true", param="stream_options")

    # --- to the engine and back ------------------------------------------------------------------------------------
    def sampling(self, index: int = 0) -> SamplingParams:
        """Choice ``index`` of ``n``: a seeded request gives each choice its own reproducible seed, seed + index."""
        limit = self.completion_limit()
        seed = None if self.seed is None else (self.seed + index - INT64_MIN) % 2**64 + INT64_MIN
        return SamplingParams(
            max_tokens=limit or self.default_max_tokens,
            fit_to_context=limit is None,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=seed,
            stop=tuple(self.stop),
            ignore_eos=self.ignore_eos,
            logprobs=self.logprob_count,
            logit_bias=self.token_bias,
        )

    def generation_requests(self) -> list[GenerationRequest]:
        """One engine request per choice (``n``); raises only OpenAIError, so callers map one kind of failure."""
        try:
            prompt = self.engine_prompt()
            return [GenerationRequest(prompt, self.sampling(i), prompt_param=self.prompt_param) for i in range(self.n)]
        except Exception as exc:
            raise openai_error(exc) from exc

    def response(self, results: Sequence[GenerationResult], model: str) -> ChatCompletionResponse | CompletionResponse:
        """The non-streaming answer to this request: one choice per result."""
        raise NotImplementedError

    def chunk_stream(self, model: str) -> ChunkStream:
        """The chunks of a streamed answer to this request."""
        return ChunkStream(chat=self.chat, model=model)


class ChatCompletionRequest(_Request):
    url: ClassVar[str] = CHAT_COMPLETIONS
    chat: ClassVar[bool] = True
    prompt_param: ClassVar[str] = "messages"

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=TOP_LOGPROBS_MAX)
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _known_format(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            response_format_of(value)
        except InvalidRequestError as exc:
            raise _fail("response_format", "{m}", m=exc.message.removeprefix("response_format").lstrip(". ")) from exc
        return value

    @property
    def engine_format(self) -> ResponseFormat | None:
        return response_format_of(self.response_format)

    @property
    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None

    def sampling(self, index: int = 0) -> SamplingParams:
        return super().sampling(index).model_copy(update={"response_format": self.engine_format})

    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def prompt_chars(self) -> int:
        return sum(len(m.text) for m in self.messages)

    def check(self, limits: RequestLimits) -> None:
        if len(self.messages) > limits.max_messages:
            message = f"messages: at most {limits.max_messages} messages are allowed, got {len(self.messages)}"
            raise OpenAIError(400, message, param="messages")
        super().check(limits)
        if self.top_logprobs is not None and not self.logprobs:
            raise OpenAIError(400, "top_logprobs: only allowed with logprobs: true", param="top_logprobs")
        if self.response_format is not None and self.engine_format is not None and self.stop:
            message = "stop: not allowed with response_format (a stop string could cut the object short)"
            raise OpenAIError(400, message, param="stop")

    def engine_prompt(self) -> Prompt:
        """Template markup apart from content, so message text never becomes control tokens."""
        return render_chat_prompt([{"role": m.template_role, "content": m.text} for m in self.messages])

    def response(self, results: Sequence[GenerationResult], model: str) -> ChatCompletionResponse:
        return ChatCompletionResponse.from_results(results, model)


class CompletionRequest(_Request):
    url: ClassVar[str] = COMPLETIONS
    chat: ClassVar[bool] = False
    prompt_param: ClassVar[str] = "prompt"
    default_max_tokens: ClassVar[int] = 16  # OpenAI's default for the legacy endpoint

    prompt: str
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=COMPLETION_LOGPROBS_MAX)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_string(cls, value: object) -> object:
        if isinstance(value, list):
            raise _fail("prompt", "must be one string: lists of prompts or token ids are not supported")
        return value

    @property
    def logprob_count(self) -> int | None:
        return self.logprobs

    @property
    def echoed(self) -> str:
        """What precedes each choice's text: the prompt with ``echo``."""
        return self.prompt if self.echo else ""

    def prompt_chars(self) -> int:
        return len(self.prompt)

    def check(self, limits: RequestLimits) -> None:
        super().check(limits)
        if self.echo and self.logprobs is not None:
            message = "echo: not supported together with logprobs (prompt tokens get no logprobs)"
            raise OpenAIError(400, message, param="echo")

    def engine_prompt(self) -> str | Prompt:
        """Plain text unless the server trusts its clients with control tokens (``limits.allow_raw_prompts``)."""
        return self.prompt if self._limits.allow_raw_prompts else Prompt.plain(self.prompt)

    def response(self, results: Sequence[GenerationResult], model: str) -> CompletionResponse:
        return CompletionResponse.from_results(results, model, echo=self.echoed)

    def chunk_stream(self, model: str) -> ChunkStream:
        return ChunkStream(chat=False, model=model, echo=self.echoed)


GenerateRequest = ChatCompletionRequest | CompletionRequest
REQUEST_MODELS: dict[str, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    m.url: m for m in (ChatCompletionRequest, CompletionRequest)
}


def parse_request(url: str, body: object, *, limits: RequestLimits | None = None) -> GenerateRequest:
    """Validate a request body for ``url``; raises OpenAIError (400) naming the first bad field.

    In order: valid Unicode and bounded nesting anywhere, unknown or refused parameters, strict types,
    then ``limits`` and combinations of fields, all before any templating or tokenizing.
    """
    limits = limits or RequestLimits()
    if url not in REQUEST_MODELS:
        raise OpenAIError(400, f"url must be {CHAT_COMPLETIONS} or {COMPLETIONS}, got {_shown(url)}", param="url")
    if not isinstance(body, dict):
        raise OpenAIError(400, "body must be a JSON object", param="body")
    check_json(body, limits.max_json_depth)
    cls = REQUEST_MODELS[url]
    kept = _screen(body, "chat" if cls.chat else "completions")
    messages = kept.get("messages")
    if isinstance(messages, list):
        if len(messages) > limits.max_messages:  # before building a model per message
            message = f"messages: at most {limits.max_messages} messages are allowed, got {len(messages)}"
            raise OpenAIError(400, message, param="messages")
        kept["messages"] = [
            _screen(m, "message", f"messages[{i}].") if isinstance(m, dict) else m for i, m in enumerate(messages)
        ]
    try:
        request = cls.model_validate(kept)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    request._limits = limits
    request.check(limits)
    return request
