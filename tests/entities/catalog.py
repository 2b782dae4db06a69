"""A small, hand-written entity catalogue for the retrieval and answer tests (embedded like production)."""

from __future__ import annotations

from entities.models import Entity, EntityType
from entities.services import entities_reindex
from tests.entities.factories import EntityFactory

PEOPLE = {
    "Chris Mansolillo": {
        "title": "SVP, Scripted Development",
        "company": "Silver Harbor Studios",
        "mandate": {
            "overview": "Buying elevated horror and grounded sci-fi limited series with a strong lead.",
            "looking_for": ["elevated horror with a strong female lead", "grounded sci-fi set in the near future"],
            "not_looking_for": ["multi-camera comedy"],
        },
        "recent_greenlights": ["The Midnight Crown", "Echoes of Glass"],
    },
    "Chris Ishikawa": {
        "title": "VP, Comedy Development",
        "company": "Granite Media",
        "mandate": {"overview": "Buying workplace comedy with an ensemble cast.", "looking_for": ["workplace comedy"]},
    },
    "Dana Okafor": {
        "title": "Head of Unscripted",
        "company": "Meridian Television",
        "mandate": {
            "overview": "Buying culinary competition formats and dating formats.",
            "looking_for": ["culinary competition formats", "dating formats"],
        },
    },
    "Priya Lindqvist": {
        "title": "VP, Documentary Features",
        "company": "Northlight Pictures",
        "mandate": {
            "overview": "Buying nature documentaries with a conservation angle.",
            "looking_for": ["nature documentaries with a conservation angle"],
        },
    },
    # Two more Chrises: asking about one Chris must not return the others.
    "Chris Pryce": {
        "title": "EVP, Scripted Development",
        "company": "Atlas Entertainment",
        "mandate": {"overview": "Buying romantic comedies.", "looking_for": ["romantic comedies for streaming"]},
    },
    "Chris Carrow": {
        "title": "Creative Executive",
        "company": "Granite Media",
        "mandate": {"overview": "Buying heist thrillers.", "looking_for": ["heist thrillers"]},
    },
    "Marcus Whitaker": {
        "title": "Head of Film",
        "company": "Atlas Entertainment",
        "mandate": {"overview": "Buying heist thrillers and political thrillers.", "looking_for": ["heist thrillers"]},
    },
}
COMPANIES = {
    "Silver Harbor Studios": {"kind": "studio", "headquarters": "Los Angeles", "focus": ["prestige period drama"]},
    "Granite Media": {"kind": "network", "headquarters": "New York", "focus": ["workplace comedy"]},
    "Northlight Pictures": {"kind": "distributor", "headquarters": "London", "focus": ["documentary"]},
}
PROJECTS = {
    "The Midnight Crown": {"genre": "Elevated Horror", "status": "greenlit", "executive": "Chris Mansolillo"},
    "Echoes of Glass": {"genre": "Science Fiction", "status": "in production", "executive": "Chris Mansolillo"},
}


def catalog_create() -> dict[str, Entity]:
    """Create the catalogue, compute its embeddings, and return the entities by name."""
    entities = {}
    for kind, records in (
        (EntityType.PERSON, PEOPLE),
        (EntityType.COMPANY, COMPANIES),
        (EntityType.PROJECT, PROJECTS),
    ):
        for name, data in records.items():
            entities[name] = EntityFactory(name=name, entity_type=kind, data=data)
    entities_reindex(entity_ids=[entity.pk for entity in entities.values()])
    return entities
