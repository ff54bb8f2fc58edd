"""Records YAML written without PyYAML reads back exactly with PyYAML's safe loader.

The emitter decides alone when a string may go unquoted; a wrong decision
turns ``"yes"`` into True or ``"1:20"`` into 80 in the reader's hands, and a
provenance record that silently differs from what ran is worse than none.
So the strings every YAML 1.1 resolver re-types, the characters YAML reads
as line breaks, and arbitrary text (hypothesis) must all round-trip.
"""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from wfexs_like import yamlemit
from wfexs_like.model import Container, ContainerType
from wfexs_like.provenance import dump_containers, load_containers

TRICKY = [
    "", " ", "yes", "No", "ON", "off", "y", "N", "null", "Null", "~", "1", "-1", "+1", "1.0", "1:20", "0x1F",
    "0o17", "0b11", "1_000", "1e3", ".inf", "-.inf", ".NaN", "-", "- x", "a: b", "a:", "a #b", "#x", "x#y",
    "2001-12-14", "2001-12-14t21:59:43.10-05:00", "<<", "=", "!tag", "&a", "*a", "|", ">", "'q'", '"q"',
    "%x", "@x", "`x", "a\nb", "a\rb", "a\x85b", "a\u2028b", "a\u2029b", "tab\there", "\x00\x01\x7f\x9f",
    "\ufeffbom", "emoji \U0001f600", "é", "\ufffd", "\ufffe", "\uffff", "trailing ", " leading", "a\\b",
    "[x]", "{x}", "x,y", "?x", "True", "FALSE", "Off",
    "docker://quay.io/biocontainers/samtools:1.15--h1170115_1", "sha256:abc", "/abs/path", "rel/path.sif",
]  # fmt: skip
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text())
DOCS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def test_strings_a_resolver_would_retype_are_quoted_and_read_back() -> None:
    doc = {"containers": [{"a": t, "l": [t, [t]], "d": {t: t}, "e": [], "f": {}, "n": None} for t in TRICKY]}
    assert yaml.safe_load(yamlemit.dump(doc)) == doc
    for t in TRICKY:
        assert yaml.safe_load(yamlemit.dump(t)) == t


def test_plain_words_stay_plain() -> None:
    """What a reviewer greps stays readable: tags, digests, paths and enum values are not quoted."""
    for t in ("docker://quay.io/x/y:1.0", "sha256:abc", "/abs/path/x.sif", "docker", "amd64"):
        assert yamlemit.dump({"k": t}) == f"k: {t}\n"


@settings(max_examples=300, deadline=None)
@given(DOCS)
def test_any_plain_document_round_trips(doc: object) -> None:
    assert yaml.safe_load(yamlemit.dump(doc)) == doc


def test_records_written_without_pyyaml_load_back_equal() -> None:
    c = Container(
        origTaggedName="quay.io/x/y:1.0",
        type=ContainerType.Docker,
        registries={ContainerType.Docker: "quay.io"},
        taggedName="quay.io/x/y:1.0",
        architecture="amd64",
        operatingSystem="linux",
        localPath="yes",
        signature="sha256:" + "0" * 64,
        fingerprint="1:20",
        metadataLocalPath="a\u2028b.json",
        source_type=ContainerType.Docker,
        image_signature=None,
    )
    text = dump_containers([c])
    assert text is not None and text.startswith("wfexs_like_containers: 1\ncontainers:\n- origTaggedName:")
    assert load_containers(text) == [c]
