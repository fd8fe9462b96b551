"""The four graph jobs on the shipped sample, compared row by row with answers computed here,
independently, from the generator's ground truth (raw records and seeds)."""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import shutil
import sys
from collections import defaultdict
from urllib.parse import urljoin, urlsplit, urlunsplit

import pytest
from publicsuffixlist import PublicSuffixList

from .support import ROOT, spark_version
from harness.run_graph_steps import run_step as harness_run_step

pytestmark = pytest.mark.spark

SAMPLE = ROOT / "sample_data"
CRAWLS = ("CC-MAIN-2024-10", "CC-MAIN-2024-18")
DOMAINS = ("steel", "pharma")
LINK_PATHS = {"A@/href", "AREA@/href"}
PSL = PublicSuffixList(only_icann=True)


# -- the oracle: plain Python over the ground truth --------------------------------------


def rd(host):
    if not host:
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        return PSL.privatesuffix(host.lower())


def canonical(url, base):
    parts = urlsplit(urljoin(base, url.strip()))
    if parts.scheme.lower() not in ("http", "https"):
        return None
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not rd(host):
        return None
    keep_port = port is not None and port != {"http": 80, "https": 443}[parts.scheme.lower()]
    netloc = f"{host}:{port}" if keep_port else host
    return urlunsplit((parts.scheme.lower(), netloc, parts.path, parts.query, "")), host, rd(host)


def oracle_nodes(domain):
    rows = list(csv.DictReader(open(SAMPLE / "seeds" / f"{domain}.csv", encoding="utf-8")))
    best, invalid = {}, 0
    for row in rows:
        url = (row["url"] or "").strip()
        parts = urlsplit(url)
        domain_ = rd(parts.hostname) if url and parts.scheme.lower() in ("http", "https") else None
        if not domain_:
            invalid += 1
            continue
        candidate = (row["company_id"], row["url"], parts.hostname, domain_)
        if domain_ not in best or candidate[0] < best[domain_][0]:
            best[domain_] = candidate
    return set(best.values()), invalid, len(rows)


def oracle_edges(crawl, node_domains):
    truth = json.loads((SAMPLE / "ground_truth" / f"{crawl}.json").read_text())
    edges = {}
    for entry in truth["files"]:
        for rec in entry["records"]:
            if rec.get("malformed") or rec.get("envelope_warc_type") != "response":
                continue
            target = rec["target_uri"]
            src_rd = rd(urlsplit(target).hostname)
            if src_rd not in node_domains:
                continue
            base = urljoin(target, rec["base"]) if rec.get("base") else target
            for link in rec.get("links") or []:
                if link.get("path") in LINK_PATHS and (dst := canonical(link["url"], base)):
                    edges[(target, dst[0])] = (target, src_rd, *dst)
    return set(edges.values())


def oracle_graph(nodes, edges):
    company = {n[3]: n[0] for n in nodes}
    links, pages = defaultdict(set), defaultdict(set)
    dlinks, dpages = defaultdict(set), defaultdict(set)
    for src_url, src_rd, dst_url, _, dst_rd in edges:
        if src_rd == dst_rd:
            continue
        key = (company[src_rd], company.get(dst_rd), dst_rd)
        links[key].add((src_url, dst_url))
        pages[key].add(src_url)
        dlinks[(src_rd, dst_rd)].add((src_url, dst_url))
        dpages[(src_rd, dst_rd)].add(src_url)
    graph = {(*k, len(links[k]), len(pages[k])) for k in links}
    aggr = {(*k, len(dlinks[k]), len(dpages[k])) for k in dlinks}
    return graph, aggr


# -- running the jobs in one Spark session ------------------------------------------------


def run_step(step, crawl, domain, out, tmp_path, cc_root=None, max_files=None, extras=None, run_id="r"):
    return harness_run_step(step, crawl, domain, cc_root or SAMPLE / "cc", SAMPLE / "seeds", out, tmp_path, max_files,
                            extras, run_id)


def rows(spark, path, columns):
    return {tuple(r) for r in spark.read.parquet(str(path)).select(*columns).collect()}


@pytest.fixture(scope="module")
def pipeline(spark, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph")
    out = tmp / "out"
    reports = {}
    for crawl in CRAWLS:
        for domain in DOMAINS:
            for step in ("nodes", "edges", "graph", "graph_aggr"):
                report, error = run_step(step, crawl, domain, out, tmp)
                assert error is None and report.completed, (step, crawl, domain, error, report.failure)
                reports[(step, crawl, domain)] = report.metrics
    return out, reports, tmp


@pytest.mark.parametrize("crawl", CRAWLS)
@pytest.mark.parametrize("domain", DOMAINS)
def test_outputs_match_the_ground_truth(spark, pipeline, crawl, domain):
    out, reports, _ = pipeline
    part = f"crawl={crawl}/domain={domain}"
    nodes, invalid, total = oracle_nodes(domain)
    assert rows(spark, out / "nodes" / part, ["company_id", "url", "host", "registered_domain"]) == nodes
    edges = oracle_edges(crawl, {n[3] for n in nodes})
    assert edges, "the sample must produce edges"
    got_edges = rows(
        spark, out / "edges" / part,
        ["src_url", "src_registered_domain", "dst_url", "dst_host", "dst_registered_domain"],
    )
    assert got_edges == edges
    graph, aggr = oracle_graph(nodes, edges)
    got_graph = rows(
        spark, out / "graph" / part,
        ["src_company_id", "dst_company_id", "dst_registered_domain", "n_links", "n_pages"],
    )
    assert got_graph == graph
    assert any(g[1] is not None for g in graph), "the sample must have firm-to-firm links"
    assert rows(spark, out / "graph_aggr" / part, ["src_domain", "dst_domain", "n_links", "n_pages"]) == aggr

    node_metrics = reports[("nodes", crawl, domain)]
    assert node_metrics["seeds"] == total and node_metrics["seeds_invalid"] == invalid
    assert node_metrics["rows"] == len(nodes)
    edge_metrics = reports[("edges", crawl, domain)]
    assert edge_metrics["rows"] == len(edges) and edge_metrics["files_ok"] == 3
    assert edge_metrics["files_failed"] == 0
    for step in ("nodes", "edges", "graph", "graph_aggr"):
        assert (out / step / part / "_SUCCESS").exists()


def test_bad_records_in_the_sample_are_counted(pipeline):
    _, reports, _ = pipeline
    for crawl in CRAWLS:
        truth = json.loads((SAMPLE / "ground_truth" / f"{crawl}.json").read_text())
        for domain in DOMAINS:
            nodes = {n[3] for n in oracle_nodes(domain)[0]}
            on_nodes = [m for m in truth["malformed"] if rd(urlsplit(m["target_uri"] or "").hostname) in nodes]
            expected = sum(m["kind"] == "truncated_json" for m in on_nodes)
            assert reports[("edges", crawl, domain)]["malformed_json"] == expected


def test_rerun_replaces_exactly_its_partition(spark, pipeline):
    out, _, tmp = pipeline
    crawl, domain = CRAWLS[0], DOMAINS[0]
    other = out / "edges" / f"crawl={CRAWLS[1]}/domain={domain}"
    before_other = sorted(p.name for p in other.iterdir())
    target = out / "edges" / f"crawl={crawl}/domain={domain}"
    stray = target / "part-stale.parquet"
    shutil.copy(next(target.glob("part-*.parquet")), stray)  # would duplicate rows if kept
    report, error = run_step("edges", crawl, domain, out, tmp)
    assert error is None and report.completed
    assert not stray.exists()
    assert spark.read.parquet(str(target)).count() == report.metrics["rows"]
    assert sorted(p.name for p in other.iterdir()) == before_other


def test_an_incomplete_upstream_partition_is_refused(pipeline, tmp_path):
    out, _, _ = pipeline
    copy = tmp_path / "out"
    shutil.copytree(out / "nodes", copy / "nodes")
    (copy / "nodes" / f"crawl={CRAWLS[0]}/domain=steel" / "_SUCCESS").unlink()  # as a killed write leaves it
    report, error = run_step("edges", CRAWLS[0], "steel", copy, tmp_path)
    assert isinstance(error, FileNotFoundError) and not report.completed
    assert "missing or incomplete" in report.failure["message"]
    assert not (copy / "edges").exists()


def test_unreadable_wat_files_within_max_failed_files_are_reported(pipeline, tmp_path):
    out, _, _ = pipeline
    cc = tmp_path / "cc"
    shutil.copytree(SAMPLE / "cc", cc)
    crawl_dir = cc / "crawl-data" / CRAWLS[0]
    first = next(crawl_dir.rglob("*.warc.wat.gz"))
    first.write_bytes(first.read_bytes()[:3000])  # truncated gzip
    copy = tmp_path / "out"
    shutil.copytree(out / "nodes", copy / "nodes")
    report, error = run_step("edges", CRAWLS[0], "steel", copy, tmp_path, cc_root=cc, extras={"max_failed_files": 1})
    assert error is None and report.completed
    assert report.metrics["files_failed"] == 1 and report.metrics["files_ok"] == 2
    assert first.name in report.metrics["first_file_error"]
    assert [f["path"] for f in report.metrics["failed_files"]] == [str(first)]


def test_sampling_reads_only_the_first_files(pipeline, tmp_path):
    out, _, _ = pipeline
    copy = tmp_path / "out"
    shutil.copytree(out / "nodes", copy / "nodes")
    report, error = run_step("edges", CRAWLS[0], "steel", copy, tmp_path, max_files=1)
    assert error is None and report.metrics["wat_files"] == 1 and report.metrics["files_ok"] == 1


def test_missing_seed_list_names_the_file(spark, tmp_path):
    report, error = run_step("nodes", CRAWLS[0], "textiles", tmp_path / "out", tmp_path)
    assert isinstance(error, FileNotFoundError)
    assert "no seed list for domain 'textiles'" in report.failure["message"]


@pytest.mark.skipif(spark_version() < (4, 0), reason="pyspark 3.5's pip package has no Spark Connect server jar "
                    "to start locally; Connect (Databricks serverless and shared clusters) runs in the main suite")
def test_jobs_run_unchanged_over_spark_connect(spark, pipeline, tmp_path):
    """Spark Connect refuses RDDs and SparkContext: the same job files must still produce
    the same partitions (this is how they run on Databricks serverless and shared clusters)."""
    import subprocess

    out, _, _ = pipeline
    crawl, domain = CRAWLS[1], "pharma"
    # SPARK_TESTING: the local Connect server takes a free port, not 15002
    env = {**os.environ, "SPARK_REMOTE": "local[2]", "SPARK_TESTING": "1", "PYSPARK_PYTHON": sys.executable,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests/harness/run_graph_steps.py"), str(SAMPLE / "cc"), str(SAMPLE / "seeds"),
         str(tmp_path / "out"), str(tmp_path / "work"), crawl, domain],
        env=env, capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    reports = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert proc.returncode == 0 and len(reports) == 4, proc.stderr[-3000:]
    assert all(r["completed"] for r in reports), reports
    part = f"crawl={crawl}/domain={domain}"
    for step, columns in (
        ("nodes", ["company_id", "url", "host", "registered_domain"]),
        ("edges", ["src_url", "src_registered_domain", "dst_url", "dst_host", "dst_registered_domain"]),
        ("graph", ["src_company_id", "dst_company_id", "dst_registered_domain", "n_links", "n_pages"]),
        ("graph_aggr", ["src_domain", "dst_domain", "n_links", "n_pages"]),
    ):
        assert rows(spark, tmp_path / "out" / step / part, columns) == rows(spark, out / step / part, columns), step


def test_a_failed_rerun_keeps_the_previous_partition(spark, pipeline, tmp_path):
    out, reports, _ = pipeline
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    crawl, domain = CRAWLS[0], "steel"
    edges = copy / "edges" / f"crawl={crawl}/domain={domain}"
    before = rows(spark, edges, ["src_url", "dst_url"])
    broken_cc = tmp_path / "cc"
    shutil.copytree(SAMPLE / "cc", broken_cc)
    for wat in (broken_cc / "crawl-data" / crawl).rglob("*.warc.wat.gz"):
        wat.write_bytes(b"not gzip at all")  # every file unreadable: the edges step fails
    report, error = run_step("edges", crawl, domain, copy, tmp_path, cc_root=broken_cc)
    assert error is not None and not report.completed
    assert (edges / "_SUCCESS").exists() and rows(spark, edges, ["src_url", "dst_url"]) == before
    assert not [p for p in edges.parent.iterdir() if p.name.startswith(".domain=steel.")]  # no staging left


def test_object_store_mode_copies_the_vetted_staging(spark, pipeline, tmp_path, monkeypatch):
    # s3:// and cluster file systems cannot be renamed in from the driver: the staged
    # partition is rewritten over the old one instead (exercised here on local disk)
    import jobs.common.crawl_job as crawl_job

    monkeypatch.setattr(crawl_job, "_local_folder", lambda uri, master: None)
    out, _, _ = pipeline
    copy = tmp_path / "out"
    shutil.copytree(out / "nodes", copy / "nodes")
    report, error = run_step("nodes", CRAWLS[0], "pharma", copy, tmp_path)
    assert error is None and report.completed
    part = copy / "nodes" / f"crawl={CRAWLS[0]}/domain=pharma"
    assert rows(spark, part, ["company_id"]) == rows(spark, out / "nodes" / f"crawl={CRAWLS[0]}/domain=pharma", ["company_id"])
    assert (part / "_SUCCESS").exists() and (part.parent / ".domain=pharma.staging" / "_SUCCESS").exists()
    # Spark's partition discovery skips the hidden staging folder
    table = spark.read.parquet(str(copy / "nodes"))
    assert table.where(f"crawl = '{CRAWLS[0]}' and domain = 'pharma'").count() == report.metrics["rows"]


def _seed_list(tmp_path, text: str | bytes, domain="steel"):
    folder = tmp_path / "seeds"
    folder.mkdir(exist_ok=True)
    (folder / f"{domain}.csv").write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return folder


def test_a_seed_list_that_is_not_utf8_is_refused_naming_the_line(spark, tmp_path):
    seeds = _seed_list(tmp_path, "company_id,url\nS1,https://acme.com/\nS2,https://www.müller-stahl.de/\n".encode("latin-1"))
    report, error = harness_run_step("nodes", CRAWLS[0], "steel", SAMPLE / "cc", seeds, tmp_path / "out", tmp_path)
    assert isinstance(error, ValueError) and not report.completed
    message = report.failure["message"]
    assert "steel.csv is not UTF-8: byte 0xfc on line 3" in message and "save the seed list as UTF-8" in message
    assert not (tmp_path / "out" / "nodes").exists()


def test_utf8_seed_lists_keep_their_characters(spark, tmp_path):
    seeds = _seed_list(tmp_path, "company_id,url\nS1,https://www.müller-stahl.de/\nS2,https://acme.com/\n")
    out = tmp_path / "out"
    report, error = harness_run_step("nodes", CRAWLS[0], "steel", SAMPLE / "cc", seeds, out, tmp_path)
    assert error is None, report.failure
    got = rows(spark, out / "nodes" / f"crawl={CRAWLS[0]}/domain=steel", ["company_id", "url", "registered_domain"])
    assert got == {("S1", "https://www.müller-stahl.de/", "xn--mller-stahl-thb.de"), ("S2", "https://acme.com/", "acme.com")}
    assert report.metrics["seeds_invalid"] == 0


def test_a_company_id_on_two_registered_domains_is_refused(spark, tmp_path):
    seeds = _seed_list(tmp_path, "company_id,url\nS1,https://acme.com/\nS2,https://b.org/\nS1,https://acme.de/\n"
                                 "S3,https://www.c.net/\nS3,http://shop.c.net/\n")  # S3: one domain, fine
    report, error = harness_run_step("nodes", CRAWLS[0], "steel", SAMPLE / "cc", seeds, tmp_path / "out", tmp_path)
    assert isinstance(error, ValueError) and not report.completed
    assert "a company_id names seeds on different registered domains (S1: acme.com, acme.de)" in report.failure["message"]


def test_a_step_fails_at_once_while_another_run_holds_its_partition(spark, pipeline, tmp_path):
    """Two runs of one (crawl, domain) into one output root would read each other's
    half-swapped partitions: a step that finds the pair's lease held fails at once, naming
    the holder, and writes nothing; once the lease is free the same step runs."""
    import time

    from jobs.common.crawl_job import PartitionBusyError, partition_lease

    out, _, _ = pipeline
    copy = tmp_path / "out"
    shutil.copytree(out / "nodes", copy / "nodes")
    lock = copy / "_leases" / f"crawl={CRAWLS[0]}" / "domain=steel.lock"
    with partition_lease(str(lock), "common_crawl_graph.pair.edges of run other_run, try 1") as taken:
        assert taken is None
        started = time.monotonic()
        report, error = run_step("edges", CRAWLS[0], "steel", copy, tmp_path)
        assert isinstance(error, PartitionBusyError) and time.monotonic() - started < 60
        assert "is in use by common_crawl_graph.pair.edges of run other_run, try 1" in report.failure["message"]
        assert not (copy / "edges").exists()
        # the other pair of the same output root is not held
        report, error = run_step("edges", CRAWLS[0], "pharma", copy, tmp_path)
        assert error is None, report.failure
    report, error = run_step("edges", CRAWLS[0], "steel", copy, tmp_path)
    assert error is None and (copy / "edges" / f"crawl={CRAWLS[0]}/domain=steel" / "_SUCCESS").exists()
    assert lock.read_text() == ""  # released, holder cleared


def test_a_run_whose_pair_another_run_took_over_fails_instead_of_mixing(spark, tmp_path):
    """Run B's nodes step lands between two steps of run A: A's next step must not build on
    B's partitions (it would finish green on a mix); B, the owner now, goes on."""
    from jobs.common.crawl_job import PartitionBusyError

    out, crawl = tmp_path / "out", CRAWLS[0]
    for step in ("nodes", "edges"):
        report, error = run_step(step, crawl, "steel", out, tmp_path, run_id="run_a")
        assert error is None, report.failure
    report, error = run_step("nodes", crawl, "steel", out, tmp_path, run_id="run_b")
    assert error is None, report.failure
    report, error = run_step("graph", crawl, "steel", out, tmp_path, run_id="run_a")
    assert isinstance(error, PartitionBusyError) and not report.completed
    assert "was taken over by run run_b of test" in report.failure["message"]
    assert "Re-run this pair from its nodes step" in report.failure["message"]
    assert not (out / "graph").exists()
    for step in ("edges", "graph"):  # the owner's own steps go on
        report, error = run_step(step, crawl, "steel", out, tmp_path, run_id="run_b")
        assert error is None, report.failure
    # another pair of the same output root is not affected
    report, error = run_step("nodes", crawl, "pharma", out, tmp_path, run_id="run_a")
    assert error is None, report.failure
