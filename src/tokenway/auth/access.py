"""Whether a key may use a model: the one check every endpoint that names a model makes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tokenway.config.schema import ModelConfig
from tokenway.domain.types import Principal
from tokenway.errors import BadRequest, NotFound, PermissionDenied

__all__ = ["check_model"]


def check_model(
    models: Mapping[str, ModelConfig], principal: Principal, model: Any, kind: str
) -> None:
    """Raise the client's error unless `model` names a configured model of `kind` (`chat`,
    `embedding`) that `principal` may use. An unknown model and a model of the other kind are
    the same 404, as OpenAI answers both."""
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string.", param="model")
    cfg = models.get(model)
    if cfg is None or cfg.kind != kind:
        raise NotFound(
            f"The model '{model}' does not exist or you do not have access to it.",
            code="model_not_found",
        )
    if principal.models is not None and model not in principal.models:
        raise PermissionDenied(f"This key may not use the model '{model}'.", param="model")
