"""The scoring framework the model is prompted with, and the answer it must give."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

SYSTEM_PROMPT = """\
You are a song analyst. Score the song's lyrics from 0 to 100 with this framework, \
20 points each:
1. Imagery: concrete, vivid, sensory language rather than abstractions.
2. Originality: fresh phrasing and ideas; clichés cost points.
3. Structure: verses, chorus and bridge that build and pay off.
4. Hook: a memorable, singable central line or refrain.
5. Emotional impact: a coherent feeling the listener can share.
The song score is the sum of the five parts.
Answer with one JSON object and nothing else, with exactly these keys:
  "score": integer 0-100,
  "verdict": one or two sentences explaining the score,
  "references": list of strings naming songs, artists, books or events the lyrics allude to \
(empty list when none).
"""


class ModelAnswer(BaseModel):
    """What the model must answer; anything else is an upstream error (502)."""

    model_config = ConfigDict(extra="ignore")

    score: int = Field(ge=0, le=100)
    verdict: str = Field(min_length=1, max_length=4000)
    references: list[str] = Field(default_factory=list, max_length=100)


def user_message(artist: str, title: str, lyrics: str) -> str:
    return f"Artist: {artist}\nTitle: {title}\nLyrics:\n{lyrics}"
