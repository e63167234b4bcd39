"""The README's serving tables are the code's: `python -m phifleet.cluster.readme_tables` rewrites them."""

from pathlib import Path

from phifleet.cluster.readme_tables import render

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_tables_match_the_code():
    text = README.read_text()
    assert render(text) == text, "README tables drifted: run `python -m phifleet.cluster.readme_tables`"
