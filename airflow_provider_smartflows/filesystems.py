"""The early check that a store's filesystem can be loaded (re-exported by :mod:`.storage`).

Without ``s3fs`` (or ``adlfs``, ``gcsfs``) a download would fail only when it writes, after the flow
ran; the download operator calls :func:`check_filesystem_available` when the DAG is parsed (and
again before its first request), the batch before anything starts.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_smartflows.exceptions import SmartFlowsInputError

#: The extra of this package that installs each scheme's filesystem (and its Airflow provider).
EXTRAS = {
    "s3": "amazon",
    "s3a": "amazon",
    "gs": "gcs",
    "gcs": "gcs",
    "abfs": "azure",
    "abfss": "azure",
    "az": "azure",
}


def check_filesystem_available(uri: object, what: str = "destination") -> None:
    """
    Raise :class:`SmartFlowsInputError` naming the extra to install when the filesystem of ``uri``
    (a URI string or an ``ObjectStoragePath``) cannot be loaded.

    It imports the implementation's module (fsspec's registry): no request, no connection lookup,
    so it runs before anything starts. None, local paths and schemes fsspec does not know pass (the
    store reports those itself).
    """
    import fsspec

    if isinstance(uri, ObjectStoragePath):
        protocols = uri.protocol  # never .fs: that is what may fail
        protocol = protocols if isinstance(protocols, str) else protocols[0]
    elif isinstance(uri, str):
        protocol = urlsplit(uri.strip()).scheme.lower()
    else:
        return
    if protocol in ("", "file", "local"):
        return
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:  # not a protocol fsspec knows
        return
    except ImportError as err:
        extra = EXTRAS.get(protocol)
        fix = (
            f"run pip install 'airflow-provider-smartflows[{extra}]'"
            if extra
            else "install its fsspec implementation"
        )
        raise SmartFlowsInputError(
            f"The {what} {uri} is on {protocol}://, whose filesystem cannot be loaded ({err}): {fix} "
            "where the DAG is parsed and where it runs. Nothing was started."
        ) from None
