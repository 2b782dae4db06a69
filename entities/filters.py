"""Query-string filters and ordering for the entity API; unknown values are a 400, never ignored."""

from __future__ import annotations

import django_filters
from django import forms
from drf_spectacular.utils import extend_schema_field
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from entities.models import Entity, EntityType


@extend_schema_field({"type": "integer", "minimum": 0})
class NonNegativeIntegerFilter(django_filters.NumberFilter):
    """A NumberFilter for whole numbers >= 0, documented as such in the OpenAPI schema."""

    field_class = forms.IntegerField

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("min_value", 0)
        super().__init__(*args, **kwargs)


class EntityFilter(django_filters.FilterSet):
    # The demand row's copy of the type: filtered there, a type's demand ranking is one index scan.
    entity_type = django_filters.ChoiceFilter(field_name="demand__entity_type", choices=EntityType.choices)
    min_demand_score = NonNegativeIntegerFilter(field_name="demand__demand_score", lookup_expr="gte")

    class Meta:
        model = Entity
        fields = ["entity_type", "min_demand_score"]


class StrictOrderingFilter(OrderingFilter):
    """DRF's OrderingFilter, but an unknown field is reported instead of silently dropped.

    A view's `ordering_sources` maps public ordering names to the fields they order by
    (`demand_score` -> `demand__demand_score`), so the names stay stable where the data moves.
    """

    def get_ordering(self, request, queryset, view):
        params = request.query_params.get(self.ordering_param)
        if params:
            allowed = [name for name, _label in self.get_valid_fields(queryset, view, {"request": request})]
            for term in (part.strip() for part in params.split(",")):
                if term.lstrip("-") not in allowed:
                    raise ValidationError(
                        {
                            self.ordering_param: f"'{term}' is not a known field: use one of {', '.join(allowed)} "
                            "(prefix with - for descending)."
                        }
                    )
        ordering = super().get_ordering(request, queryset, view)
        sources = getattr(view, "ordering_sources", {})
        if not ordering or not sources:
            return ordering
        return [
            ("-" if term.startswith("-") else "") + sources.get(term.lstrip("-"), term.lstrip("-")) for term in ordering
        ]

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        fields = [name for name in getattr(view, "ordering_fields", None) or [] if name != "__all__"]
        for parameter in parameters:
            if parameter["name"] == self.ordering_param and fields:
                # One field, or several separated by commas; each may be prefixed with - (descending).
                parameter["schema"]["enum"] = [prefix + name for name in fields for prefix in ("", "-")]
        return parameters
