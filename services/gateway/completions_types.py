"""The request body of OpenAI's legacy `POST /v1/completions` (pydantic), turned into the worker's raw prompt tokens
and sampling. A text prompt is encoded after BOS, as the chat encoding starts; with `suffix` it is DeepSeek's
fill-in-the-middle prompt `BOS <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜>`, after which the model
writes the middle. A prompt of token ids goes to the worker as given. Fields the SDK can send are implemented,
recorded or refused by name (openai_fields.COMPLETIONS)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from foundation.chat.protocol import BOS_ID
from foundation.chat.tokenizer import Tokenizer
from foundation.clients.worker import Sampling
from services.gateway.errors import ApiError
from services.gateway.openai_fields import COMPLETIONS
from services.gateway.openai_types import SamplingFields, StreamOptions

FIM_BEGIN, FIM_HOLE, FIM_END = "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for completions
MAX_LOGPROBS = 5  # OpenAI's bound on completions' `logprobs`


class CompletionRequest(SamplingFields):
    prompt: str | list[int] = ""
    suffix: str | None = None
    max_tokens: int | None = Field(None, gt=0)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    n: int = Field(1, ge=1)  # at most the gateway's max_choices
    stream: bool = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _refused_fields(cls, body: Any) -> Any:
        return COMPLETIONS.refuse(body)

    @field_validator("prompt", mode="before")
    @classmethod
    def _one_prompt(cls, prompt: Any) -> Any:
        """A string, a list of one string, or a list of token ids; a batch of prompts is refused."""
        if isinstance(prompt, list) and prompt and not all(isinstance(p, int) and not isinstance(p, bool)
                                                           for p in prompt):
            if len(prompt) != 1 or not isinstance(prompt[0], str | list):
                raise ApiError(400, "prompt: one prompt per request (a string or a list of token ids)",
                               param="prompt")
            return prompt[0]
        if prompt is None:
            raise ApiError(400, "prompt: required", param="prompt")
        return prompt

    def token_ids(self, tokenizer: Tokenizer) -> list[int]:
        """The prompt as the worker takes it: BOS and the text (with `suffix`, the FIM prompt), or the ids given."""
        if isinstance(self.prompt, list):
            if self.suffix is not None:
                raise ApiError(400, "suffix: only with a text prompt", param="suffix")
            if not self.prompt:
                raise ApiError(400, "prompt: no token ids", param="prompt")
            if not all(0 <= token_id < tokenizer.vocab_size for token_id in self.prompt):
                raise ApiError(400, f"prompt: token ids lie in [0, {tokenizer.vocab_size})", param="prompt")
            return list(self.prompt)
        if self.suffix is None:
            return [BOS_ID, *tokenizer.encode(self.prompt)]
        begin, hole, end = (tokenizer.token_to_id(token) for token in (FIM_BEGIN, FIM_HOLE, FIM_END))
        return [BOS_ID, begin, *tokenizer.encode(self.prompt), hole, *tokenizer.encode(self.suffix), end]

    def text_length(self) -> int:
        """About how much text the prompt holds, for the tenant's token rate (characters; a token id counts 4)."""
        if isinstance(self.prompt, list):
            return 4 * len(self.prompt)
        return len(self.prompt) + len(self.suffix or "")

    def sampling(self) -> Sampling:
        try:
            return self.sampled(self.max_tokens or DEFAULT_MAX_TOKENS, self.logprobs is not None or None,
                                self.logprobs or None)
        except ValueError as error:  # the bias's keys
            raise ApiError(400, str(error), param="logit_bias") from None
