"""WAT records per second per core of the edges extraction the job really runs
(``jobs.common.wat.edges_from_wat``), measured side by side in one run with:

* baseline: the cc-pyspark way (``wat_extract_links``): warcio, ``json.loads`` and a link walk
  for every record, then keep the pages on seed domains;
* lower bound: FastWARC only decompressing and splitting the same WARC records. It does not
  check that the gzip stream ends cleanly, which ours does (``jobs.common.wat.warc_records``:
  ~2% of this loop, measured side by side), so the ratio slightly understates ours.

Run: ``.venv/bin/python benchmarks/edges_throughput.py [--records 20000] [--repeat 3]``
Single process, so every figure is per core.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urljoin, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import make_sample_data as gen  # noqa: E402
from fastwarc.warc import ArchiveIterator  # noqa: E402
from warcio.archiveiterator import ArchiveIterator as WarcioIterator  # noqa: E402

from jobs.common.urls import registered_domain  # noqa: E402
from jobs.common.wat import edges_from_wat  # noqa: E402


def ours(path: Path, nodes: frozenset[str]) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in edges_from_wat(fh, nodes, Counter()))


def baseline(path: Path, nodes: frozenset[str]) -> int:
    """As cc-pyspark's ExtractLinksJob: parse every record's JSON, walk its links, filter after."""
    pairs = []
    with open(path, "rb") as fh:
        for record in WarcioIterator(fh):
            if record.rec_type != "metadata":
                continue
            try:
                doc = json.loads(record.content_stream().read())
                meta = doc["Envelope"]["WARC-Header-Metadata"]
                if meta["WARC-Type"] != "response":
                    continue
                url = meta["WARC-Target-URI"]
                html = doc["Envelope"]["Payload-Metadata"]["HTTP-Response-Metadata"]["HTML-Metadata"]
            except (KeyError, ValueError, TypeError):
                continue
            base = urljoin(url, html.get("Head", {}).get("Base") or "")
            for link in html.get("Links", []):
                if link.get("path") in ("A@/href", "AREA@/href") and "url" in link:
                    pairs.append((url, urljoin(base, link["url"])))
    return sum(1 for src, _ in pairs if registered_domain(urlsplit(src).hostname) in nodes)


def decompress_only(path: Path, nodes: frozenset[str]) -> int:
    with open(path, "rb") as fh:
        return sum(1 for _ in ArchiveIterator(fh, parse_http=False, fsspec_args=False))


def best_seconds(fn, path, nodes, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(path, nodes)
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    nodes = frozenset(registered_domain(h) for h in gen.BENCHMARK_SEED_HOSTS)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for share, targets in ((0.01, {"baseline": 10.0, "lower_bound": 0.70}), (1.0, {"baseline": 2.5})):
            path = Path(tmp) / f"bench-{share}.warc.wat.gz"
            info = gen.make_benchmark_wat(path, args.records, share, gen.BENCHMARK_SEED_HOSTS)
            n = info["records"]
            rates = {}
            for name, fn in (("ours", ours), ("baseline", baseline), ("lower_bound", decompress_only)):
                seconds, result = best_seconds(fn, path, nodes, args.repeat)
                rates[name] = n / seconds
                print(f"seed share {share:>4.0%}  {name:<12} {rates[name]:>10,.0f} records/s/core  ({result:,} out)")
            for other, target in targets.items():
                ratio = rates["ours"] / rates[other]
                met = ratio >= target
                ok &= met
                print(f"seed share {share:>4.0%}  ours / {other:<12} = {ratio:6.2f}  (target >= {target}: {'met' if met else 'MISSED'})")
            print(f"  ({n:,} WARC records, {info['bytes'] / 1e6:.1f} MB gz, {info['seed_responses']:,} seed pages)")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
