#!/usr/bin/env python3
"""Make examples/evaluation/song-analyzer.yaml: 50 labelled songs for song-analyzer's evaluation.

Each case is one made-up song (invented artist, title and a few lines of original lyrics:
never a real song's words) sent to ``POST /analyze``; its label is the score the reference
model (``...:songs:v1``) gives it. That model is the fake upstream's song-score convention,
whose score is a hash of the user message alone (:func:`fakeupstream.app.true_song_score`):
the song's "true" score, on which every correctly fine-tuned songs model agrees. The
message is the one song-analyzer builds (:func:`song_analyzer.scoring.user_message`, from
the body's fields as song-analyzer strips them), so the labels hold through the service.
A case passes with a score within 10 of its label (clamped to 0..100): a fine-tune that is
off by more (the fake's ``score_offset`` fault, a regressed model) fails it.

The ConfigMap also holds ``schema.json``, the JSON Schema (draft 2020-12) of song-analyzer's
answer (``AnalyzeResponse``: score, verdict, references, model, cached).

    .venv/bin/python hack/evaluation/make_song_cases.py            # rewrite the example
    .venv/bin/python hack/evaluation/make_song_cases.py --check    # exit 1 if it is stale
    .venv/bin/python hack/evaluation/make_song_cases.py --output -  # print it

tests/unit/test_evaluation_examples.py recomputes every label and fails when the example
and this script disagree.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fakeupstream.app import true_song_score
from song_analyzer.scoring import user_message

REPO = Path(__file__).resolve().parents[2]
OUTPUT = REPO / "examples" / "evaluation" / "song-analyzer.yaml"
CONFIGMAP = "song-analyzer-eval"
NAMESPACE = "ml"
REFERENCE_MODEL = "ft:gpt-4o-mini-2024-07-18:modeldeploy:songs:v1"
TOLERANCE = 10


@dataclass(frozen=True)
class Song:
    artist: str
    title: str
    lyrics: str


# Made up for this file: artists, titles and lyrics alike.
SONGS: tuple[Song, ...] = (
    Song("The Paper Lanterns", "Harbour Light",
         "Salt on the window, the kettle sings low\n"
         "You fold the map where the ferries don't go"),
    Song("Mira Okonkwo", "Copper Wire Heart",
         "I strung my heart on copper wire\n"
         "It hums all night, it never tires\n"
         "Plug me in, love, plug me in"),
    Song("Static Orchard", "Apples in the Snow",
         "Red on white like a signal flare\n"
         "The orchard keeps what the summer left there"),
    Song("Dustin Vale", "Mile Marker Nine",
         "Mile marker nine and the radio's gone\n"
         "Just the hiss of the tyres and a half-written song"),
    Song("Lumen & Moth", "Porch Bulb",
         "Circle the porch bulb, circle it twice\n"
         "Burning is easy, leaving is nice"),
    Song("Greta Sandoval", "The Long Division",
         "You carried the one, I carried the blame\n"
         "Our long division never came out the same"),
    Song("Northbound Choir", "Glacier Hymn",
         "Slow as a glacier, sure as the tide\n"
         "Carve me a valley and wait there inside"),
    Song("Kofi & the Tin Drums", "Rain on Corrugated Roofs",
         "Tin roof drumming, the whole street sways\n"
         "Mama's laughing in the old monsoon days"),
    Song("Ivy Thistlewood", "Library Card",
         "Borrowed your name on a library card\n"
         "Returned it late with the corners marred"),
    Song("The Velvet Switchboard", "Hold Please",
         "Hold please, hold please, the line is long\n"
         "Every extension plays the same song\n"
         "Hold please"),
    Song("Arlo Finch", "Compass Without North",
         "I bought a compass without a north\n"
         "It points to wherever you're walking forth"),
    Song("Seven Lamp Street", "Neon Bakery",
         "Three a.m. and the ovens glow\n"
         "Sugar on the pavement like a pink snow"),
    Song("Halcyon Radio", "Signal Fade",
         "Your voice comes in between the static\n"
         "Half a word and then it's automatic"),
    Song("Petra Lindqvist", "Ice Fishing",
         "Drill a hole in the frozen lake\n"
         "Wait for a word you will never take\n"
         "Cold hands, patient hands"),
    Song("Juniper Avenue", "Bicycle Bell",
         "Ring ring down the cobbled hill\n"
         "Knees scraped raw and laughing still"),
    Song("Moss Cathedral", "Stone and Fern",
         "Fern in the cracks of the chapel stone\n"
         "Green finds a way when the prayers have flown"),
    Song("Ramon Estrella", "Border Town Waltz",
         "One two three on the dusty floor\n"
         "The band plays slow and we ask for more"),
    Song("The Quiet Engines", "Night Shift",
         "Clock in at ten with a thermos of tea\n"
         "The factory hums in a minor key"),
    Song("Birdie Calloway", "Pocketful of Buttons",
         "A pocketful of buttons and none of them match\n"
         "I sew you a coat from a scrap and a patch"),
    Song("Cinder Parade", "Fireworks in June",
         "Sky cracks open in gold and blue\n"
         "Every bang sounds a little like you"),
    Song("Tomasz Wren", "Tram Line 12",
         "Tram line twelve, the windows fog\n"
         "I draw your face and it melts to a smog"),
    Song("Ember Lane", "Spare Key",
         "Under the flowerpot, under the stone\n"
         "A spare key waiting for you to come home"),
    Song("The Hollow Reeds", "Marsh Song",
         "Herons stand still in the evening marsh\n"
         "The wind through the reeds is gentle, then harsh"),
    Song("Odessa Grey", "Paper Crown",
         "You wore a paper crown at the party\n"
         "King of the kitchen till quarter past three"),
    Song("Satellite Bloom", "Orbit",
         "Round and round, I'm caught in your pull\n"
         "Half of me empty, the rest of me full"),
    Song("Hank Delacroix", "Tractor Blues",
         "The tractor won't start and the sky won't rain\n"
         "I'm singing the same old field again"),
    Song("Willow & Wire", "Fence Line",
         "Walk the fence line, mend the gate\n"
         "Some things are worth the mending, some are too late"),
    Song("Priya Raman", "Monsoon Letters",
         "Ink runs blue in the monsoon post\n"
         "The words I wanted arrive as a ghost"),
    Song("The Lost Cartographers", "Here Be Dragons",
         "At the edge of the map where the ink runs thin\n"
         "We drew little dragons to keep the dark in"),
    Song("Clementine Drive", "Sunday Pancakes",
         "Flip it high and catch it low\n"
         "Sunday morning, take it slow"),
    Song("Vesper Tide", "Lighthouse Keeper",
         "Turn the lamp and wind the clock\n"
         "Count the ships that miss the rock"),
    Song("Oleander Twins", "Mirror Game",
         "You raise your hand, I raise mine too\n"
         "Who is the glass and who is you"),
    Song("Jasper Kettle", "Boil Over",
         "Little by little the water climbs\n"
         "I told you I'm fine about a hundred times"),
    Song("Amber Hollow", "Wheat Field Lullaby",
         "Hush now the wheat is whispering gold\n"
         "Sleep like the seed in the warm dark fold"),
    Song("Neon Fjord", "Midnight Sun",
         "The sun won't set and we won't sleep\n"
         "Promises made are easy to keep"),
    Song("The Grammar Police", "Semicolon",
         "You were a semicolon in my run-on life\n"
         "A pause that joined the calm and the strife"),
    Song("Delphine Aubert", "Cafe at the Corner",
         "Two cups cooling on the zinc\n"
         "Say it now before we think"),
    Song("Rusty Halyard", "Sailcloth",
         "Patch the sailcloth, tar the seam\n"
         "The sea keeps no one's tidy dream"),
    Song("Kestrel Avenue", "Hover",
         "Still in the wind above the road\n"
         "Carrying nothing but a heavy load"),
    Song("Marigold Static", "Channel Surfing",
         "Click through the channels, nothing is on\n"
         "Except for the rerun of you being gone"),
    Song("Bo Lindgren", "Sauna Song",
         "Steam on the stones and snow at the door\n"
         "Jump in the lake and come back for more"),
    Song("The Ladder Climbers", "Rung by Rung",
         "Rung by rung and breath by breath\n"
         "Higher than fear and lower than death"),
    Song("Saffron Coast", "Spice Market",
         "Cardamom, clove and a haggling smile\n"
         "Stay in the market a little while"),
    Song("Quentin Marsh", "Grandfather Clock",
         "Tick in the hallway, tock on the stair\n"
         "Grandfather counting the years that aren't there"),
    Song("Blue Heron Union", "Picket Line",
         "Arm in arm in the freezing rain\n"
         "We'll stand here till the morning train"),
    Song("Tilly Osei", "Hopscotch",
         "Chalk on the pavement, one two three\n"
         "Skip the square that belongs to me"),
    Song("Parallel Parking", "Reverse",
         "Check the mirror, turn the wheel\n"
         "Back into the way we used to feel"),
    Song("Wolfram Sky", "Tungsten Filament",
         "Glowing thin in a bulb of glass\n"
         "Bright for a while and then I pass"),
    Song("Honeycomb Ghosts", "Beekeeper",
         "Smoke and a veil and a gentle hand\n"
         "The hive hums things I understand"),
    Song("Orla Fitzgerald", "Last Bus Home",
         "Last bus home and the driver knows\n"
         "Where every tired passenger goes"),
)  # fmt: skip

# song-analyzer's answer (song_analyzer.app.AnalyzeResponse). Extra fields are allowed: a
# client tolerates an added field, so a revision adding one must not fail its evaluation.
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "song-analyzer POST /analyze answer",
    "type": "object",
    "required": ["score", "verdict", "references", "model", "cached"],
    "properties": {
        "score": {"type": "integer", "minimum": 0, "maximum": 100},
        "verdict": {"type": "string", "minLength": 1},
        "references": {"type": "array", "items": {"type": "string"}},
        "model": {"type": "string", "minLength": 1},
        "cached": {"type": "boolean"},
    },
}


def slug(text: str) -> str:
    return "-".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def body_of(song: Song) -> dict[str, str]:
    return {"artist": song.artist, "title": song.title, "lyrics": song.lyrics}


def label(body: dict[str, str]) -> int:
    """The reference model's score for a request body, from the message song-analyzer sends
    (its fields stripped, as song-analyzer's request model strips them)."""
    message = user_message(body["artist"].strip(), body["title"].strip(), body["lyrics"].strip())
    return true_song_score(message)


def score_range(score: int) -> tuple[int, int]:
    return max(0, score - TOLERANCE), min(100, score + TOLERANCE)


def case(index: int, song: Song) -> dict[str, Any]:
    body = body_of(song)
    low, high = score_range(label(body))
    return {
        "id": f"song-{index:02d}-{slug(song.title)}",
        "body": body,
        "expect": {
            "status": 200,
            "fields": [
                {"path": "$.score", "min": low, "max": high},
                {"path": "$.verdict", "pattern": r"\S"},
            ],
        },
    }


def _block(text: str) -> str:
    return "".join(f"    {line}\n" for line in text.splitlines())


def render() -> str:
    lines = [json.dumps(case(i, song), ensure_ascii=True) for i, song in enumerate(SONGS, 1)]
    schema = json.dumps(SCHEMA, indent=2)
    return (
        "# Evaluation cases for song-analyzer (POST /analyze): 50 made-up songs (invented\n"
        "# artists, titles and lyrics; no real song's words), each labelled with the score the\n"
        f"# reference model ({REFERENCE_MODEL}) gives it. The fake upstream\n"
        "# plays that model: its score is a hash of the song alone (fakeupstream.app.\n"
        "# true_song_score), so every correct fine-tune agrees; a case passes within\n"
        f"# +-{TOLERANCE} of its label (clamped to 0..100). schema.json is the answer's JSON Schema.\n"
        "# Generated: do not edit by hand. To change the songs or regenerate the labels:\n"
        "#   .venv/bin/python hack/evaluation/make_song_cases.py\n"
        "# (tests/unit/test_evaluation_examples.py fails when a label drifts from the reference).\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        f"  name: {CONFIGMAP}\n"
        f"  namespace: {NAMESPACE}\n"
        "  labels:\n"
        "    app.kubernetes.io/name: song-analyzer\n"
        "    app.kubernetes.io/component: evaluation\n"
        "data:\n"
        "  cases.jsonl: |\n"
        f"{_block(chr(10).join(lines))}"
        "  schema.json: |\n"
        f"{_block(schema)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--output", default=str(OUTPUT), help="file to write, - for stdout")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the file differs from what would be written")  # fmt: skip
    args = parser.parse_args(argv)
    text = render()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    path = Path(args.output)
    if args.check:
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        if current != text:
            print(f"{path} is stale: run hack/evaluation/make_song_cases.py", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {len(SONGS)} cases to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
