"""What every spec section shares: frozen, unknown keys refused, errors naming the field."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict

from runtime.errors import InputError


class SpecError(InputError):
    """A spec that cannot run. `errors` holds one `path: message` line per problem."""

    def __init__(self, errors: Sequence[str], source: str = "spec"):
        self.errors = list(errors)
        self.source = source
        super().__init__(f"{source}: invalid job spec\n" + "\n".join(f"  {e}" for e in errors))


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)



def in_order(lo_name: str, lo: float | None, hi_name: str, hi: float | None) -> None:
    """A section's lower bound must not pass its upper bound (either may be unset)."""
    if lo is not None and hi is not None and lo > hi:
        raise ValueError(f"{lo_name} ({lo}) must be <= {hi_name} ({hi})")



class FieldError(ValueError):
    """Raised inside a model validator to report an error at a nested field."""

    def __init__(self, loc: tuple[str, ...], message: str):
        self.loc = loc
        super().__init__(message)
