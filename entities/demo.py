"""Deterministic, realistic demo records of the entertainment industry, linked to each other by name.

`demo_entities(count, seed)` always yields the same records (ids included) for the same arguments,
so seeding twice changes nothing. Mix: platforms, companies, production companies, executives with
mandates, projects, deals, genres and formats. "Chris Mansolillo" is always among the people.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from entities.models import EntityType

DEMO_NAMESPACE = uuid.UUID("6f1d7a52-3b8e-4c1a-9d0e-5a4b3c2d1e0f")
DEFAULT_DEMO_COUNT = 6408

GENRES = [
    "Drama",
    "Comedy",
    "Thriller",
    "Horror",
    "Science Fiction",
    "Fantasy",
    "Crime",
    "Romance",
    "Documentary",
    "Animation",
    "Action",
    "Mystery",
    "Western",
    "Musical",
    "Family",
    "Young Adult",
    "True Crime",
    "Satire",
    "Period Drama",
    "Procedural",
    "Psychological Thriller",
    "Elevated Horror",
    "Romantic Comedy",
    "Dark Comedy",
    "Sports Drama",
    "Legal Drama",
    "Medical Drama",
    "Political Thriller",
    "Heist",
    "Coming of Age",
    "Dystopian",
    "Supernatural",
    "War",
    "Biopic",
    "Docuseries",
    "Reality Competition",
    "Anthology",
    "Adult Animation",
    "Kids Animation",
    "Nature Documentary",
]
FORMATS = [
    "Limited Series",
    "Ongoing Series",
    "Feature Film",
    "Documentary Feature",
    "Docuseries",
    "Unscripted Series",
    "Animated Series",
    "Short-Form Series",
    "Podcast Adaptation",
    "Miniseries",
    "Anthology Series",
    "Talk Show",
    "Competition Series",
    "Stand-Up Special",
    "Made-for-TV Movie",
    "Interactive Special",
    "Franchise Spin-off",
    "Co-production",
    "Format Adaptation",
    "Live Event",
]
PLATFORM_STEMS = [
    "Netflix",
    "Prime Video",
    "Hulu",
    "Max",
    "Apple TV+",
    "Peacock",
    "Paramount+",
    "Disney+",
    "Starz",
    "Showtime",
    "AMC+",
    "BritBox",
    "Crunchyroll",
    "Tubi",
    "Roku Channel",
    "Pluto TV",
    "Freevee",
    "MGM+",
    "Shudder",
    "Acorn TV",
    "Sundance Now",
    "Mubi",
    "Criterion Channel",
    "Hallmark+",
    "BET+",
    "Discovery+",
    "ESPN+",
    "Fubo",
    "Sling",
    "Philo",
]
PLATFORM_MODELS = ["SVOD", "AVOD", "FAST", "hybrid SVOD/AVOD", "premium cable", "broadcast network"]
REGIONS = ["US", "UK", "Canada", "Global", "EMEA", "LATAM", "APAC", "Nordics", "Germany", "France", "Korea", "Japan"]
COMPANY_WORDS = [
    "Silver",
    "Harbor",
    "Northlight",
    "Blue",
    "Granite",
    "Meridian",
    "Crescent",
    "Iron",
    "Golden",
    "Summit",
    "Lantern",
    "Redwood",
    "Atlas",
    "Beacon",
    "Echo",
    "Falcon",
    "Juniper",
    "Keystone",
    "Monarch",
    "Orchard",
    "Pioneer",
    "Quarry",
    "Riverside",
    "Sterling",
    "Tidewater",
    "Union",
    "Vantage",
    "Willow",
    "Zenith",
    "Aurora",
    "Cobalt",
    "Driftwood",
    "Ember",
    "Foxglove",
    "Hollow",
    "Ivory",
    "Jasper",
    "Kestrel",
    "Lighthouse",
    "Marble",
    "Nightjar",
    "Obsidian",
]
COMPANY_SUFFIXES = ["Studios", "Entertainment", "Media", "Pictures", "Television", "Media Group", "Films", "Networks"]
PRODCO_SUFFIXES = ["Productions", "Films", "Pictures", "Content", "Story Co.", "House", "Features", "Originals"]
FIRST_NAMES = [
    "Chris",
    "Alex",
    "Jordan",
    "Taylor",
    "Morgan",
    "Casey",
    "Jamie",
    "Riley",
    "Avery",
    "Quinn",
    "Dana",
    "Robin",
    "Sam",
    "Drew",
    "Cameron",
    "Reese",
    "Elliot",
    "Harper",
    "Rowan",
    "Sydney",
    "Blair",
    "Emerson",
    "Hayden",
    "Kendall",
    "Logan",
    "Parker",
    "Sage",
    "Skyler",
    "Tatum",
    "Wren",
    "Adrian",
    "Bianca",
    "Carmen",
    "Diego",
    "Elena",
    "Farah",
    "Gideon",
    "Hana",
    "Isaac",
    "Jada",
    "Kenji",
    "Leila",
    "Marcus",
    "Nadia",
    "Omar",
    "Priya",
    "Rafael",
    "Sofia",
    "Tomas",
    "Uma",
    "Victor",
    "Whitney",
    "Xavier",
    "Yasmin",
    "Zane",
    "Amara",
    "Bruno",
    "Clara",
    "Dmitri",
    "Esme",
    "Felix",
    "Greta",
    "Hugo",
    "Ines",
    "Jonah",
    "Katya",
    "Lucas",
    "Maya",
    "Nico",
    "Olivia",
    "Pablo",
    "Rosa",
    "Simone",
    "Theo",
    "Valeria",
    "Wesley",
    "Yusuf",
    "Zoe",
    "Beatrix",
    "Cyrus",
    "Delphine",
    "Emmett",
    "Fiona",
    "Graham",
    "Helena",
    "Ivan",
    "Juliet",
    "Kofi",
    "Lorenzo",
    "Mireille",
    "Nathaniel",
    "Ophelia",
    "Percy",
    "Renata",
]
LAST_NAMES = [
    "Abernathy",
    "Okafor",
    "Lindqvist",
    "Castellano",
    "Whitaker",
    "Nakamura",
    "Delacroix",
    "Brennan",
    "Fairbanks",
    "Gallagher",
    "Hollister",
    "Iverson",
    "Jablonski",
    "Kowalczyk",
    "Larkspur",
    "Montague",
    "Novak",
    "Ortega",
    "Pemberton",
    "Quintero",
    "Rasmussen",
    "Sandoval",
    "Thornbury",
    "Underwood",
    "Valentini",
    "Wexler",
    "Yamamoto",
    "Zielinski",
    "Ashworth",
    "Beaumont",
    "Caldwell",
    "Donoghue",
    "Ellington",
    "Fitzgerald",
    "Goldberg",
    "Hargreaves",
    "Ingram",
    "Jessup",
    "Kingsley",
    "Lockhart",
    "Mercado",
    "Nightingale",
    "Oyelaran",
    "Prescott",
    "Rutherford",
    "Salazar",
    "Tennyson",
    "Vasquez",
    "Winslow",
    "Achterberg",
    "Balogun",
    "Chakraborty",
    "Dubois",
    "Esposito",
    "Ferreira",
    "Gutierrez",
    "Haddad",
    "Ishikawa",
    "Jovanovic",
    "Kaminski",
    "Lefebvre",
    "Moreau",
    "Nasser",
    "Obuya",
    "Papadopoulos",
    "Rinaldi",
    "Sorensen",
    "Takahashi",
    "Ulrich",
    "Vukovic",
    "Wojcik",
    "Xu",
    "Yilmaz",
    "Zamora",
    "Alcott",
    "Blackwood",
    "Crane",
    "Dunmore",
    "Everly",
    "Foxworth",
    "Greer",
    "Hawthorne",
    "Irving",
    "Jarrett",
    "Kensington",
    "Langley",
    "Marlowe",
    "Northcott",
    "Osgood",
    "Pryce",
    "Radcliffe",
    "Sterne",
    "Thackeray",
    "Vance",
    "Whitlock",
    "Yardley",
    "Blythe",
    "Corrigan",
    "Devereux",
    "Eastwood",
    "Fenwick",
    "Gaskell",
    "Holloway",
    "Ives",
    "Kilbride",
    "Lowell",
    "McAllister",
    "Norwood",
    "Ormsby",
    "Penrose",
    "Quayle",
    "Ravenscroft",
    "Sinclair",
    "Tremaine",
    "Upton",
    "Varga",
    "Wadsworth",
    "Ackroyd",
    "Bellamy",
    "Carrow",
    "Dashwood",
    "Ellery",
    "Farrow",
    "Gatling",
    "Harlow",
    "Inglewood",
    "Kettering",
    "Lisle",
    "Mortimer",
    "Nettleton",
    "Oakley",
    "Pickering",
]
TITLES = [
    "President of Original Programming",
    "EVP, Scripted Development",
    "SVP, Drama Series",
    "VP, Comedy Development",
    "Head of Unscripted",
    "Director of Development",
    "VP, Documentary Features",
    "Chief Content Officer",
    "Head of International Originals",
    "SVP, Feature Film Acquisitions",
    "VP, Animation",
    "Creative Executive",
    "Head of Podcast Adaptations",
    "VP, Young Adult Programming",
    "Head of Film",
    "SVP, Current Programming",
]
SCOPES = [
    "scripted drama for the US market",
    "half-hour comedy",
    "unscripted and reality formats",
    "true-crime docuseries",
    "international co-productions",
    "feature films with budgets under $20M",
    "adult animation",
    "kids and family",
    "genre features (horror, thriller, sci-fi)",
    "prestige limited series",
    "podcast and book adaptations",
    "sports documentaries",
    "young adult drama",
    "faith and family features",
    "local-language originals",
]
TOPICS = [
    "elevated horror with a strong female lead",
    "grounded sci-fi set in the near future",
    "true crime with access",
    "workplace comedy with an ensemble cast",
    "sports stories with global appeal",
    "romantic comedies for streaming",
    "prestige period drama",
    "YA fantasy adaptations",
    "limited series based on bestselling novels",
    "docuseries about music icons",
    "animated comedies for adults",
    "heist thrillers",
    "legal dramas",
    "nature documentaries with a conservation angle",
    "coming-of-age stories from diverse voices",
    "political thrillers",
    "family-friendly holiday movies",
    "culinary competition formats",
    "international crime procedurals",
    "biopics of cultural figures",
    "dark comedies about wealth",
    "supernatural mysteries in small towns",
    "dating formats",
    "stand-up specials from emerging comics",
]
PROJECT_WORDS = [
    "Echoes",
    "Midnight",
    "Harbor",
    "Glass",
    "Ember",
    "Hollow",
    "Silent",
    "Crown",
    "River",
    "Ashes",
    "Signal",
    "Northern",
    "Lights",
    "Paper",
    "Kingdom",
    "Wild",
    "Iron",
    "Velvet",
    "Static",
    "Orbit",
    "Saints",
    "Wolves",
    "Summer",
    "Winter",
    "Secret",
    "Empire",
    "Ghost",
    "Garden",
    "Fever",
    "Ledger",
    "Tide",
    "Vigil",
    "Cinder",
    "Atlas",
    "Brass",
    "Copper",
    "Delta",
    "Frontier",
    "Gravity",
    "Haven",
    "Island",
    "Jubilee",
    "Lantern",
    "Mirror",
]
STATUSES = ["in development", "greenlit", "in production", "post-production", "released", "renewed", "cancelled"]
DEAL_KINDS = [
    "overall deal",
    "first-look deal",
    "pod deal",
    "series order",
    "feature acquisition",
    "co-production deal",
]
STATUS_WORDS = ["active", "active", "active", "expiring", "renegotiating"]


@dataclass(frozen=True)
class DemoEntity:
    id: uuid.UUID
    name: str
    entity_type: str
    data: dict
    updated_at: datetime


def demo_entity_id(seed: int, entity_type: str, index: int) -> uuid.UUID:
    """The stable id of the index-th demo entity of a type: the same on every run."""
    return uuid.uuid5(DEMO_NAMESPACE, f"{seed}:{entity_type}:{index}")


def _split(count: int) -> dict[str, int]:
    """How many of each type: fixed small vocabularies, the rest in realistic proportions."""
    fixed = {EntityType.GENRE: min(len(GENRES), max(1, count // 160)), EntityType.FORMAT: min(len(FORMATS), 20)}
    fixed[EntityType.FORMAT] = min(fixed[EntityType.FORMAT], max(1, count // 320))
    rest = max(count - sum(fixed.values()), 0)
    shares = {
        EntityType.PLATFORM: 0.012,
        EntityType.COMPANY: 0.09,
        EntityType.PRODUCTION_COMPANY: 0.11,
        EntityType.PERSON: 0.40,
        EntityType.PROJECT: 0.29,
    }
    split = {kind: int(rest * share) for kind, share in shares.items()}
    split[EntityType.PLATFORM] = max(split[EntityType.PLATFORM], 1)
    split[EntityType.DEAL] = rest - sum(split.values())
    return {**fixed, **split}


def _unique_names(rng: random.Random, count: int, make) -> list[str]:
    names: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(names) < count:
        attempts += 1
        name = make(attempts > count * 20)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def demo_entities(count: int = DEFAULT_DEMO_COUNT, seed: int = 1, now: datetime | None = None) -> Iterator[DemoEntity]:
    """Yield `count` demo entities. Same arguments, same records (ids, names, data, dates)."""
    if count < 1:
        return
    rng = random.Random(seed)
    base = (now or datetime.now(UTC)).replace(hour=0, minute=0, second=0, microsecond=0)
    split = _split(count)

    def updated_at() -> datetime:
        # Most records refreshed within a quarter; a long tail is a year old (stale when in demand).
        days = rng.choice([rng.uniform(0, 20), rng.uniform(0, 90), rng.uniform(30, 365)])
        return base - timedelta(days=days)

    def entity(kind: str, index: int, name: str, data: dict) -> DemoEntity:
        return DemoEntity(demo_entity_id(seed, kind, index), name, kind, data, updated_at())

    genres = GENRES[: split[EntityType.GENRE]]
    formats = FORMATS[: split[EntityType.FORMAT]]
    for i, name in enumerate(genres):
        yield entity(EntityType.GENRE, i, name, {"description": f"{name} film and television", "category": "genre"})
    for i, name in enumerate(formats):
        yield entity(EntityType.FORMAT, i, name, {"description": f"{name} format", "category": "format"})

    platforms = _unique_names(
        rng,
        split[EntityType.PLATFORM],
        lambda wide: (
            rng.choice(PLATFORM_STEMS) + ("" if not wide and rng.random() < 0.7 else f" {rng.choice(REGIONS)}")
        ),
    )
    for i, name in enumerate(platforms):
        yield entity(
            EntityType.PLATFORM,
            i,
            name,
            {
                "business_model": rng.choice(PLATFORM_MODELS),
                "region": rng.choice(REGIONS),
                "subscribers_millions": round(rng.uniform(0.5, 280), 1),
                "focus": rng.sample(TOPICS, 2),
            },
        )

    def company_name(suffixes: list[str]) -> str:
        words = rng.sample(COMPANY_WORDS, 2)
        return (
            f"{words[0]} {words[1]} {rng.choice(suffixes)}"
            if rng.random() < 0.5
            else f"{words[0]} {rng.choice(suffixes)}"
        )

    companies = _unique_names(rng, split[EntityType.COMPANY], lambda wide: company_name(COMPANY_SUFFIXES))
    for i, name in enumerate(companies):
        yield entity(
            EntityType.COMPANY,
            i,
            name,
            {
                "kind": rng.choice(["studio", "network", "streamer", "distributor", "agency", "financier"]),
                "headquarters": rng.choice(["Los Angeles", "New York", "London", "Toronto", "Atlanta", "Berlin"]),
                "platforms": rng.sample(platforms, min(len(platforms), rng.randint(1, 2))),
                "focus": rng.sample(TOPICS, 2),
            },
        )

    taken = set(companies)
    prodcos = _unique_names(rng, split[EntityType.PRODUCTION_COMPANY], lambda wide: company_name(PRODCO_SUFFIXES))
    prodcos = [name if name not in taken else f"{name} Ltd" for name in prodcos]

    people = _unique_names(
        rng,
        split[EntityType.PERSON],
        lambda wide: (
            f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            + (f" {rng.choice(['Jr.', 'II', 'III'])}" if wide else "")
        ),
    )
    # Mansolillo is not among the generated surnames, so Chris Mansolillo is unique by full and surname.
    people = ["Chris Mansolillo", *people][: split[EntityType.PERSON]]

    project_names = _unique_names(
        rng,
        split[EntityType.PROJECT],
        lambda wide: (
            (
                f"The {rng.choice(PROJECT_WORDS)} {rng.choice(PROJECT_WORDS)}"
                if rng.random() < 0.5
                else f"{rng.choice(PROJECT_WORDS)} of {rng.choice(PROJECT_WORDS)}"
            )
            + (f" {rng.randint(2, 9)}" if wide else "")
        ),
    )
    employer = {person: rng.choice(companies or platforms) for person in people}
    projects = []
    for name in project_names:
        projects.append(
            {
                "name": name,
                "genre": rng.choice(genres),
                "format": rng.choice(formats),
                "platform": rng.choice(platforms),
                "production_company": rng.choice(prodcos) if prodcos else None,
                "status": rng.choice(STATUSES),
                "year": rng.randint(2021, 2027),
            }
        )
    by_prodco: dict[str, list[str]] = {}
    for project in projects:
        by_prodco.setdefault(project["production_company"], []).append(project["name"])

    for i, name in enumerate(prodcos):
        yield entity(
            EntityType.PRODUCTION_COMPANY,
            i,
            name,
            {
                "founded": rng.randint(1985, 2024),
                "based_in": rng.choice(["Los Angeles", "New York", "London", "Vancouver", "Dublin", "Sydney"]),
                "specialty": rng.sample(TOPICS, 2),
                "credits": by_prodco.get(name, [])[:5],
                "deal_with": rng.choice(companies) if companies else None,
            },
        )

    for i, name in enumerate(people):
        topics = rng.sample(TOPICS, 3)
        greenlights = [p["name"] for p in rng.sample(projects, min(len(projects), rng.randint(0, 3)))]
        data = {
            "title": rng.choice(TITLES),
            "company": employer[name],
            "scope": rng.choice(SCOPES),
            "mandate": {
                "overview": f"Buying {topics[0]} and {topics[1]}.",
                "looking_for": topics[:2],
                "not_looking_for": [topics[2]],
                "decision_authority": rng.choice(
                    ["can greenlight", "recommends to the head of content", "buys pitches up to series order"]
                ),
            },
            "recent_greenlights": greenlights,
            "location": rng.choice(["Los Angeles", "New York", "London", "Toronto", "Atlanta"]),
        }
        if name == "Chris Mansolillo":
            data.update(
                title="SVP, Scripted Development",
                scope="scripted drama and elevated genre series",
                mandate={
                    "overview": "Buying elevated horror and grounded sci-fi limited series with a strong lead.",
                    "looking_for": [
                        "elevated horror with a strong female lead",
                        "grounded sci-fi set in the near future",
                    ],
                    "not_looking_for": ["multi-camera comedy"],
                    "decision_authority": "can greenlight",
                },
            )
        yield entity(EntityType.PERSON, i, name, data)

    for i, project in enumerate(projects):
        name = project.pop("name")
        executive = rng.choice(people) if people else None
        yield entity(
            EntityType.PROJECT,
            i,
            name,
            {
                **project,
                "executive": executive,
                "logline": f"A {project['genre'].lower()} {project['format'].lower()} about {rng.choice(TOPICS)}.",
            },
        )

    for i in range(split[EntityType.DEAL]):
        person = rng.choice(people) if people else "Unknown"
        company = employer.get(person) or (rng.choice(companies) if companies else "Unknown")
        kind = rng.choice(DEAL_KINDS)
        yield entity(
            EntityType.DEAL,
            i,
            f"{person} - {company} {kind} #{i + 1}",
            {
                "kind": kind,
                "person": person,
                "company": company,
                "production_company": rng.choice(prodcos) if prodcos else None,
                "year": rng.randint(2020, 2026),
                "term_years": rng.choice([1, 2, 3, 4]),
                "status": rng.choice(STATUS_WORDS),
            },
        )
