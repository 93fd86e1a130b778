"""Title splitting and the item text template."""

from __future__ import annotations

import pytest

from bonmf_pipe.errors import ConfigError
from bonmf_pipe.pipeline.ingest import DEFAULT_TEXT_TEMPLATE, render_text
from bonmf_pipe.pipeline.ingest.movies import split_title
from bonmf_pipe.pipeline.ingest.text import template_fields


@pytest.mark.parametrize(
    ("raw", "title", "year"),
    [
        ("Toy Story (1995)", "Toy Story", 1995),
        ("American President, The (1995)", "American President, The", 1995),
        ("From Dusk Till Dawn 2: Texas Blood Money (1999) ", "From Dusk Till Dawn 2: Texas Blood Money", 1999),
        ("Death Note: Desu nôto (2006–2007)", "Death Note: Desu nôto", 2006),
        ("Some Show (2010-)", "Some Show", 2010),
        ("Hamlet (Gamlet) (1964)", "Hamlet (Gamlet)", 1964),
        ("Babylon 5", "Babylon 5", None),
        ("(1995)", "(1995)", None),
        ("1984 (1984)", "1984", 1984),
        ("Movie (19xx)", "Movie (19xx)", None),
    ],
)
def test_split_title(raw, title, year):
    assert split_title(raw) == (title, year)


def test_default_template_drops_empty_parts():
    t = DEFAULT_TEXT_TEMPLATE
    assert render_text(t, "Toy Story", 1995, ["Animation", "Comedy"], ["pixar", "fun"]) == (
        "Toy Story (1995). Genres: Animation, Comedy. Tags: pixar, fun."
    )
    assert render_text(t, "Babylon 5", None, ["Sci-Fi"], []) == "Babylon 5. Genres: Sci-Fi."
    assert render_text(t, "Mr. Smith", None, [], []) == "Mr. Smith."
    assert render_text(t, "Heat", 1995, [], ["de niro"]) == "Heat (1995). Tags: de niro."


def test_custom_templates():
    assert render_text("{title}: {genres}", "Up", 2009, [], []) == "Up"
    assert render_text("{genres} film {title} from {year}.", "Up", 2009, ["Animation"], []) == "Animation film Up from 2009."
    assert template_fields("{title} [{year}]") == ["title", "year"]
    for bad in ("{title} {rating}", "{year} only", "{title} {", "{}"):
        with pytest.raises(ConfigError):
            template_fields(bad)
