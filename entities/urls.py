from rest_framework.routers import SimpleRouter

from entities.apis import EntityViewSet

router = SimpleRouter()
router.register("entities", EntityViewSet, basename="entity")

urlpatterns = router.urls
