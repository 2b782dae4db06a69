from django.urls import path

from streams.apis import DeadLetterListView, DeadLetterReplayView, StreamsInfoView

urlpatterns = [
    path("streams/info", StreamsInfoView.as_view(), name="events-streams-info"),
    path("dead-letter", DeadLetterListView.as_view(), name="events-dead-letter"),
    path("dead-letter/replay", DeadLetterReplayView.as_view(), name="events-dead-letter-replay"),
]
