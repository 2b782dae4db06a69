"""Login with email and password for JWTs (`POST /auth/login`, `/auth/refresh`, `/auth/logout`) and the API's throttles.

Refresh rotates: each refresh returns a new refresh token and blacklists the one used (SimpleJWT's
token_blacklist app); logout blacklists the given refresh token, so neither can be used again.

A wrong email and a wrong password get the same 401, after the same password-hashing work, so the
response never tells whether an account exists. Throttle state lives in the Django cache (Redis);
when that cache is unreachable the throttles let requests through rather than fail them.
"""

from __future__ import annotations

import hashlib
import logging

import redis
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django_valkey.exceptions import ConnectionInterrupted
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle
from rest_framework.views import APIView
from rest_framework_simplejwt.tokens import RefreshToken
from rest_framework_simplejwt.views import TokenBlacklistView, TokenRefreshView
from valkey.exceptions import ValkeyClusterException, ValkeyError

from kernel.openapi import ErrorSerializer

logger = logging.getLogger(__name__)

INVALID_CREDENTIALS = "Invalid email or password."
# What the cache raises when its server is unreachable: Django's RedisCache lets redis-py's errors through;
# django-valkey's cluster backend (REDIS_CLUSTER) wraps valkey-py's in ConnectionInterrupted, and raises
# ValkeyClusterException when it cannot read the slot map.
CACHE_ERRORS = (redis.RedisError, OSError, ConnectionInterrupted, ValkeyError, ValkeyClusterException)


class FailOpenThrottleMixin:
    """Rates read at request time (settings can change in tests); a cache outage never fails a request."""

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES[self.scope]

    def allow_request(self, request, view):
        try:
            return super().allow_request(request, view)
        except CACHE_ERRORS as error:
            logger.warning("Throttle %s skipped: cache unavailable (%s)", self.scope, error)
            return True


class LoginIPThrottle(FailOpenThrottleMixin, SimpleRateThrottle):
    """Login and refresh attempts per client address (THROTTLE_LOGIN_IP)."""

    scope = "login_ip"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginEmailThrottle(FailOpenThrottleMixin, SimpleRateThrottle):
    """Login attempts per email address, whatever the client address (THROTTLE_LOGIN_EMAIL)."""

    scope = "login_email"

    def get_cache_key(self, request, view):
        email = request.data.get("email") if isinstance(request.data, dict) else None
        if not isinstance(email, str) or not email.strip():
            return None
        # Hashed: cache keys should not carry addresses.
        ident = hashlib.sha256(email.strip().lower().encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AnswerUserThrottle(FailOpenThrottleMixin, UserRateThrottle):
    """Answers per user (THROTTLE_ANSWER_USER)."""

    scope = "answer_user"


def user_authenticate(*, email: str, password: str) -> AbstractBaseUser | None:
    """The active user with this email (any case) and password, or None."""
    User = get_user_model()
    user = User.objects.filter(email__iexact=email.strip(), is_active=True).order_by("pk").first()
    if user is None:
        # Spend the same hashing time as a real check, so timing does not reveal unknown emails.
        User().set_password(password)
        return None
    return user if user.check_password(password) else None


class LoginApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes = [LoginIPThrottle, LoginEmailThrottle]

    class LoginInputSerializer(serializers.Serializer):
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(max_length=4096, trim_whitespace=False)

    class LoginOutputSerializer(serializers.Serializer):
        access = serializers.CharField()
        refresh = serializers.CharField()

    @extend_schema(
        summary="Log in",
        description="Exchange an email (any case) and password for an access and a refresh JWT.",
        request=LoginInputSerializer,
        responses={
            200: LoginOutputSerializer,
            400: OpenApiResponse(ErrorSerializer, description="Missing or malformed field"),
            401: OpenApiResponse(ErrorSerializer, description="Invalid email or password"),
            415: OpenApiResponse(ErrorSerializer, description="Unsupported or unreadable body encoding"),
            429: OpenApiResponse(ErrorSerializer, description="Too many attempts (see Retry-After)"),
        },
        auth=[],
    )
    def post(self, request):
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        serializer = self.LoginInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = user_authenticate(**serializer.validated_data)
        if user is None:
            return Response({"error": INVALID_CREDENTIALS}, status=status.HTTP_401_UNAUTHORIZED)
        refresh = RefreshToken.for_user(user)
        return Response({"access": str(refresh.access_token), "refresh": str(refresh)}, status=status.HTTP_200_OK)


class RefreshApi(TokenRefreshView):
    throttle_classes = [LoginIPThrottle]

    @extend_schema(
        summary="Refresh the access token",
        request=inline_serializer("RefreshInput", {"refresh": serializers.CharField()}),
        description="Returns a new access token and a new refresh token; the refresh token sent is then refused.",
        responses={
            200: inline_serializer(
                "RefreshOutput", {"access": serializers.CharField(), "refresh": serializers.CharField()}
            ),
            400: OpenApiResponse(ErrorSerializer, description="Missing refresh token"),
            401: OpenApiResponse(ErrorSerializer, description="Invalid or expired refresh token"),
            415: OpenApiResponse(ErrorSerializer, description="Unsupported or unreadable body encoding"),
            429: OpenApiResponse(ErrorSerializer, description="Too many attempts (see Retry-After)"),
        },
        auth=[],
    )
    def post(self, request, *args, **kwargs):
        return super().post(request, *args, **kwargs)


class LogoutApi(TokenBlacklistView):
    throttle_classes = [LoginIPThrottle]

    @extend_schema(
        summary="Log out",
        description="Blacklist the refresh token: it can no longer be refreshed. Access tokens expire on their own.",
        request=inline_serializer("LogoutInput", {"refresh": serializers.CharField()}),
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="Logged out: an empty JSON object"),
            400: OpenApiResponse(ErrorSerializer, description="Missing refresh token or malformed body"),
            401: OpenApiResponse(ErrorSerializer, description="Invalid, expired or already blacklisted refresh token"),
            415: OpenApiResponse(ErrorSerializer, description="Unsupported or unreadable body encoding"),
            429: OpenApiResponse(ErrorSerializer, description="Too many attempts (see Retry-After)"),
        },
        auth=[],
    )
    def post(self, request, *args, **kwargs):
        if not isinstance(request.data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Expected a JSON object."]})
        return super().post(request, *args, **kwargs)
