"""factory_boy factories for users and entities."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from entities.models import Entity, EntityType


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}@example.com")
    email = factory.SelfAttribute("username")
    password = factory.django.Password("correct-horse-battery-staple")
    is_staff = False


class EntityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Entity

    name = factory.Sequence(lambda n: f"Entity {n}")
    entity_type = EntityType.PERSON
    data = factory.LazyAttribute(lambda o: {"title": "Executive", "company": "Acme Studios"})
