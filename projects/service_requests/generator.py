"""Seeded generator of realistic 311 sources for the fictional city of Riverton.

The generating process, so that a reader can judge what a model learns from it:

1. **Requests.** Each request belongs to one of six departments (``roads``,
   ``sanitation``, ``parks``, ``water``, ``noise``, ``social_services``). The
   department is drawn from priors that depend on the district (the riverside
   wards report more flooding and water mains, the entertainment district more
   noise) and on the hour (noise at night, roads during commutes).
2. **Text.** A description is drawn from phrasing templates of its department,
   filled with Riverton street names and objects. Two disjoint template pools
   exist: ``seen`` (what training data normally contains) and ``unseen``
   (other phrasings: jargon, Spanish or mixed-language complaints, terse
   texting style), so that a train-on-seen / test-on-unseen split means
   something. About 8% of texts get a typo (dropped, doubled or swapped letter).
3. **Personal data.** Every request has a reporter with a name, phone and e-mail.
   About 25% of texts also carry personal data inside the free text ("call me
   at (555) 201-3344", "my name is Maria Lopez", an e-mail address).
4. **Two department sources with different schemas.**
   ``call_centre.csv`` (about 45% of requests): local time strings
   ``DD/MM/YYYY HH:MM`` in America/New_York, ward names in free-typed case,
   department codes (``RDS``, ``SAN``...), decimal coordinates.
   ``web_portal.parquet`` (the rest): UTC epoch seconds, numeric district ids,
   department slugs, coordinates in micro-degrees, platform ``web``/``app``.
5. **Noise.** About 4% of web requests were also phoned in (a cross-source
   duplicate with the same text, place and a time a few minutes apart); about
   2% of timestamps are unparseable, 2% of coordinates lie outside the city,
   2% of descriptions are missing, some districts are missing, and 3% of labels
   are routed to a wrong department, as in real historical routing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TIMEZONE = "America/New_York"
CITY_BOUNDS = {"lat": (40.60, 40.80), "lon": (-74.05, -73.85)}

DEPARTMENTS = ("roads", "sanitation", "parks", "water", "noise", "social_services")
DEPARTMENT_CODES = {"roads": "RDS", "sanitation": "SAN", "parks": "PRK", "water": "WTR",
                    "noise": "NOI", "social_services": "SOC"}


@dataclass(frozen=True)
class District:
    id: int
    name: str
    lat: float
    lon: float
    weights: tuple  # department prior, in DEPARTMENTS order


DISTRICTS = (
    District(1, "Northside", 40.77, -73.97, (3, 3, 2, 1, 1, 1)),
    District(2, "Riverside", 40.72, -74.02, (2, 2, 1, 4, 1, 1)),
    District(3, "Old Town", 40.70, -73.96, (2, 3, 1, 1, 3, 2)),
    District(4, "Harbor", 40.64, -74.01, (2, 2, 1, 3, 1, 2)),
    District(5, "Midtown", 40.73, -73.93, (3, 2, 1, 1, 4, 2)),
    District(6, "Eastgate", 40.69, -73.88, (3, 2, 2, 1, 1, 3)),
    District(7, "Greenfield", 40.76, -73.89, (2, 2, 4, 1, 1, 1)),
    District(8, "Southport", 40.62, -73.92, (2, 3, 1, 2, 1, 3)),
)

STREETS = ("Main St", "Elm Street", "Oak Avenue", "River Road", "Cedar Lane", "Maple Ave", "5th Avenue",
           "Harbor Blvd", "Mill Street", "Union Square", "Bridge Road", "Willow Way", "Station Plaza")

SEEN = {
    "roads": ["There is a large pothole on {street} that damaged my tire",
              "Pothole on {street} is getting bigger every day",
              "Traffic light at {street} and {street2} is not working",
              "Road surface on {street} is cracked and uneven",
              "Missing stop sign at the corner of {street}",
              "Sinkhole forming in the road near {street}",
              "Street sign knocked down on {street}"],
    "sanitation": ["Garbage was not collected on {street} this week",
                   "Overflowing trash bins outside {street} stinking",
                   "Someone dumped an old mattress and furniture on {street}",
                   "Recycling pickup missed again at {street}",
                   "Rats everywhere around the dumpsters on {street}",
                   "Litter piling up on the sidewalk of {street}"],
    "parks": ["Broken swing at the playground near {street}",
              "Fallen tree branch blocking the path in the park by {street}",
              "Grass in the park on {street} has not been mowed for weeks",
              "Park bench vandalized near {street}",
              "Dead tree in the park at {street} looks dangerous",
              "Graffiti on the park fountain off {street}"],
    "water": ["Water main break flooding {street}",
              "No water pressure in my building on {street}",
              "Fire hydrant leaking on {street}",
              "Brown discoloured tap water at {street}",
              "Storm drain clogged and street flooding at {street}",
              "Sewer smell coming from the manhole on {street}"],
    "noise": ["Loud music from a party on {street} after midnight",
              "Construction noise at 6am on {street}",
              "Neighbours shouting and banging all night on {street}",
              "Car alarm going off for hours on {street}",
              "Bar on {street} playing loud music every night",
              "Dog barking nonstop all night near {street}"],
    "social_services": ["Homeless person sleeping in the cold at {street} needs help",
                        "Elderly neighbour on {street} has not been seen for days",
                        "Family on {street} needs food assistance",
                        "Person in distress asking for shelter near {street}",
                        "Request for a welfare check on a resident at {street}",
                        "Need information on rent assistance, living on {street}"],
}

UNSEEN = {
    "roads": ["massive crater in asphalt on {street} pls fix", "bache enorme en {street}, peligroso para bicis",
              "signal malfunction intersection {street} {street2} all red", "road's all broken up by {street} smh"],
    "sanitation": ["trash pickup skipped {street} 3rd time", "basura acumulada en {street} desde hace dias",
                   "illegal dumping - sofa + tires - {street}", "bins overflowing again @ {street} gross"],
    "parks": ["playground equipment busted by {street}", "arbol caido en el parque de {street}",
              "park lawn overgrown near {street}, ticks everywhere", "tree limb down across trail off {street}"],
    "water": ["hydrant gushing water on {street}", "fuga de agua en la calle {street}",
              "zero water pressure {street} apt building", "street flooded, drain backed up by {street}"],
    "noise": ["party next door on {street} super loud 2am", "ruido de fiesta toda la noche en {street}",
              "jackhammers before 7am {street} again", "amplified music from club on {street} past 1am"],
    "social_services": ["unhoused man needs blanket at {street}", "persona sin hogar necesita ayuda en {street}",
                        "check on old lady {street} not answering door", "family evicted on {street} needs shelter"],
}

FIRST_NAMES = ("Maria", "James", "Aisha", "Wei", "Olga", "Dmitri", "Fatima", "Carlos", "Priya", "Thomas",
               "Keiko", "Samuel", "Lucia", "Ahmed", "Grace", "Ivan", "Nadia", "Oscar", "Hannah", "Tariq")
LAST_NAMES = ("Lopez", "Smith", "Okafor", "Chen", "Novak", "Petrov", "Haddad", "Garcia", "Sharma", "Becker",
              "Tanaka", "Mensah", "Rossi", "Khan", "Murphy", "Ivanova", "Jensen", "Silva", "Fischer", "Nguyen")

PII_PHRASES = ("Please call me at {phone}.", "My name is {name}.", "Contact {name} at {email}.",
               "You can reach me on {phone} or {email}.", "This is {name}, phone {phone}.")


def _typo(text: str, rng: np.random.Generator) -> str:
    if len(text) < 8:
        return text
    i = int(rng.integers(1, len(text) - 2))
    kind = rng.integers(3)
    if kind == 0:
        return text[:i] + text[i + 1:]
    if kind == 1:
        return text[:i] + text[i] + text[i:]
    return text[:i] + text[i + 1] + text[i] + text[i + 2:]


def _phone(rng) -> str:
    a, b, c = rng.integers(200, 999), rng.integers(200, 999), rng.integers(1000, 9999)
    return [f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"+1 {a} {b} {c}", f"{a}.{b}.{c}"][int(rng.integers(4))]


def generate_requests(n: int, seed: int, phrasings: str = "seen") -> pd.DataFrame:
    """The ground truth: one row per request, before it is split into department sources."""
    if phrasings not in ("seen", "unseen", "mixed"):
        raise ValueError("phrasings must be 'seen', 'unseen' or 'mixed'")
    rng = np.random.default_rng(seed)
    start = pd.Timestamp("2026-01-05", tz=TIMEZONE)
    rows = []
    for i in range(n):
        district = DISTRICTS[int(rng.integers(len(DISTRICTS)))]
        when = start + pd.Timedelta(minutes=int(rng.integers(0, 60 * 24 * 300)))
        weights = np.array(district.weights, dtype=float)
        if when.hour >= 22 or when.hour < 5:
            weights[DEPARTMENTS.index("noise")] *= 4
        if when.hour in (7, 8, 9, 16, 17, 18):
            weights[DEPARTMENTS.index("roads")] *= 2
        department = DEPARTMENTS[int(rng.choice(len(DEPARTMENTS), p=weights / weights.sum()))]
        pool = {"seen": SEEN, "unseen": UNSEEN}.get(phrasings) or (SEEN if rng.random() < 0.5 else UNSEEN)
        template = pool[department][int(rng.integers(len(pool[department])))]
        s1, s2 = rng.choice(len(STREETS), size=2, replace=False)
        text = template.format(street=STREETS[s1], street2=STREETS[s2])
        if rng.random() < 0.08:
            text = _typo(text, rng)
        first, last = FIRST_NAMES[int(rng.integers(len(FIRST_NAMES)))], LAST_NAMES[int(rng.integers(len(LAST_NAMES)))]
        name, phone = f"{first} {last}", _phone(rng)
        email = f"{first.lower()}.{last.lower()}{int(rng.integers(1, 99))}@mail.example.org"
        if rng.random() < 0.25:
            text = f"{text}. {PII_PHRASES[int(rng.integers(len(PII_PHRASES)))].format(name=name, phone=phone, email=email)}"
        routed = department if rng.random() > 0.03 else DEPARTMENTS[int(rng.integers(len(DEPARTMENTS)))]
        rows.append({
            "id": i, "created_at": when, "district": district.name, "district_id": district.id,
            "lat": district.lat + rng.normal(0, 0.012), "lon": district.lon + rng.normal(0, 0.012),
            "description": text, "department": routed, "true_department": department,
            "name": name, "phone": phone, "email": email,
        })
    return pd.DataFrame(rows)


def write_sources(requests: pd.DataFrame, folder: Path, seed: int) -> list[Path]:
    """Split ground-truth requests into the call-centre CSV and the web-portal Parquet, adding noise."""
    rng = np.random.default_rng(seed + 1)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    phoned = rng.random(len(requests)) < 0.45
    cc = requests[phoned].copy()
    web = requests[~phoned].copy()
    # Cross-source duplicates: some web requests were also phoned in a few minutes later.
    dup = web.sample(frac=0.04, random_state=seed)
    dup = dup.assign(created_at=dup["created_at"] + pd.to_timedelta(rng.integers(1, 15, len(dup)), unit="min"))
    cc = pd.concat([cc, dup]).sort_values("created_at")

    received = cc["created_at"].dt.tz_convert(TIMEZONE).dt.strftime("%d/%m/%Y %H:%M")
    bad = rng.random(len(cc)) < 0.02
    received[bad] = rng.choice(["unknown", "31/02/2026 25:61", "", "yesterday"], size=int(bad.sum()))
    ward = cc["district"].where(rng.random(len(cc)) > 0.3, cc["district"].str.upper() + "  ")
    ward = ward.where(rng.random(len(cc)) > 0.03, None)
    lat = cc["lat"].where(rng.random(len(cc)) > 0.02, 41.5)
    details = cc["description"].where(rng.random(len(cc)) > 0.02, "")
    call_centre = pd.DataFrame({
        "Ticket No": [f"CC-{seed}-{i:06d}" for i in range(len(cc))],
        "Received": received.values, "Caller Name": cc["name"].values, "Caller Phone": cc["phone"].values,
        "Ward": ward.values, "Issue Details": details.values,
        "Category Code": cc["department"].map(DEPARTMENT_CODES).values,
        "Lat": lat.round(6).values, "Lon": cc["lon"].round(6).values,
    })
    web_lon = (web["lon"] * 1e6).round().astype("int64")
    web_lon = web_lon.where(rng.random(len(web)) > 0.02, -75_900_000)
    text = web["description"].where(rng.random(len(web)) > 0.02, None)
    portal = pd.DataFrame({
        "request_id": [f"W{seed}-{i:06d}" for i in range(len(web))],
        "submitted_utc": ((web["created_at"] - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)).values,
        "reporter_name": web["name"].values, "contact_email": web["email"].values,
        "contact_phone": web["phone"].where(rng.random(len(web)) > 0.5, None).values,
        "district_id": web["district_id"].where(rng.random(len(web)) > 0.03, None).astype("Int64").values,
        "text": text.values, "geo_lat_e6": (web["lat"] * 1e6).round().astype("int64").values,
        "geo_lon_e6": web_lon.values, "routed_to": web["department"].values,
        "platform": rng.choice(["web", "app"], size=len(web), p=[0.6, 0.4]),
    })
    paths = [folder / "call_centre.csv", folder / "web_portal.parquet"]
    call_centre.to_csv(paths[0], index=False)
    portal.to_parquet(paths[1], index=False)
    return paths
