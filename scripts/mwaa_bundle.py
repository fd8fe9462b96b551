"""Build what Amazon MWAA needs to run this provider and the DAG bundle.

    python scripts/mwaa_bundle.py [--airflow-version 3.0.6] [--python-version 3.12] [--out dist/mwaa]

writes to --out:
  plugins.zip       the provider wheel (MWAA unpacks it into /usr/local/airflow/plugins)
  requirements.txt  the MWAA constraint line, then the wheel installed from the plugins folder
                    with --no-index --find-links, so environments without internet work
  dags/spark_portable/   the project as MWAA's DAGs folder holds it: dags/, jobs/, profiles.yaml,
                    sample_data/ (the DAG's defaults), and an .airflowignore for the non-DAG files
Upload steps: README.md, "Deploying to Amazon MWAA".
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLUGINS = "/usr/local/airflow/plugins"
# The project files a deployment needs besides the provider; the DAG files find the project
# root (profiles.yaml) one folder above themselves.
PROJECT = ("dags", "jobs", "profiles.yaml", "sample_data")
IGNORE = "jobs/\nsample_data/\ndags/data/\n"


def build_wheel(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "-w",
                tmp,
                str(ROOT),
            ],
            check=True,
        )
        (wheel,) = Path(tmp).glob("airflow_spark_portable-*.whl")
        return Path(shutil.copy2(wheel, out / wheel.name))


def requirements(wheel: Path, airflow_version: str, python_version: str) -> str:
    version = wheel.name.split("-")[1]
    return (
        f"# airflow-spark-portable {version} for Amazon MWAA, Airflow {airflow_version}, Python {python_version}.\n"
        "# The wheel comes from plugins.zip. No extras: MWAA's image already has the amazon and\n"
        "# databricks providers, and asking for extras could make pip look for packages offline.\n"
        f'--constraint "https://raw.githubusercontent.com/apache/airflow/constraints-{airflow_version}/'
        f'constraints-{python_version}.txt"\n'
        "--no-index\n"
        f"--find-links {PLUGINS}\n"
        f"airflow-spark-portable=={version}\n"
    )


def copy_project(target: Path) -> None:
    target.mkdir(parents=True)
    for name in PROJECT:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".*"))
        else:
            shutil.copy2(source, target / name)
    (target / ".airflowignore").write_text(IGNORE)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airflow-version", default="3.0.6", help="the MWAA environment's Airflow version")
    parser.add_argument("--python-version", default="3.12", help="the MWAA environment's Python (3.12 for 3.x)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "mwaa")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    wheel = build_wheel(out)
    with zipfile.ZipFile(out / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(wheel, wheel.name)  # at the top level: MWAA's --find-links folder
    wheel.unlink()
    (out / "requirements.txt").write_text(requirements(wheel, args.airflow_version, args.python_version))
    copy_project(out / "dags" / "spark_portable")
    print(f"MWAA bundle in {out}: plugins.zip, requirements.txt, dags/")
    return out


if __name__ == "__main__":
    main()
