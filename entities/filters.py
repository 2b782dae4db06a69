"""Query-string filters and ordering for the entity API; unknown values are a 400, never ignored."""

from __future__ import annotations

import django_filters
from rest_framework.exceptions import ValidationError
from rest_framework.filters import OrderingFilter

from entities.models import Entity, EntityType


class EntityFilter(django_filters.FilterSet):
    entity_type = django_filters.ChoiceFilter(choices=EntityType.choices)
    min_demand_score = django_filters.NumberFilter(field_name="demand_score", lookup_expr="gte", min_value=0)

    class Meta:
        model = Entity
        fields = ["entity_type", "min_demand_score"]


class StrictOrderingFilter(OrderingFilter):
    """DRF's OrderingFilter, but an unknown field is reported instead of silently dropped."""

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
        return super().get_ordering(request, queryset, view)
