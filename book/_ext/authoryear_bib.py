"""An author-year bibliography, to match the author-year citations in the text.

The text cites with sphinxcontrib-bibtex's ``author_year`` referencing style,
"Rosenblatt (1958)" or "(Minsky and Papert, 1969)". pybtex's built-in bibliography
styles label their entries with numbers (``plain``) or with abbreviations
(``alpha``), so a reader who follows "Rosenblatt (1958)" lands on "[27]". This module
registers a pybtex formatting style ``authoryear``: pybtex's ``plain`` (entries sorted
by author, year and title), labelled the way the text cites them, "Rosenblatt, 1958",
"Minsky and Papert, 1969", "Krizhevsky et al., 2012", with "a", "b"... after the year
when two entries would get the same label.
"""

from __future__ import annotations

from collections import Counter
from string import ascii_lowercase

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

STYLE = "authoryear"


def _last_names(person) -> str:
    return Text(" ").join(person.rich_last_names).render_as("text")


def author_year(entry) -> str:
    """``Author, Year``, ``A and B, Year`` or ``A et al., Year``, as the text cites."""
    people = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_names(p) for p in people]
    if not names:
        who = Text.from_latex(entry.fields.get("organization", entry.fields.get("title", "Anonymous"))).render_as(
            "text"
        )
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabels(BaseLabelStyle):
    def format_labels(self, sorted_entries):
        labels = [author_year(entry) for entry in sorted_entries]
        total = Counter(labels)
        seen: Counter = Counter()
        for label in labels:
            if total[label] > 1:  # two entries, same authors and year: 2012a, 2012b
                seen[label] += 1
                yield label + ascii_lowercase[(seen[label] - 1) % 26]
            else:
                yield label


class AuthorYearStyle(PlainStyle):
    default_label_style = AuthorYearLabels


def setup(app):
    # Registered at import time of the extension, before sphinxcontrib-bibtex reads its
    # bibtex_default_style. "force" makes a second build in the same process harmless.
    register_plugin("pybtex.style.labels", STYLE, AuthorYearLabels, force=True)
    register_plugin("pybtex.style.formatting", STYLE, AuthorYearStyle, force=True)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1.0"}
