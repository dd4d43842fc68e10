"""The OpenAI chat-completions subset PaddleOCR-VL's clients use, as pydantic models.

Requests keep unknown keys (``extra="allow"``): PaddleX sends backend-specific ones in ``extra_body``
(``skip_special_tokens``, ``repetition_penalty``, ``mm_processor_kwargs``), which an OpenAI-compatible server
accepts. Message parts are typed: ``text`` and ``image_url`` only.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ImageURL(_Open):
    url: str = Field(description="data:image/...;base64,... or an http(s) URL")


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageURL


class TextPart(_Open):
    type: Literal["text"]
    text: str


class Message(_Open):
    role: Literal["system", "user", "assistant", "developer"]
    content: Union[str, List[Dict[str, Any]], None] = None  # parts checked by the route, which names a bad one


class ChatCompletionRequest(_Open):
    model: str
    messages: List[Message] = Field(min_length=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    n: Optional[int] = Field(None, ge=1, le=1, description="one answer per request")
    stream: Optional[bool] = False


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"


class ChatCompletion(BaseModel):
    """``hpinfer_note`` (an extension; OpenAI clients keep it in ``model_extra``): how the answer was made
    when it is not what the prompt asks for, e.g. a table's text without a table model."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: List[Choice]
    hpinfer_note: Optional[str] = None


class Delta(BaseModel):
    role: Optional[Literal["assistant"]] = None
    content: Optional[str] = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: Delta
    finish_reason: Optional[Literal["stop", "length"]] = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: List[ChunkChoice]
