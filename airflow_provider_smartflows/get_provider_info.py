"""Provider registry entry (``apache_airflow_provider`` entry point)."""

from __future__ import annotations

import copy
from typing import Any

from airflow_provider_smartflows import __version__

PACKAGE_NAME = "airflow-provider-smartflows"
PACKAGE = "airflow_provider_smartflows"
HOOK_MODULE = f"{PACKAGE}.hooks.smartflows"
ASYNC_HOOK_MODULE = f"{PACKAGE}.hooks.smartflows_async"


#: What Airflow's ProvidersManager reads (a constant: the registry is data, not logic).
PROVIDER_INFO: dict[str, Any] = {
    "package-name": PACKAGE_NAME,
    "name": "Smart Flows",
    "description": (
        "Smart Flows (Invenso / Xpertdoc / Experlogix) document generation: run flows, "
        "wait for them (deferrable), download the generated documents to object storage."
    ),
    "versions": [__version__],
    "integrations": [
        {
            "integration-name": "Smart Flows",
            "external-doc-url": "https://github.com/Invenso/smart-flows-clients",
            "tags": ["service"],
        }
    ],
    "hooks": [
        {
            "integration-name": "Smart Flows",
            "python-modules": [HOOK_MODULE, ASYNC_HOOK_MODULE],
        }
    ],
    "connection-types": [
        {
            "hook-class-name": f"{HOOK_MODULE}.SmartFlowsHook",
            "hook-name": "Smart Flows",
            "connection-type": "smartflows",
            # Airflow >= 3.2 reads these declaratively; older versions call the hook's
            # get_ui_field_behaviour() / get_connection_form_widgets().
            "ui-field-behaviour": {
                "hidden-fields": ["login", "schema"],
                "relabeling": {"host": "Base URL", "password": "API key"},
                "placeholders": {
                    "host": "https://acme.smartflows.xpertdoc.com",
                    "port": "443",
                    "password": "the API key of a Smart Flows user",
                },
            },
            # Airflow >= 3.2 builds the form from "schema" (JSON Schema): a "default" becomes
            # the field's initial value, an "enum" a drop-down, "boolean" a switch. The UI saves
            # every field into the extra, an empty one as null (the hooks read null as unset),
            # so fields with a default start at it instead of null.
            "conn-fields": {
                "verify": {
                    "label": "Verify TLS",
                    "description": (
                        "Check the server's TLS certificate (default on). To trust a private CA, "
                        "leave this on and fill in CA bundle."
                    ),
                    "schema": {"type": ["boolean", "null"], "default": True},
                },
                "ca_bundle": {
                    "label": "CA bundle",
                    "description": (
                        "Path, on the Airflow workers and triggerer, of a PEM file of the CA "
                        "certificates to trust (optional)."
                    ),
                    "schema": {"type": ["string", "null"]},
                },
                "timeout": {
                    "label": "Timeout (seconds)",
                    "description": "Per-request timeout in seconds (default 60).",
                    "schema": {"type": ["number", "null"], "minimum": 0, "default": 60},
                },
                "proxies": {
                    "label": "Proxies",
                    "description": 'JSON such as {"https": "http://proxy:3128"}, or one proxy URL for all.',
                    "schema": {"type": ["string", "object", "null"]},
                },
                "cancel_path": {
                    "label": "Cancel path",
                    "description": (
                        "progress: DELETE /flows/executions/{id}/progress (default); "
                        "execution: DELETE /flows/executions/{id}."
                    ),
                    "schema": {
                        "type": ["string", "null"],
                        "enum": ["progress", "execution"],
                        "default": "progress",
                    },
                },
                "execution_url_template": {
                    "label": "Execution URL template",
                    "description": (
                        "Link shown in the Airflow UI; placeholders {base_url} and {execution_id}."
                    ),
                    "schema": {
                        "type": ["string", "null"],
                        "default": "{base_url}/executions/{execution_id}",
                    },
                },
            },
        }
    ],
    "operators": [
        {
            "integration-name": "Smart Flows",
            "python-modules": [
                f"{PACKAGE}.operators.smartflows",
                f"{PACKAGE}.operators.batch",
                f"{PACKAGE}.operators.callback",
            ],
        }
    ],
    "sensors": [{"integration-name": "Smart Flows", "python-modules": [f"{PACKAGE}.sensors.smartflows"]}],
    "triggers": [
        {
            "integration-name": "Smart Flows",
            "python-modules": [
                f"{PACKAGE}.triggers.smartflows",
                f"{PACKAGE}.triggers.batch",
                f"{PACKAGE}.triggers.hitl",
                f"{PACKAGE}.triggers.events",
            ],
        }
    ],
    "extra-links": [f"{PACKAGE}.links.SmartFlowsExecutionLink"],
    # Read by the async hook's shared sessions (hooks/sessions.py), once per event loop.
    "config": {
        "smartflows": {
            "description": "The async hook's shared HTTP sessions (triggerer side); the size bound of flow outputs.",
            "options": {
                "connection_cache_seconds": {
                    "description": "Seconds a connection lookup is reused by the triggers of one "
                    "triggerer process (0: look it up each time).",
                    "version_added": None,
                    "type": "float",
                    "example": None,
                    "default": "30",
                },
                "max_long_poll_seconds": {
                    "description": "Longest long-poll sent to Smart Flows; set it below the idle "
                    "timeout of a proxy or load balancer that cuts quiet connections.",
                    "version_added": None,
                    "type": "float",
                    "example": None,
                    "default": "3600",
                },
                "max_connections_per_session": {
                    "description": "Connections one shared session may hold (0: the open-files "
                    "limit minus 256).",
                    "version_added": None,
                    "type": "integer",
                    "example": None,
                    "default": "0",
                },
                "max_output_bytes": {
                    "description": "Largest named flow output (its JSON, in bytes) a run task's "
                    "result carries; a larger one is left out with a warning naming it.",
                    "version_added": None,
                    "type": "integer",
                    "example": None,
                    "default": "65536",
                },
                "expiry_warning_seconds": {
                    "description": "A document whose expiration is this close (seconds) is "
                    "downloaded first, with a warning; an expired one fails the download.",
                    "version_added": None,
                    "type": "float",
                    "example": None,
                    "default": "3600",
                },
            },
        }
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider metadata that Airflow's ProvidersManager reads (a deep copy: callers
    may change what they get)."""
    return copy.deepcopy(PROVIDER_INFO)
