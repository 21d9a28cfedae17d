"""Model backends: the protocol, the OpenAI-compatible client and the embedded local model."""

from agent.models.base import ChatModel, ModelRequest, ModelResponse, ResponseMeta

__all__ = ["ChatModel", "ModelRequest", "ModelResponse", "ResponseMeta"]
