"""The optional `card:` section: what a model card says that the data cannot
(`mlrt models card`)."""

from __future__ import annotations

from pydantic import Field

from runtime.spec.base import Section


class Card(Section):
    description: str | None = Field(None, max_length=20_000, description="what the model does")
    owner: str | None = Field(None, max_length=500, description="who answers for it")
    intended_use: str | None = Field(None, max_length=20_000)
    limitations: str | None = Field(None, max_length=20_000)
