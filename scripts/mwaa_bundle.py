"""Build what Amazon MWAA needs to run this provider and the DAG bundle, installable offline.

    python scripts/mwaa_bundle.py --airflow-version 3.3.1 [--env CC_GRAPH_OUTPUT_ROOT=s3://b/out]... [--out dist/mwaa]

writes to --out:
  plugins.zip       every wheel the MWAA image lacks: the provider, the databricks provider and
                    what it pulls in (MWAA unpacks the zip into /usr/local/airflow/plugins)
  requirements.txt  --no-index --find-links /usr/local/airflow/plugins and the provider, with no
                    constraint line: MWAA then applies its image's own constraint files, so the
                    install needs no network and gets exactly the image's pins
  startup.sh        with --env: the environment variables the DAG reads (CC_GRAPH_*), which MWAA
                    configuration options cannot set (those only become AIRFLOW__* variables)
  dags/spark_portable/   the project as MWAA's DAGs folder holds it: dags/, jobs/, profiles.yaml,
                    sample_data/ (the DAG's defaults), and an .airflowignore for the non-DAG files

What the image lacks is found the way MWAA's own pip would find it: the image's packages are
installed into a Python 3.12 virtualenv exactly as the image's bootstrap installs them
(deploy/mwaa/<version>/, copied from aws/amazon-mwaa-docker-images; cached in .cache/mwaa/),
then pip resolves the provider there under the same constraints. Needs Python 3.12 (MWAA's;
set PYTHON312 if it is not on PATH) and the package index, at build time only.
Upload steps: README.md, "Deploying to Amazon MWAA".
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "deploy" / "mwaa"
CACHE = ROOT / ".cache" / "mwaa"
MWAA_VERSIONS = ("3.0.6", "3.2.1", "3.3.1")  # the Airflow 3.x versions MWAA has images for
PLUGINS = "/usr/local/airflow/plugins"
ZIP_LIMIT = 1024**3  # MWAA recommends a plugins.zip under 1 GB
EXTRAS = "amazon,databricks"
# The project files a deployment needs besides the provider; the DAG files find the project
# root (profiles.yaml) one folder above themselves.
PROJECT = ("dags", "jobs", "profiles.yaml", "sample_data")
IGNORE = "jobs/\nsample_data/\ndags/data/\n"
# MWAA's own test (python/mwaa/utils/user_requirements.py): a line matching it means "this file
# brings its own constraints", and MWAA then does not add airflow_constraints.txt.
HAS_CONSTRAINT = re.compile(r"-c |--constraint ")
# Variables MWAA does not let startup.sh change (python/mwaa/config/setup_environment.py)
PROTECTED = re.compile(
    r"^(MWAA__.*|AIRFLOW_ENV_ID|AIRFLOW_ENV_NAME|AIRFLOW_HOME|AIRFLOW_TASK_REVISION_ID|AIRFLOW_VERSION|"
    r"AIRFLOW__AWS_MWAA__REDIRECT_URL|JWT_PUBLIC_KEY|AIRFLOW__WEBSERVER__BASE_URL|AIRFLOW__API__BASE_URL|"
    r"AWS_DEFAULT_REGION|AWS_REGION|CUSTOMER_ACCOUNT_ID|ECS_.*|AWS_CONTAINER_CREDENTIALS_RELATIVE_URI|"
    r"AWS_EXECUTION_ENV|PYTHONPATH|PYTHONUNBUFFERED|WATCHTOWER_VERSION|USE_NON_CRITICAL_LOGGING|"
    r"AIRFLOW__CORE__DATABASE_ACCESS_ISOLATION)$"
)


def image_files(version: str) -> dict[str, Path]:
    folder = DATA / version
    if version not in MWAA_VERSIONS or not folder.is_dir():
        raise SystemExit(f"--airflow-version {version}: MWAA has images for {', '.join(MWAA_VERSIONS)}")
    return {
        "essential": folder / "mwaa_essential_constraints.txt",
        "airflow": folder / "airflow_constraints.txt",
        "packages": folder / "image_packages.txt",
    }


def python312() -> str:
    candidates = [os.environ.get("PYTHON312"), shutil.which("python3.12")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.12*/bin/python")), reverse=True)
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
                               capture_output=True, text=True)  # fmt: skip
        if probe.stdout.strip() == "True":
            return candidate
    raise SystemExit("MWAA runs Python 3.12: install it, or set PYTHON312=/path/to/python3.12")


def _pip(venv: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    # python -m pip: a copied venv's console scripts would point at the original
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", *args],
                          check=True, **kwargs)  # fmt: skip


def image_venv(version: str) -> Path:
    """A virtualenv holding what MWAA's image for ``version`` holds, installed as its bootstrap
    does (``safe-pip-install -c airflow_constraints.txt <image packages>``); built once per
    version and data, under .cache/mwaa/."""
    files = image_files(version)
    key = hashlib.sha256(b"".join(files[k].read_bytes() for k in sorted(files))).hexdigest()[:12]
    venv = CACHE / f"image-{version}-{key}"
    if (venv / ".complete").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    print(f"Reproducing MWAA's Airflow {version} image in {venv} (about a minute)...", file=sys.stderr)
    subprocess.run([python312(), "-m", "venv", str(venv)], check=True)
    _pip(venv, "install", "--quiet", "--upgrade", "pip")  # 002-install-python.sh does the same
    _pip(venv, "install", "--quiet", "--constraint", str(files["essential"]), "-c", str(files["airflow"]),
         "-r", str(files["packages"]))  # fmt: skip
    (venv / ".complete").write_text(version)
    return venv


def build_wheel(out: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "-w", tmp, str(ROOT)], check=True)  # fmt: skip
        (wheel,) = Path(tmp).glob("airflow_spark_portable-*.whl")
        return Path(shutil.copy2(wheel, out / wheel.name))


def missing_wheels(version: str, provider: Path, out: Path) -> list[Path]:
    """Wheels of everything ``pip install -r requirements.txt`` adds to MWAA's image: pip's own
    resolution in the image's virtualenv, under MWAA's constraints. Packages published only
    as source are built into wheels here, because pip cannot build them offline on MWAA."""
    files, venv = image_files(version), image_venv(version)
    requirement = f"airflow-spark-portable[{EXTRAS}]=={provider.name.split('-')[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        _pip(venv, "install", "--quiet", "--dry-run", "--report", str(report), "--find-links", str(provider.parent),
             "--constraint", str(files["essential"]), "-c", str(files["airflow"]), requirement)  # fmt: skip
        installs = json.loads(report.read_text())["install"]
    wanted = [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in installs
              if i["metadata"]["name"].lower().replace("_", "-") != "airflow-spark-portable"]  # fmt: skip
    before = set(out.glob("*.whl"))
    if wanted:
        _pip(venv, "wheel", "--quiet", "--no-deps", "-w", str(out), *wanted)
    return sorted(set(out.glob("*.whl")) - before)


def requirements(provider: Path, version: str) -> str:
    text = (
        f"# airflow-spark-portable {provider.name.split('-')[1]} for Amazon MWAA, Airflow {version} (Python 3.12).\n"
        f"# Every package comes from plugins.zip, unpacked in {PLUGINS}: no internet access needed.\n"
        "# No constraints line on purpose: MWAA then applies its image's own constraint files.\n"
        "--no-index\n"
        f"--find-links {PLUGINS}\n"
        f"airflow-spark-portable[{EXTRAS}]=={provider.name.split('-')[1]}\n"
    )
    if HAS_CONSTRAINT.search(text):  # MWAA would then not apply its own constraints
        raise SystemExit("requirements.txt must not contain '-c ' or '--constraint '")
    return text


def startup_script(env: list[str]) -> str:
    from airflow_spark_portable.redaction import is_sensitive  # the project's one secrets policy

    lines = [
        "#!/bin/sh",
        "# Sourced by MWAA before it installs requirements.txt and starts Airflow: the settings",
        "# the DAG reads from the environment (MWAA configuration options only set AIRFLOW__*).",
    ]
    for item in env:
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise SystemExit(f"--env {item!r}: write NAME=VALUE")
        if PROTECTED.match(name):
            raise SystemExit(f"--env {name}: MWAA does not let startup.sh set {name}")
        if is_sensitive(name):  # startup.sh is a plain file in the S3 bucket, and MWAA logs it
            raise SystemExit(
                f"--env {name}: looks like a credential, which would be stored in plain text in startup.sh "
                "(plugins.zip, in the environment's S3 bucket); keep it in AWS Secrets Manager as an Airflow "
                "connection or variable (MWAA's secrets backend) instead"
            )
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


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
    parser.add_argument("--airflow-version", default=MWAA_VERSIONS[-1], choices=MWAA_VERSIONS,
                        help="the MWAA environment's Airflow version")  # fmt: skip
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for startup.sh (repeatable), e.g. CC_GRAPH_OUTPUT_ROOT=s3://b/out")  # fmt: skip
    parser.add_argument("--out", type=Path, default=ROOT / "dist" / "mwaa")
    args = parser.parse_args(argv)
    if sys.platform != "linux" or platform.machine() != "x86_64":  # the wheels are built for this host
        raise SystemExit(f"build the MWAA bundle on Linux x86_64, as MWAA's workers are (this is {platform.platform()})")
    startup = startup_script(args.env) if args.env else None
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    provider = build_wheel(wheels)
    added = missing_wheels(args.airflow_version, provider, wheels)
    with zipfile.ZipFile(out / "plugins.zip", "w", zipfile.ZIP_DEFLATED) as archive:
        for wheel in sorted(wheels.glob("*.whl")):
            archive.write(wheel, wheel.name)  # at the top level: MWAA's --find-links folder
    shutil.rmtree(wheels)
    size = (out / "plugins.zip").stat().st_size
    if size > ZIP_LIMIT:
        raise SystemExit(f"plugins.zip is {size / 1024**2:.0f} MB: MWAA recommends under 1 GB")
    (out / "requirements.txt").write_text(requirements(provider, args.airflow_version))
    if startup:
        (out / "startup.sh").write_text(startup)
    copy_project(out / "dags" / "spark_portable")
    print(
        f"MWAA {args.airflow_version} bundle in {out}: plugins.zip ({size / 1024**2:.1f} MB, {len(added) + 1} wheels), "
        f"requirements.txt, {'startup.sh, ' if startup else ''}dags/"
    )
    return out


if __name__ == "__main__":
    main()
