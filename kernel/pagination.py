"""Pagination that rejects bad `limit`/`offset` values with a 400 instead of silently ignoring them."""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination


def int_param(request, name: str, *, default: int, minimum: int, maximum: int | None = None) -> int:
    """Read an integer query parameter; a 400 names the parameter and the allowed range."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    allowed = f"an integer from {minimum} to {maximum}" if maximum is not None else f"an integer >= {minimum}"
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationError({name: f"'{raw}' is not valid: {name} must be {allowed}."}) from None
    if value < minimum or (maximum is not None and value > maximum):
        raise ValidationError({name: f"{value} is out of range: {name} must be {allowed}."})
    return value


class StrictLimitOffsetPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500

    def get_limit(self, request) -> int:
        return int_param(request, self.limit_query_param, default=self.default_limit, minimum=1, maximum=self.max_limit)

    def get_offset(self, request) -> int:
        return int_param(request, self.offset_query_param, default=0, minimum=0)

    def get_schema_operation_parameters(self, view):
        # Document the ranges get_limit / get_offset enforce, so clients (and schemathesis) know them.
        parameters = super().get_schema_operation_parameters(view)
        ranges = {self.limit_query_param: (1, self.max_limit), self.offset_query_param: (0, None)}
        for parameter in parameters:
            minimum, maximum = ranges.get(parameter["name"], (None, None))
            if minimum is not None:
                parameter["schema"]["minimum"] = minimum
            if maximum is not None:
                parameter["schema"]["maximum"] = maximum
        return parameters
