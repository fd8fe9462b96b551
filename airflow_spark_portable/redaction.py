"""Which values are secrets, and what is done about them: the one place for that policy.

A secret is never logged, never put on a command line (``ps`` shows every local user
the arguments of every process) and never written where others can read it. Engines
that would have to pass one in plain sight (EMR step arguments, Databricks run settings)
refuse it with ``SECRET_CONF`` instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Matched on the conf key, whatever the value looks like. Covers s3a keys and session
# tokens, Azure account keys / SAS tokens / OAuth client secrets, GCS service-account
# private keys and key files, JDBC and keystore passwords, Databricks and other tokens.
_SENSITIVE_KEY = re.compile(
    r"secret|password|passwd|(^|[._-])pwd($|[._-])|token|credential|access[._-]?key|api[._-]?key"
    r"|account[._-]key|private[._-]?key|keyfile|(^|[._-])sas($|[._-])|encryption[._-]key|signing[._-]key",
    re.IGNORECASE,
)
# ...except keys that name how credentials are found (a class name, a switch), not a credential:
# fs.s3a.aws.credentials.provider, fs.azure.sas.token.provider.type, ...auth.service.account.enable
_NOT_SECRET_KEY = re.compile(r"[._-](provider|provider[._-]type|type|enable|enabled|impl|class|file[._-]?path)$", re.I)

# Conf whose value spark-submit turns into JVM arguments (the driver's, the executors', the YARN
# ApplicationMaster's): a -D<secret-looking name>=value in it is a credential on a command line.
_JAVA_OPTIONS_KEY = re.compile(r"\.(extra|default)JavaOptions$")
_JAVA_PROPERTY = re.compile(r"""-D([^=\s]+)=("[^"]*"|'[^']*'|\S+)""")

# application_args flags whose value is a secret: --api-token X, --password=X, --sas-key X
_SECRET_FLAG = re.compile(r"^--?[\w.-]*(token|password|passwd|secret|key|credential)[\w.-]*$", re.IGNORECASE)

# A task refused because a credential would travel in plain sight (match on .code, not text).
SECRET_CONF = "SECRET_CONF"

MASK = "***"


def is_sensitive(key: str) -> bool:
    return bool(_SENSITIVE_KEY.search(key)) and not _NOT_SECRET_KEY.search(key)


def java_option_secrets(key: str, value: str) -> list[str]:
    """The values of secret-looking ``-Dname=value`` properties in a Java options conf."""
    if not _JAVA_OPTIONS_KEY.search(key):
        return []
    return [secret.strip("'\"") for name, secret in _JAVA_PROPERTY.findall(str(value)) if is_sensitive(name)]


def sensitive_keys(conf: Mapping[str, str]) -> list[str]:
    """Conf keys that are credentials, or Java options that carry one."""
    return sorted(k for k, v in conf.items() if is_sensitive(k) or java_option_secrets(k, v))


def java_option_secret_keys(conf: Mapping[str, str]) -> list[str]:
    return sorted(k for k, v in conf.items() if java_option_secrets(k, v))


def _scan(args: Iterable[str]) -> Iterable[tuple[str, str | None]]:
    """Each argument with the secret it holds, if any: the value of a secret-looking
    ``key=value`` conf or ``--flag=value``, or all of the argument after a ``--flag``."""
    hide_next = False
    for arg in args:
        if hide_next:
            hide_next = False
            yield arg, arg
            continue
        key, sep, value = arg.partition("=")
        if sep and (is_sensitive(key) or _SECRET_FLAG.match(key)):
            yield arg, value
        else:
            hide_next = not sep and bool(_SECRET_FLAG.match(arg))
            yield arg, None


def redacted(args: Iterable[str]) -> list[str]:
    """A command line as it may be logged, secrets (see ``_scan``) shown as ***."""
    return [arg if secret is None else arg[: len(arg) - len(secret)] + MASK for arg, secret in _scan(args)]


def secret_args(args: Iterable[str]) -> list[str]:
    """The secrets ``redacted`` hides."""
    return [secret for _, secret in _scan(args) if secret]


def refuse_secret_args(args: list[str], where: str) -> None:
    """Remote engines pass application_args where their console shows them: refuse secret ones."""
    if secret_args(args):
        refuse(
            redacted(args),
            f"secret values among the job's arguments would be visible in {where}",
            "let the job read the secret at run time (AWS Secrets Manager, Databricks secret scopes), "
            "or run it on the local engine",
            kind="application_args",
        )


def secret_values(
    conf: Mapping[str, str] | None = None, env: Mapping[str, str] | None = None, args: Iterable[str] = ()
) -> list[str]:
    """Every value of a task that is to be masked: secret-looking conf, all env values
    (they are documented as never shown), secret flags' values."""
    values = [str(v) for k, v in (conf or {}).items() if is_sensitive(str(k))]
    values += [secret for k, v in (conf or {}).items() for secret in java_option_secrets(str(k), v)]
    values += [str(v) for v in (env or {}).values()]
    values += secret_args(str(a) for a in args)
    return [v for v in dict.fromkeys(values) if v]


def mask(values: Iterable[str]) -> None:
    """Register values with Airflow's secrets masker, so task logs, rendered fields (the
    Rendered Template view) and the supervisor's log output show *** instead. Airflow's
    own ``[logging] min_length_masked_secret`` applies."""
    try:
        from airflow.sdk.log import mask_secret  # Airflow 3.0 (lazily) .. 3.3
    except ImportError:  # pragma: no cover - an older task SDK layout
        try:
            from airflow.sdk.execution_time.secrets_masker import mask_secret
        except ImportError:
            return  # outside Airflow (a job run by hand): nothing to mask for
    for value in values:
        mask_secret(value)


def redact(value):
    """``value`` (e.g. XCom metrics) with every masked secret replaced by ***."""
    try:
        from airflow.sdk._shared.secrets_masker import redact as airflow_redact  # Airflow 3.1+
    except ImportError:
        try:
            from airflow.sdk.execution_time.secrets_masker import redact as airflow_redact  # Airflow 3.0
        except ImportError:  # pragma: no cover - outside Airflow
            return value
    return _redact_leaves(value, airflow_redact)


def _redact_leaves(value, airflow_redact):
    # leaf by leaf: Airflow's redact also hides whole values under secret-*named* keys, which
    # would hide a job's metric such as "tokens_seen"
    if isinstance(value, str):
        return airflow_redact(value)
    if isinstance(value, dict):
        return {k: _redact_leaves(v, airflow_redact) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redact_leaves(v, airflow_redact) for v in value)
    return value


def refuse(keys: list[str], what: str, fix: str, kind: str = "conf") -> None:
    """Raise the ``SECRET_CONF`` error for credential conf keys (or, ``kind="application_args"``,
    the redacted arguments) an engine cannot pass safely. Never names a value."""
    if not keys:
        return
    from airflow_spark_portable.exceptions import SparkPortableConfigError

    error = SparkPortableConfigError(f"[{SECRET_CONF}] {kind} {keys}: {what}; {fix}")
    error.code = SECRET_CONF  # type: ignore[attr-defined]
    raise error
