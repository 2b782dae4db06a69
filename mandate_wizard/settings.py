"""Django settings: every value comes from the environment through one django-environ `Env`.

Each variable is listed in the README's configuration table with its default.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DEBUG = env.bool("DEBUG", default=False)

# A key that is missing, short or known to be public is only acceptable while developing.
_DEV_SECRET_KEY = "dev-insecure-key-do-not-use-in-production"
SECRET_KEY = env.str("SECRET_KEY", default=_DEV_SECRET_KEY if DEBUG else "")
if not DEBUG and (
    not SECRET_KEY or SECRET_KEY == _DEV_SECRET_KEY or SECRET_KEY.startswith("django-insecure") or len(SECRET_KEY) < 32
):
    raise ImproperlyConfigured("SECRET_KEY must be set to a random value of at least 32 characters when DEBUG is off.")

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# Render terminates TLS in front of the service and says so in X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
# Health probes arrive over plain HTTP from inside Render's network (HealthCheckMiddleware answers them
# before SecurityMiddleware anyway); exempt so the rule holds whatever the middleware order.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
# The service owns no subdomains of its own host; "preload" only matters once someone submits the domain.
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=SECURE_HSTS_SECONDS > 0)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=SECURE_HSTS_SECONDS > 0)
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
# The product's web front end on another origin; empty: no cross-origin browser access.
CORS_ALLOWED_ORIGINS = env.list("CORS_ALLOWED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "pgtrigger",
    "rest_framework_simplejwt.token_blacklist",
    "corsheaders",
    "axes",
    # The admin's JSON editor for Entity.data; its files are served from our static files.
    "django_json_widget",
    "mandate_wizard",
    "entities",
    "analytics",
    "streams",
]

MIDDLEWARE = [
    # /healthz and /readyz are answered first: probes need no host check, session or login.
    "mandate_wizard.health.HealthCheckMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes requires: turns a lockout raised during authenticate() into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# django-axes guards every authenticate() call (the admin login, the browsable API's login); the JWT
# login (mandate_wizard/auth.py) checks passwords itself and has its own throttles.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=10)
# Minutes a locked user+address pair waits before it may try again; `manage.py axes_reset_username` lifts it now.
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=60))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The lockout message in the admin's own login page (HTML), not django-axes' plain-text response.
AXES_LOCKOUT_CALLABLE = "mandate_wizard.lockout.lockout_response"

ROOT_URLCONF = "mandate_wizard.urls"
WSGI_APPLICATION = "mandate_wizard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "mandate_wizard" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# DATABASE_URL is required: `make run` / `make test` point it at an embedded server when unset.
DATABASES = {"default": env.db("DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=600)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# A streaming replica of DATABASE_URL for the analytics reports (kernel.replica); unset: every read uses the primary.
DATABASE_REPLICA_URL = env.str("DATABASE_REPLICA_URL", default="")
if DATABASE_REPLICA_URL:
    DATABASES["replica"] = {  # the alias kernel.replica.REPLICA
        **env.db_url_config(DATABASE_REPLICA_URL),
        "CONN_MAX_AGE": DATABASES["default"]["CONN_MAX_AGE"],
        "CONN_HEALTH_CHECKS": True,
    }
    # A replica that does not answer fails its reports and /readyz's replica check in 2 s, not in minutes.
    DATABASES["replica"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
    DATABASE_ROUTERS = ["kernel.replica.ReplicaRouter"]
# Retry-After (seconds) on every 503 for an unreachable PostgreSQL or Redis (mandate_wizard.errors).
SERVICE_RETRY_AFTER_SECONDS = env.int("SERVICE_RETRY_AFTER_SECONDS", default=5)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.str("REDIS_URL")
# A Redis or Valkey Cluster: REDIS_URL names any node, and every client (streams.redis, the cache) is a
# cluster client that follows the slots to their primaries (docs/events.md, "On a Redis Cluster").
REDIS_CLUSTER = env.bool("REDIS_CLUSTER", default=False)
# Publishing must never slow an answer: a short socket timeout, then the outbox takes the events.
REDIS_PUBLISH_TIMEOUT = env.float("REDIS_PUBLISH_TIMEOUT", default=0.25)
# After a failed publish, answers skip Redis (outbox only) for this long before trying it again.
REDIS_PUBLISH_RETRY_SECONDS = env.float("REDIS_PUBLISH_RETRY_SECONDS", default=5.0)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "mandate_wizard" / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        # Hashed, compressed files need `collectstatic` first (the deploy build runs it).
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if env.bool("STATIC_MANIFEST", default=not DEBUG)
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework_simplejwt.authentication.JWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.SearchFilter",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "kernel.pagination.StrictLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "mandate_wizard.errors.api_exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "login_ip": env.str("THROTTLE_LOGIN_IP", default="20/min"),
        "login_email": env.str("THROTTLE_LOGIN_EMAIL", default="5/min"),
        "answer_user": env.str("THROTTLE_ANSWER_USER", default="60/min"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Mandate Wizard API",
    "DESCRIPTION": "Answers about entertainment-industry entities, and the demand those answers create.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI and Redoc assets come from drf-spectacular-sidecar's static files (no CDN).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env.int("JWT_ACCESS_MINUTES", default=30)),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env.int("JWT_REFRESH_DAYS", default=7)),
    # Each refresh returns a new refresh token and blacklists the one used; /auth/logout blacklists too.
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
}

# The cache holds throttle counters only; a hung Redis must not hang requests (throttles then fail open).
CACHE_SOCKET_TIMEOUT = env.float("CACHE_SOCKET_TIMEOUT", default=0.25)


def redis_cache(*, url: str, cluster: bool) -> dict:
    """The default cache on the Redis at `url`. Django's RedisCache speaks to one server only; on a cluster
    it is django-valkey's cluster backend (Django Commons). The throttles use single-key GET/SET, so slots
    never matter to them."""
    if cluster:
        timeouts = {"socket_timeout": CACHE_SOCKET_TIMEOUT, "socket_connect_timeout": CACHE_SOCKET_TIMEOUT}
        return {
            "BACKEND": "django_valkey.cluster_cache.cache.ClusterValkeyCache",
            "LOCATION": url,
            "OPTIONS": {"BASE_CLIENT_KWARGS": timeouts},
        }
    return {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": url,
        "OPTIONS": {"socket_timeout": CACHE_SOCKET_TIMEOUT, "socket_connect_timeout": CACHE_SOCKET_TIMEOUT},
    }


CACHES = {"default": redis_cache(url=REDIS_URL, cluster=REDIS_CLUSTER)}

# Answers: embeddings (entities/embeddings.py) and the answer composer (entities/answers.py).
EMBEDDING_BACKEND = env.str("EMBEDDING_BACKEND", default="hashed")  # hashed | sentence-transformers | http
EMBEDDING_MODEL = env.str("EMBEDDING_MODEL", default="")
EMBEDDING_URL = env.str("EMBEDDING_URL", default="")
EMBEDDING_API_KEY = env.str("EMBEDDING_API_KEY", default="")
EMBEDDING_TIMEOUT = env.float("EMBEDDING_TIMEOUT", default=2.0)
ANSWER_COMPOSER = env.str("ANSWER_COMPOSER", default="extractive")  # extractive | generative
ANSWER_LLM_URL = env.str("ANSWER_LLM_URL", default="")  # an OpenAI-compatible .../chat/completions URL
ANSWER_LLM_MODEL = env.str("ANSWER_LLM_MODEL", default="")
ANSWER_LLM_API_KEY = env.str("ANSWER_LLM_API_KEY", default="")
ANSWER_LLM_TIMEOUT = env.float("ANSWER_LLM_TIMEOUT", default=8.0)
# Answer records: signals not counted this long after the answer are re-sent from its record.
ANSWER_RECONCILE_AFTER_SECONDS = env.int("ANSWER_RECONCILE_AFTER_SECONDS", default=60)
ANSWER_RETENTION_DAYS = env.int("ANSWER_RETENTION_DAYS", default=90)

# Stream pipeline.
# The prefix of the stream keys; only the benchmark changes it (throwaway keys beside the real ones).
STREAM_KEY_PREFIX = env.str("STREAM_KEY_PREFIX", default="mandate_wizard")
STREAM_QUERY_SIGNALS = f"{STREAM_KEY_PREFIX}:query_signals"
STREAM_UPDATE_REQUESTS = f"{STREAM_KEY_PREFIX}:update_requests"
STREAM_DEAD_LETTER = f"{STREAM_KEY_PREFIX}:dead_letter"
STREAM_CONSUMER_GROUP = "mandate_wizard_workers"
# QuerySignals spread over this many stream keys ({prefix}:query_signals:{p}); 1 keeps the one key.
STREAM_PARTITIONS = env.int("STREAM_PARTITIONS", default=1)
if STREAM_PARTITIONS < 1:
    raise ImproperlyConfigured("STREAM_PARTITIONS must be 1 or more")
# Inbox ids must outlive any redelivery window; buckets feed trending (30d current + 30d previous).
INBOX_RETENTION_DAYS = env.int("INBOX_RETENTION_DAYS", default=7)
DEMAND_BUCKET_RETENTION_DAYS = env.int("DEMAND_BUCKET_RETENTION_DAYS", default=90)

# Analytics definitions.
TRENDING_MIN_QUERIES = env.int("TRENDING_MIN_QUERIES", default=3)
STALE_MIN_DEMAND_SCORE = env.int("STALE_MIN_DEMAND_SCORE", default=5)
STALE_DAYS_SINCE_UPDATE = env.int("STALE_DAYS_SINCE_UPDATE", default=30)
# The refresh queue's priority (analytics.definitions.RefreshPriority; docs/analytics.md#refresh-queue).
REFRESH_WEIGHT_DEMAND = env.float("REFRESH_WEIGHT_DEMAND", default=0.5)
REFRESH_WEIGHT_FRESHNESS = env.float("REFRESH_WEIGHT_FRESHNESS", default=0.3)
REFRESH_WEIGHT_TREND = env.float("REFRESH_WEIGHT_TREND", default=0.2)
REFRESH_DEMAND_TIMEFRAME = env.str("REFRESH_DEMAND_TIMEFRAME", default="30d")
REFRESH_DEMAND_SATURATION = env.int("REFRESH_DEMAND_SATURATION", default=100)
REFRESH_FRESHNESS_SATURATION_DAYS = env.float("REFRESH_FRESHNESS_SATURATION_DAYS", default=90.0)
REFRESH_TREND_TIMEFRAME = env.str("REFRESH_TREND_TIMEFRAME", default="7d")
REFRESH_TREND_SATURATION = env.float("REFRESH_TREND_SATURATION", default=5.0)
REFRESH_CRITICAL_MIN_DEMAND = env.int("REFRESH_CRITICAL_MIN_DEMAND", default=10)
REFRESH_CRITICAL_DAYS_SINCE_UPDATE = env.int("REFRESH_CRITICAL_DAYS_SINCE_UPDATE", default=30)
# An entity with an open refresh request younger than this is listed as requested and not requested again.
REFRESH_REQUEST_REPEAT_HOURS = env.int("REFRESH_REQUEST_REPEAT_HOURS", default=168)
# The worker scores the whole queue this often into a snapshot the API pages from; 0: score per request.
REFRESH_QUEUE_SNAPSHOT_SECONDS = env.int("REFRESH_QUEUE_SNAPSHOT_SECONDS", default=60)
ANALYTICS_STAFF_ONLY = env.bool("ANALYTICS_STAFF_ONLY", default=True)

# Alerts (analytics/alerts.py): the default webhook of every rule (empty: only rules naming their own URL
# send anything), the per-request timeout, and the retries of a failed delivery (backoff doubles).
ALERT_WEBHOOK_URL = env.str("ALERT_WEBHOOK_URL", default="")
if ALERT_WEBHOOK_URL and not ALERT_WEBHOOK_URL.startswith(("http://", "https://")):
    raise ImproperlyConfigured("ALERT_WEBHOOK_URL must be an http:// or https:// URL.")
ALERT_WEBHOOK_TIMEOUT = env.float("ALERT_WEBHOOK_TIMEOUT", default=5.0)
ALERT_DELIVERY_MAX_ATTEMPTS = env.int("ALERT_DELIVERY_MAX_ATTEMPTS", default=5)
ALERT_DELIVERY_BACKOFF_SECONDS = env.float("ALERT_DELIVERY_BACKOFF_SECONDS", default=30.0)
ALERT_DELIVERY_RETENTION_DAYS = env.int("ALERT_DELIVERY_RETENTION_DAYS", default=90)

# Web /metrics: off (404), staff (staff login or "Authorization: Bearer METRICS_TOKEN"), any (public).
METRICS_ACCESS = env.str("METRICS_ACCESS", default="staff")
if METRICS_ACCESS not in ("off", "staff", "any"):
    raise ImproperlyConfigured("METRICS_ACCESS must be one of: off, staff, any.")
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOG_JSON = env.bool("LOG_JSON", default=False)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        },
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json" if LOG_JSON else "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # axes logs its version at INFO on every process start (each command, each gunicorn worker).
    "loggers": {"django.db.backends": {"level": "WARNING"}, "axes.apps": {"level": "WARNING"}},
}
