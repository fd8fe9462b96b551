"""The MWAA bundle installed the way MWAA installs it, with no network, on MWAA's own image.

For each MWAA Airflow version under test: a Python 3.12 virtualenv holds the image's packages,
installed as the image's bootstrap installs them (deploy/mwaa/<version>/, copied from
aws/amazon-mwaa-docker-images; scripts/mwaa_bundle.py builds and caches it). Then MWAA's start-up
steps, as python/mwaa/entrypoint.py runs them: startup.sh is sourced, and requirements.txt is
installed with ``pip3 install --constraint mwaa_essential_constraints.txt -r requirements.txt``
plus ``-c airflow_constraints.txt`` when the file has no constraint line of its own
(python/mwaa/utils/user_requirements.py, bin/airflow-user/safe-pip-install), from plugins.zip
unpacked, with pip cut off from the network (no index, no configuration, proxies to a closed
port). Then Airflow in that environment loads the bundle."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import mwaa_bundle  # noqa: E402

OUTPUT_ROOT = "s3://graph-bucket/cc-graph"
# pip honours these: any download attempt fails at once, as in a private subnet with no NAT
OFFLINE = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INPUT": "1"} | {
    name: "http://127.0.0.1:9" for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")
}


def _offline_env(tmp) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "AIRFLOW", "VIRTUAL_ENV"))}
    env |= OFFLINE | {"NO_PROXY": "", "no_proxy": "", "HOME": str(tmp / "home")}
    env |= {"AIRFLOW_HOME": str(tmp / "airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    (tmp / "home").mkdir(exist_ok=True)
    return env


@pytest.fixture(scope="module", params=["3.0.6", "3.3.1"])
def mwaa(request, tmp_path_factory):
    """(version, bundle folder, environment venv, pip's result) after MWAA's install steps."""
    version = request.param
    tmp = tmp_path_factory.mktemp(f"mwaa-{version}")
    out = tmp / "bundle"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "mwaa_bundle.py"), "--airflow-version", version,
         "--env", f"CC_GRAPH_OUTPUT_ROOT={OUTPUT_ROOT}", "--out", str(out)],
        check=True, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    venv = tmp / "venv"  # this environment's copy: the cached image stays bare
    shutil.copytree(mwaa_bundle.image_venv(version), venv, symlinks=True)
    plugins = tmp / "plugins"
    with zipfile.ZipFile(out / "plugins.zip") as archive:
        archive.extractall(plugins)
    # the one change: plugins.zip is unpacked here, not in /usr/local/airflow/plugins
    requirements = (out / "requirements.txt").read_text().replace(mwaa_bundle.PLUGINS, str(plugins))
    (tmp / "requirements.txt").write_text(requirements)
    files = mwaa_bundle.image_files(version)
    pip = [str(venv / "bin/python"), "-m", "pip", "install", "--constraint", str(files["essential"]),
           "-r", str(tmp / "requirements.txt")]  # fmt: skip
    if not mwaa_bundle.HAS_CONSTRAINT.search(requirements):
        pip += ["-c", str(files["airflow"])]
    script = f". {shlex.quote(str(out / 'startup.sh'))} && exec {shlex.join(pip)}"
    # MWAA stops pip after 9 minutes
    installed = subprocess.run(["sh", "-c", script], env=_offline_env(tmp), capture_output=True, text=True, timeout=540)
    return version, out, venv, installed, tmp


def test_the_bundle_installs_offline_with_mwaas_procedure(mwaa):
    version, out, venv, installed, tmp = mwaa
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    requirements = (out / "requirements.txt").read_text()
    assert not mwaa_bundle.HAS_CONSTRAINT.search(requirements)  # so MWAA applies its own constraints
    assert "--no-index" in requirements.splitlines()
    size = (out / "plugins.zip").stat().st_size
    assert size < mwaa_bundle.ZIP_LIMIT
    with zipfile.ZipFile(out / "plugins.zip") as archive:
        names = archive.namelist()
    assert all("/" not in n and n.endswith(".whl") for n in names)  # top level: the find-links folder
    assert any(n.startswith("apache_airflow_providers_databricks-") for n in names)  # not in MWAA's image
    assert not any(n.startswith(("apache_airflow-", "apache_airflow_providers_amazon-")) for n in names)  # in it


def test_airflow_on_that_environment_loads_the_bundle_and_both_engines(mwaa):
    version, out, venv, installed, tmp = mwaa
    assert installed.returncode == 0
    check = f". {shlex.quote(str(out / 'startup.sh'))} && exec {venv}/bin/python {ROOT / 'scripts/check_install.py'} {out / 'dags'}"
    done = subprocess.run(["sh", "-c", check], env=_offline_env(tmp), capture_output=True, text=True, timeout=300)
    lines = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    assert done.returncode == 0 and len(lines) == 1, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    pins = dict(
        line.split("==") for line in mwaa_bundle.image_files(version)["airflow"].read_text().splitlines() if "==" in line
    )
    assert result["airflow"] == version
    assert {"airflow-spark-portable", "apache-airflow-providers-databricks"} <= set(result["providers_list"])
    assert result["amazon"] == pins["apache-airflow-providers-amazon"]  # the image's, untouched
    assert result["databricks"] == pins["apache-airflow-providers-databricks"]  # from plugins.zip, MWAA's pin
    assert result["engines"] == {"emr": "EmrEngine", "databricks": "DatabricksEngine"}
    assert result["output_root"] == OUTPUT_ROOT  # startup.sh's CC_GRAPH_OUTPUT_ROOT reached the DAG


def test_startup_sh_refuses_what_mwaa_protects():
    with pytest.raises(SystemExit, match="MWAA does not let startup.sh set PYTHONPATH"):
        mwaa_bundle.startup_script(["PYTHONPATH=/x"])
    assert mwaa_bundle.startup_script(["CC_GRAPH_CC_ROOT=s3://commoncrawl/ x"]).endswith(
        "export CC_GRAPH_CC_ROOT='s3://commoncrawl/ x'\n"
    )
