"""`POST /api/answer`: retrieve the entities a question is about, answer it, and record the demand."""

from __future__ import annotations

import time

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.parsers import JSONParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import JWTAuthentication

from entities.answers import composer, entity_snippet
from entities.retrieval import entity_search
from entities.services import answer_record_create, answer_signals_publish
from kernel.openapi import ERROR_RESPONSES, ErrorSerializer
from streams.events import ROLES

QUESTION_MAX_LENGTH = 1000
LIMIT_DEFAULT, LIMIT_MAX = 5, 20


# Written out because the serializer cannot say "no other fields" (additionalProperties) to the schema.
ANSWER_REQUEST_SCHEMA = {
    "type": "object",
    "properties": {
        "question": {
            "type": "string",
            "minLength": 1,
            "maxLength": QUESTION_MAX_LENGTH,
            "description": "1 to 1,000 characters after trimming surrounding whitespace.",
        },
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": LIMIT_MAX,
            "default": LIMIT_DEFAULT,
            "description": "The most entities to return (fewer when fewer match).",
        },
    },
    "required": ["question"],
    "additionalProperties": False,
}


class StrictCharField(serializers.CharField):
    """A string and only a string (DRF's CharField would turn 42 into "42")."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer and only that: not "5", not 5.0, not true."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class AnswerApi(APIView):
    authentication_classes = [JWTAuthentication]
    permission_classes = [IsAuthenticated]
    # The per-user answer throttle is project glue (mandate_wizard.auth); mandate_wizard/urls.py sets it.
    throttle_classes: list = []
    parser_classes = [JSONParser]

    class AnswerInputSerializer(serializers.Serializer):
        question = StrictCharField(max_length=QUESTION_MAX_LENGTH, trim_whitespace=True)
        limit = StrictIntegerField(min_value=1, max_value=LIMIT_MAX, default=LIMIT_DEFAULT)

        def to_internal_value(self, data):
            if not isinstance(data, dict):
                raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
            if unknown := sorted(set(data) - set(self.fields)):
                raise serializers.ValidationError(
                    {name: ["Unknown field: the body takes only question and limit."] for name in unknown}
                )
            return super().to_internal_value(data)

    class AnswerOutputSerializer(serializers.Serializer):
        class AnswerEntitySerializer(serializers.Serializer):
            id = serializers.UUIDField()
            name = serializers.CharField()
            entity_type = serializers.CharField()
            score = serializers.FloatField(
                help_text=(
                    "How well the entity matches: for a name, the share of its words in the question (typos "
                    "count less); for a list question, the full-text rank of its topic; 0 for related entities."
                )
            )
            snippet = serializers.CharField()
            role = serializers.ChoiceField(
                choices=ROLES,
                help_text=(
                    "subject: what the question is about (a named entity, or one satisfying every constraint "
                    "of a list question); related: named by a subject's record (its company, projects…)."
                ),
            )
            rank = serializers.IntegerField(min_value=1, help_text="1-based place in the answer: subjects first.")

        answer = serializers.CharField()
        entities = AnswerEntitySerializer(many=True)
        question = serializers.CharField()

    @extend_schema(
        summary="Answer a question",
        description=(
            "The entities the question is about (role subject): the entity it names, or for a list question "
            "every entity satisfying its constraints (type, company or platform, topic), ranked; then entities "
            "a subject's record names (role related). At most `limit` in all. An answer composed from their "
            "data, and one QuerySignal per returned entity carrying its role and rank. No relevant entity: a "
            "plain 'nothing found' answer, an empty list and no signals."
        ),
        request={"application/json": ANSWER_REQUEST_SCHEMA},
        responses={
            200: AnswerOutputSerializer,
            400: ERROR_RESPONSES[400],
            401: ERROR_RESPONSES[401],
            415: OpenApiResponse(ErrorSerializer, description="The body is not JSON"),
            429: OpenApiResponse(ErrorSerializer, description="Too many questions (see Retry-After)"),
        },
    )
    def post(self, request):
        started = time.perf_counter()
        serializer = self.AnswerInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        question, limit = serializer.validated_data["question"], serializer.validated_data["limit"]
        hits = entity_search(question=question, limit=limit)
        answer_composer = composer()
        answer = answer_composer.compose(question=question, hits=hits)
        # Recorded before the signals go out, so a signal Redis loses can be re-sent from the record.
        record = answer_record_create(
            question=question,
            hits=hits,
            user_id=request.user.pk,
            latency_ms=(time.perf_counter() - started) * 1000,
            composer=answer_composer.name,
        )
        # Never raises: when Redis is down the signals go to the outbox (see streams.publisher).
        answer_signals_publish(record=record)
        entities = [
            {
                "id": hit.id,
                "name": hit.name,
                "entity_type": hit.entity_type,
                "score": round(hit.score, 6),
                "snippet": entity_snippet(hit),
                "role": hit.role,
                "rank": hit.rank,
            }
            for hit in hits
        ]
        output = {"answer": answer, "entities": entities, "question": question}
        return Response(self.AnswerOutputSerializer(output).data)
