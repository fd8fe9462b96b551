"""Edge extraction on hand-made WAT records: every rule of docs/pipeline.md, "Semantics"."""

from __future__ import annotations

import sys
from collections import Counter

import pytest

from .support import ROOT
from jobs.common.wat import edges_from_wat

sys.path.insert(0, str(ROOT / "scripts"))
import make_sample_data as gen  # noqa: E402

NODES = frozenset({"acme.com", "acme-steel.co.uk"})


def _response(target, links, base=None, html=True, warc_type="response"):
    head = {"Title": "t", **({"Base": base} if base is not None else {})}
    payload_meta = {"HTTP-Response-Metadata": {"HTML-Metadata": {"Head": head, "Links": links}}} if html else {
        "HTTP-Response-Metadata": {"Headers": {"Content-Type": "application/pdf"}}
    }
    return gen.metadata_record(
        target,
        {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": warc_type, "WARC-Target-URI": target},
                      "Payload-Metadata": payload_meta}},
    )


def _edges(tmp_path, *records):
    path = tmp_path / "x.warc.wat.gz"
    gen.write_wat(path, records)
    counts = Counter()
    with open(path, "rb") as fh:
        edges = list(edges_from_wat(fh, NODES, counts))
    return {(e[0], e[2]) for e in edges}, edges, counts


def A(url, path="A@/href"):
    return {"path": path, "url": url, "text": "x"}


def test_links_are_resolved_against_the_page(tmp_path):
    page = "http://www.acme.com/products/steel/index.html"
    pairs, _, _ = _edges(tmp_path, _response(page, [A("/about"), A("../x"), A("coil.html"), A("?q=1"), A("#top")]))
    assert {dst for _, dst in pairs} == {
        "http://www.acme.com/about",
        "http://www.acme.com/products/x",
        "http://www.acme.com/products/steel/coil.html",
        "http://www.acme.com/products/steel/index.html?q=1",
        "http://www.acme.com/products/steel/index.html",
    }


def test_head_base_wins_over_the_target_uri(tmp_path):
    pairs, _, _ = _edges(
        tmp_path,
        _response("https://acme.com/a/b", [A("c")], base="https://static.acme.com/root/"),
        _response("https://acme.com/x/y", [A("z")], base="/jobs/"),  # a relative base
    )
    assert {dst for _, dst in pairs} == {"https://static.acme.com/root/c", "https://acme.com/jobs/z"}


def test_normalisation_and_filters(tmp_path):
    links = [
        A("HTTP://WWW.ACME-STEEL.CO.UK/Partners"),
        A("https://other.org:443/a#frag"),
        A("http://other.org:8080/b"),
        A("https://map.example.com/", path="AREA@/href"),
        A("https://img.example.com/logo.png", path="IMG@/src"),
        A("https://css.example.com/s.css", path="LINK@/href"),
        A("https://form.example.com/", path="FORM@/action"),
        A("mailto:x@acme.com"),
        A("javascript:void(0)"),
        A("http://192.0.2.7/x"),
        A("http://co.uk/"),
        A("https://other.org:443/a"),  # a duplicate after normalisation
    ]
    _, edges, counts = _edges(tmp_path, _response("https://www.acme.com/", links))
    assert sorted({e[2] for e in edges}) == [
        "http://other.org:8080/b",
        "http://www.acme-steel.co.uk/Partners",
        "https://map.example.com/",
        "https://other.org/a",
    ]
    by_url = {e[2]: e for e in edges}
    assert by_url["http://www.acme-steel.co.uk/Partners"][3:] == ("www.acme-steel.co.uk", "acme-steel.co.uk")
    assert by_url["https://other.org/a"][:2] == ("https://www.acme.com/", "acme.com")
    assert counts["links_seen"] == 9 and counts["links_dropped"] == 4


def test_only_response_records_of_node_pages_count(tmp_path):
    pairs, _, counts = _edges(
        tmp_path,
        _response("https://www.acme.com/", [A("https://a.org/")], warc_type="request"),
        _response("https://www.elsewhere.com/", [A("https://b.org/")]),
        _response("https://www.acme.com/file.pdf", [], html=False),
        _response("https://shop.acme-steel.co.uk/", [A("https://c.org/")]),
    )
    assert pairs == {("https://shop.acme-steel.co.uk/", "https://c.org/")}
    assert counts["wat_records"] == 4 and counts["node_records"] == 3
    assert counts["response_records"] == 2 and counts["non_html_records"] == 1


def test_bad_records_are_counted_not_fatal(tmp_path):
    good = _response("https://www.acme.com/ok", [A("https://good.org/")])
    pairs, _, counts = _edges(
        tmp_path,
        gen.metadata_record("https://www.acme.com/broken", b'{"Envelope": {"WARC-Header'),
        gen.metadata_record("https://www.acme.com/no-envelope", {"Container": {}}),
        gen.metadata_record("https://www.acme.com/links-dict", {"Envelope": {
            "WARC-Header-Metadata": {"WARC-Type": "response"},
            "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {"Links": {"a": 1}}}}}}),
        gen.metadata_record("", b"{}"),
        # broken JSON on a page that is not a node's: never parsed, so never counted
        gen.metadata_record("https://www.elsewhere.com/broken", b"{not json"),
        good,
    )
    assert pairs == {("https://www.acme.com/ok", "https://good.org/")}
    assert counts["malformed_json"] == 1
    assert counts["missing_fields"] == 3


def test_sample_files_read_completely():
    # every metadata record of the shipped sample is seen (ground truth has the counts)
    import json

    truth = json.loads((ROOT / "sample_data/ground_truth/CC-MAIN-2024-10.json").read_text())
    for entry in truth["files"]:
        counts = Counter()
        with open(ROOT / "sample_data/cc" / entry["path"], "rb") as fh:
            list(edges_from_wat(fh, NODES, counts))
        metadata = [r for r in entry["records"] if r["warc_type"] == "metadata"]
        assert counts["wat_records"] == len(metadata)


def test_a_truncated_file_is_an_error_not_fewer_records(tmp_path):
    from jobs.common.inputs import CorruptInputError

    path = tmp_path / "x.warc.wat.gz"
    offsets = gen.write_wat(path, [_response("https://www.acme.com/", [A(f"https://o{i}.org/")]) for i in range(5)])
    whole = path.read_bytes()
    # cut inside the last member, inside a middle one, and inside the warcinfo member before any metadata
    for cut, member in ((len(whole) - 20, offsets[-1]), (offsets[3] + 30, offsets[3]), (40, 0)):
        path.write_bytes(whole[:cut])
        with open(path, "rb") as fh, pytest.raises(CorruptInputError) as info:
            list(edges_from_wat(fh, NODES, Counter()))
        assert (info.value.code, info.value.offset) == (CorruptInputError.TRUNCATED, member)


@pytest.mark.skipif(sys.version_info < (3, 10), reason="scripts/make_sample_data.py is a tool of the repo's "
                    "Python (3.11+; it uses zip(strict=)), not of the cluster's: the main suite runs this")
def test_shipped_sample_is_what_the_generator_writes(tmp_path):
    # sample_data/ must never drift from scripts/make_sample_data.py (and the script is deterministic)
    gen.make_sample(tmp_path)
    shipped = sorted(p.relative_to(ROOT / "sample_data") for p in (ROOT / "sample_data").rglob("*") if p.is_file())
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [p for p in shipped if p.name != "README.md"] == written
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (ROOT / "sample_data" / rel).read_bytes(), rel
    assert sum((ROOT / "sample_data" / rel).stat().st_size for rel in written) < 5_000_000


def test_an_angle_bracketed_target_uri_is_the_page_and_the_base_of_its_links(tmp_path):
    # WARC 1.0 writers emit WARC-Target-URI: <uri>; the brackets are not part of the page URI
    record = gen.metadata_record(
        "<https://www.acme.com/a/b.html>",
        {"Envelope": {"WARC-Header-Metadata": {"WARC-Type": "response", "WARC-Target-URI": "<https://www.acme.com/a/b.html>"},
                      "Payload-Metadata": {"HTTP-Response-Metadata": {"HTML-Metadata": {
                          "Head": {}, "Links": [A("c.html"), A("/d"), A("")]}}}}},
    )
    pairs, edges, counts = _edges(tmp_path, record)
    assert pairs == {
        ("https://www.acme.com/a/b.html", "https://www.acme.com/a/c.html"),
        ("https://www.acme.com/a/b.html", "https://www.acme.com/d"),
        ("https://www.acme.com/a/b.html", "https://www.acme.com/a/b.html"),  # "": the page itself
    }
    assert counts["node_records"] == 1 and counts["links_dropped"] == 0


def test_a_base_and_links_are_read_as_attribute_values(tmp_path):
    page = "https://www.acme.com/x/y"
    links = [A("/q?a=1&amp;b=2"), A("  rel&#47;p  "), A("?a=1&copy=2"), A(" ")]
    pairs, _, _ = _edges(tmp_path, _response(page, links, base=" /jobs/&amp;team/ "))
    assert {dst for _, dst in pairs} == {
        "https://www.acme.com/q?a=1&b=2",
        "https://www.acme.com/jobs/&team/rel/p",
        "https://www.acme.com/jobs/&team/?a=1&copy=2",
        "https://www.acme.com/jobs/&team/",  # blank: the page's base itself
    }


def test_a_base_that_is_no_url_falls_back_to_the_target_and_the_file_goes_on(tmp_path):
    page = "https://www.acme.com/a/b"
    pairs, _, counts = _edges(
        tmp_path,
        _response(page, [A("c")], base="http://[acme.com]/"),  # urllib raises on this host
        _response("https://www.acme.com/z", [A("/y")]),
    )
    assert pairs == {(page, "https://www.acme.com/a/c"), ("https://www.acme.com/z", "https://www.acme.com/y")}
