"""The generative composer against a local OpenAI-compatible chat-completions server (http.server)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from entities.answers import ExtractiveComposer, GenerativeComposer, composer
from entities.retrieval import entity_search
from tests.entities.catalog import catalog_create

LLM_ANSWER = "Chris Mansolillo runs scripted development at Silver Harbor Studios."


class ChatServer:
    """A chat-completions endpoint on 127.0.0.1 whose behaviour a test sets: ok, slow, error or garbage."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.delay = 0.0
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        # Set once a reply (of any kind) has been written: a client that timed out returned before it.
        self.responded = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                server.requests.append(json.loads(self.rfile.read(length)))
                server.headers.append(dict(self.headers))
                if server.delay:
                    time.sleep(server.delay)
                if server.mode == "error":
                    self.send_response(500)
                    self.end_headers()
                    server.responded.set()
                    return
                body = (
                    b"not json"
                    if server.mode == "garbage"
                    else json.dumps(
                        {
                            "id": "chatcmpl-test",
                            "object": "chat.completion",
                            "choices": [{"index": 0, "message": {"role": "assistant", "content": LLM_ANSWER}}],
                        }
                    ).encode()
                )
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left, as the slow-model tests intend
                server.responded.set()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/chat/completions"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ChatServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server() -> Iterator[ChatServer]:
    with ChatServer() as server:
        yield server


@pytest.fixture
def hits(db):
    catalog_create()
    return entity_search(question="Who is Chris Mansolillo?", limit=3)


def generative(url: str, timeout: float = 2.0) -> GenerativeComposer:
    return GenerativeComposer(
        url=url, model="test-model", api_key="sk-test", timeout=timeout, fallback=ExtractiveComposer()
    )


def test_the_model_answers_from_the_retrieved_facts(chat_server, hits):
    answer = generative(chat_server.url).compose(question="Who is Chris Mansolillo?", hits=hits)
    assert answer == LLM_ANSWER
    (sent,) = chat_server.requests
    assert sent["model"] == "test-model"
    assert [message["role"] for message in sent["messages"]] == ["system", "user"]
    assert "Who is Chris Mansolillo?" in sent["messages"][1]["content"]
    assert "SVP, Scripted Development at Silver Harbor Studios" in sent["messages"][1]["content"]
    assert chat_server.headers[0]["Authorization"] == "Bearer sk-test"


def test_a_slow_model_times_out_and_the_answer_is_extractive(chat_server, hits):
    chat_server.delay = 3.0
    answer = generative(chat_server.url, timeout=0.3).compose(question="Who is Chris Mansolillo?", hits=hits)
    # The server was still sleeping on the request when the answer came back: it was not waited for.
    assert not chat_server.responded.is_set()
    assert answer == ExtractiveComposer().compose(question="Who is Chris Mansolillo?", hits=hits)
    assert len(chat_server.requests) == 1  # it was asked, and not waited for


@pytest.mark.parametrize("mode", ["error", "garbage"])
def test_a_failing_model_falls_back_to_extractive(chat_server, hits, mode):
    chat_server.mode = mode
    answer = generative(chat_server.url).compose(question="Who is Chris Mansolillo?", hits=hits)
    assert answer.startswith("Chris Mansolillo is SVP, Scripted Development")


def test_an_unreachable_model_falls_back_to_extractive(hits):
    with ChatServer() as server:
        url = server.url
    answer = generative(url).compose(question="Who is Chris Mansolillo?", hits=hits)
    assert answer.startswith("Chris Mansolillo is SVP")


def test_nothing_found_never_calls_the_model(chat_server, db):
    answer = generative(chat_server.url).compose(question="Who?", hits=[])
    assert answer == ExtractiveComposer().compose(question="Who?", hits=[])
    assert chat_server.requests == []


def test_settings_select_the_composer(settings, chat_server):
    assert isinstance(composer(), ExtractiveComposer)
    settings.ANSWER_COMPOSER = "generative"
    settings.ANSWER_LLM_URL = chat_server.url
    assert isinstance(composer(), GenerativeComposer)


def test_api_answer_uses_the_configured_model_and_survives_its_timeout(settings, chat_server, user, redis_client):
    cache.clear()
    catalog_create()
    settings.ANSWER_COMPOSER = "generative"
    settings.ANSWER_LLM_URL = chat_server.url
    settings.ANSWER_LLM_TIMEOUT = 0.3
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}")

    response = client.post("/api/answer", {"question": "Who is Chris Mansolillo?"}, format="json")
    assert response.status_code == 200
    assert response.json()["answer"] == LLM_ANSWER

    chat_server.delay = 3.0
    response = client.post("/api/answer", {"question": "Who is Chris Mansolillo?"}, format="json")
    assert response.status_code == 200
    assert response.json()["answer"].startswith("Chris Mansolillo is SVP, Scripted Development")
    cache.clear()
